/**
 * What the router asks of the place models run: "which ready endpoints serve model X, and make X
 * ready / not ready". The local backend (`local.ts`) runs `corral runtime` children; the
 * Kubernetes backend (operator issue) reads Model resources and their pods; `static.ts` serves a
 * fixed list of runtimes.
 *
 * The hot path (`readyEndpoints`, `lookup`, `current`) is synchronous: a backend keeps its view
 * up to date in the background (child processes, informers) and answers from memory.
 */

import type { RoutingStrategy } from "../../common/routing.js";

/** One runtime serving one model. */
export interface Endpoint {
  /** Stable and unique among a model's endpoints: a pod name, or `tiny#1` for a local child. */
  readonly id: string;
  /** Base URL of the runtime, without a trailing slash: `http://127.0.0.1:40123`. */
  readonly url: string;
  /**
   * Requests the runtime serves at once (its parallel sequences), when known. The balancer sends
   * it at most this many plus --endpoint-queue and queues the rest fairly by client key; without
   * it the endpoint is never considered full.
   */
  readonly capacity?: number;
}

/**
 * - `not_loaded`: nothing runs. `starting`: a runtime was started and is not answering yet.
 * - `downloading`/`loading`: the runtime is fetching or loading the weights (`progress` tells how far).
 * - `ready`: at least one endpoint accepts requests. `restarting`: a runtime died and comes back after a backoff.
 * - `failed`: it could not start (`message` says why); requests fail at once with that reason until a
 *   load tries again (the local backend; a backend that cannot tell may try again on a request).
 * - `stopping`: being unloaded.
 */
export const MODEL_STATES = ["not_loaded", "starting", "downloading", "loading", "ready", "restarting", "failed", "stopping"] as const;
export type ModelState = (typeof MODEL_STATES)[number];

export interface ModelProgress {
  bytes_done: number;
  bytes_total: number | null;
  /** Share of the current stage done, 0 to 1: the download's when its size is known, the load's while loading; null when unknown. */
  fraction: number | null;
}

/** A download's progress: bytes, and their share when the size is known. */
export function downloadProgress(done: number, total: number | null): ModelProgress {
  return { bytes_done: done, bytes_total: total, fraction: total ? Math.min(1, done / total) : null };
}

export interface ModelStatus {
  model_id: string;
  state: ModelState;
  /** Progress while `downloading` or `loading`, else null. */
  progress: ModelProgress | null;
  /** For people: why the model is not ready (the last error of a failed start), else null. */
  message: string | null;
  /** The endpoints ready now. */
  endpoints: readonly Endpoint[];
}

/** A model one may ask for by id. */
export interface CatalogEntry {
  /** The public id; may contain slashes (`microsoft/phi-2`). */
  model_id: string;
  /** Where the weights come from: a path, `https://...`, `hf:owner/repo/file.gguf`, `builtin:<name>`. */
  source: string;
  description: string | null;
  /** Size of the weights in bytes when known (approximate before the first download), else null. */
  size_bytes: number | null;
}

/** Thrown by `ensureReady`/`load` when a model cannot be started; the router answers 503 with the message. */
export class ModelStartError extends Error {
  constructor(
    readonly modelId: string,
    message: string,
  ) {
    super(message);
    this.name = "ModelStartError";
  }
}

/**
 * Thrown by `ensureReady`/`load` when starting a model needs a runtime's room (--max-models) and
 * every loaded model has requests in flight: nothing is stopped; the router answers 503 with
 * `Retry-After`.
 */
export class ModelsBusyError extends ModelStartError {
  constructor(modelId: string, message: string) {
    super(modelId, message);
    this.name = "ModelsBusyError";
  }
}

export interface Backend {
  /** `local`, `static`, `kubernetes`: shown in /system/info and /health. */
  readonly kind: string;
  /** Begins watching/running (the local backend starts its initial model here, without waiting). */
  start(): Promise<void>;
  /** Stops everything this backend started (local: every runtime child, no orphans). */
  close(): Promise<void>;
  /** True when the backend can answer (Kubernetes: the first list finished). /health is 503 otherwise. */
  healthy(): boolean;

  /** Every model one may ask for, in catalog order. */
  list(): readonly CatalogEntry[];
  /** The entry for a public id; undefined for an unknown id (the router answers 404). */
  lookup(modelId: string): CatalogEntry | undefined;
  /** The current model (requests without `model_id` go to it); null when none. */
  current(): string | null;
  status(modelId: string): ModelStatus;
  /**
   * Tells the balancer when a model's ready endpoints change, so that requests queued for it take
   * a new runtime at once rather than at the next release. Optional: without it the queue drains
   * on releases and new requests only.
   */
  watchEndpoints?(listener: (modelId: string) => void): void;
  /** The model's own routing strategy (a Model's spec.routing), overriding the router's; undefined: the router's. */
  routingOf?(modelId: string): RoutingStrategy | undefined;
  /** The endpoints of a model that accept requests now; empty when none. Never waits. */
  readyEndpoints(modelId: string): readonly Endpoint[];

  /**
   * Makes a model ready (starting it if nothing runs) and resolves once an endpoint is ready.
   * Rejects with ModelStartError when it cannot start, or with `signal.reason` when the signal
   * aborts first (starting goes on in the background).
   */
  ensureReady(modelId: string, signal: AbortSignal): Promise<void>;
  /**
   * Starts a model (again, when it is `failed`) and makes it the current one once it is ready.
   * The local backend runs loads one at a time, and one that fails leaves the current model as it was.
   */
  load(modelId: string, signal: AbortSignal): Promise<void>;
  /** Makes a model not ready (stops its runtimes); when it was the current one there is no current model. */
  unload(modelId: string): Promise<void>;
  /**
   * A request failed on this endpoint before its answer began (refused, reset): a hint to
   * re-check it now. The balancer (router/balancer.ts) leaves it out for a moment meanwhile.
   */
  reportFailure(modelId: string, endpoint: Endpoint, error: Error): void;
  /**
   * Given once by the balancer: how many requests it has in flight to an endpoint. A backend that
   * stops runtimes to make room (local) stops only idle ones.
   */
  trackInFlight?(inFlight: (endpoint: Endpoint) => number): void;
}
