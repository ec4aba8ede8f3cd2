import type { Logger } from "../../common/logger.js";
import type { RuntimeArgs } from "../../common/runtime-command.js";
import { catalogEntry, type Catalog } from "../catalog.js";
import { LocalModel } from "./local-model.js";
import { ModelsBusyError, ModelStartError, type Backend, type CatalogEntry, type Endpoint, type ModelStatus } from "./types.js";

export type RuntimeFlags = Pick<RuntimeArgs, "threads" | "parallel" | "contextSize" | "modelDir"> &
  Required<Pick<RuntimeArgs, "logLevel" | "bodyLimitBytes" | "maxBatchPrompts" | "drainSeconds">>;

export interface LocalTiming {
  /** Poll interval while a runtime is starting. */
  startingProbeMs: number;
  /** Poll interval once it is ready. */
  readyProbeMs: number;
  /** The first restart's delay after a crash; each crash in a row doubles it. */
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** Consecutive starts that end before the runtime is ready, after which the model is `failed`. */
  maxStartFailures: number;
  /** How long a stopped runtime may drain before SIGKILL. */
  stopTimeoutMs: number;
}

export const DEFAULT_TIMING: LocalTiming = {
  // Often while starting, so that a request waiting for the model goes on soon after it is ready.
  startingProbeMs: 200,
  // Rarely once ready: the exit handler and the proxy's failure reports see crashes first.
  readyProbeMs: 2000,
  // A quick first restart (a one-off crash), then doubling up to a cap for a runtime that keeps crashing.
  backoffBaseMs: 500,
  backoffMaxMs: 30_000,
  // A few tries: one crash in the middle of a restart is not the end of a model that served before.
  maxStartFailures: 3,
  // Longer than the default --drain-seconds (30) the router gives its runtimes, so that a drain is not cut short.
  stopTimeoutMs: 35_000,
};

export interface LocalBackendOptions {
  catalog: Catalog;
  /** Started by `start()` as the current model; null for none. */
  initialModel: string | null;
  maxModels: number;
  /** The corral CLI script; children run `node <entry> runtime ...`. */
  runtimeEntry: string;
  runtime: RuntimeFlags;
  logger: Logger;
  /** Where the children's log lines are copied (default: this process's stdout); null drops them. */
  logSink?: NodeJS.WritableStream | null;
  timing?: Partial<LocalTiming>;
}

/**
 * The local backend: the catalog file lists the models; each loaded model runs as one
 * `corral runtime` child on a free loopback port. Children that crash come back after a backoff;
 * unload and close stop them, and a child stops itself when the router dies.
 */
export class LocalBackend implements Backend {
  readonly kind = "local";
  private readonly models = new Map<string, LocalModel>();
  private readonly entries: CatalogEntry[];
  private currentId: string | null = null;
  private inFlight: (endpoint: Endpoint) => number = () => 0;
  /** Loads run one at a time: each waits for the previous one to finish. */
  private switchQueue: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly onProcessExit = () => {
    for (const model of this.models.values()) model.killNow();
  };

  constructor(private readonly options: LocalBackendOptions) {
    const timing = { ...DEFAULT_TIMING, ...options.timing };
    for (const spec of options.catalog.models) this.models.set(spec.id, new LocalModel(spec, options, timing, (model) => this.makeRoom(model)));
    this.entries = options.catalog.models.map(catalogEntry);
  }

  async start(): Promise<void> {
    process.on("exit", this.onProcessExit);
    const initial = this.options.initialModel;
    if (initial) {
      this.currentId = initial;
      this.model(initial).ensureStarted();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.models.values()].filter((model) => model.running).map((model) => model.stop("stopped with the router")));
    process.off("exit", this.onProcessExit);
  }

  healthy(): boolean {
    return !this.closed;
  }

  list(): readonly CatalogEntry[] {
    return this.entries;
  }

  lookup(modelId: string): CatalogEntry | undefined {
    return this.models.has(modelId) ? this.entries.find((entry) => entry.model_id === modelId) : undefined;
  }

  current(): string | null {
    return this.currentId;
  }

  status(modelId: string): ModelStatus {
    return this.model(modelId).status();
  }

  readyEndpoints(modelId: string): readonly Endpoint[] {
    const model = this.models.get(modelId);
    if (!model) return [];
    model.lastUsed = Date.now();
    return model.readyEndpoints();
  }

  /** Starts a model for a request; a `failed` one is not retried (its reason at once) until it is loaded again. */
  ensureReady(modelId: string, signal: AbortSignal): Promise<void> {
    const model = this.model(modelId);
    model.lastUsed = Date.now();
    if (model.kind !== "failed") {
      try {
        this.checkRoom(model);
      } catch (error) {
        return Promise.reject(error);
      }
      model.ensureStarted();
    }
    return model.waitReady(signal);
  }

  trackInFlight(inFlight: (endpoint: Endpoint) => number): void {
    this.inFlight = inFlight;
  }

  /**
   * Loads run one at a time. The model becomes the current one only once it is ready: a load
   * that fails leaves the current model current and serving (restarted when it had to make room
   * under --max-models), and the failed model `failed` with its reason.
   */
  async load(modelId: string, signal: AbortSignal): Promise<void> {
    const model = this.model(modelId);
    const previousTurn = this.switchQueue;
    let done!: () => void;
    this.switchQueue = new Promise<void>((resolve) => (done = resolve));
    try {
      await abortable(previousTurn, signal);
      await this.switchTo(model, signal);
    } finally {
      void previousTurn.then(done);
    }
  }

  private async switchTo(model: LocalModel, signal: AbortSignal): Promise<void> {
    if (this.closed) throw new ModelStartError(model.spec.id, "the router is stopping");
    model.lastUsed = Date.now();
    if (this.currentId === model.spec.id && model.kind === "ready") return;
    this.checkRoom(model);
    model.ensureStarted();
    await model.waitReady(signal);
    this.currentId = model.spec.id;
  }

  async unload(modelId: string): Promise<void> {
    const model = this.model(modelId);
    if (this.currentId === modelId) this.currentId = null;
    await model.stop("unloaded");
  }

  /** The process id of a model's runtime child, if one runs (for tests and operators). */
  runtimePid(modelId: string): number | undefined {
    return this.models.get(modelId)?.pid;
  }

  reportFailure(modelId: string, endpoint: Endpoint, error: Error): void {
    this.models.get(modelId)?.probeSoon(endpoint, error);
  }

  private model(modelId: string): LocalModel {
    const model = this.models.get(modelId);
    if (!model) throw new Error(`unknown model ${modelId}`);
    return model;
  }

  /**
   * The runtimes to stop so that `starting` fits in --max-models: idle ones only (no request in
   * flight or waiting), the least recently used first, the current model last. Throws
   * ModelsBusyError when there are not enough idle ones.
   */
  private victims(starting: LocalModel): LocalModel[] {
    const others = [...this.models.values()].filter((model) => model !== starting && model.running);
    const excess = others.length + 1 - this.options.maxModels;
    if (excess <= 0) return [];
    const isCurrent = (model: LocalModel) => model.spec.id === this.currentId;
    const idle = others
      .filter((model) => !model.busy(this.inFlight))
      .sort((a, b) => Number(isCurrent(a)) - Number(isCurrent(b)) || a.lastUsed - b.lastUsed);
    if (idle.length < excess) {
      throw new ModelsBusyError(
        starting.spec.id,
        `model ${starting.spec.id} cannot start now: all loaded models are busy and --max-models ${this.options.maxModels} is reached; try again shortly`,
      );
    }
    return idle.slice(0, excess);
  }

  /** Fails fast (ModelsBusyError) when a model that does not run could not get a runtime's room now. */
  private checkRoom(model: LocalModel): void {
    if (!model.running) this.victims(model);
  }

  /**
   * Stops idle runtimes so that `starting` fits in --max-models. When the current model had to
   * make room and `starting` then cannot start, the current model is started again.
   */
  private async makeRoom(starting: LocalModel): Promise<void> {
    const victims = this.victims(starting);
    if (victims.length === 0) return;
    const current = victims.find((model) => model.spec.id === this.currentId);
    await Promise.all(victims.map((model) => model.stop(`stopped to make room for ${starting.spec.id} (--max-models ${this.options.maxModels})`)));
    if (current) {
      starting.waitReady(new AbortController().signal).catch((error: unknown) => {
        if (!(error instanceof ModelStartError) || starting.kind !== "failed" || this.closed || current.running || this.currentId !== current.spec.id) return;
        this.options.logger.warn({ model: current.spec.id, failed: starting.spec.id }, "the model that took the current model's room could not start; starting the current model again");
        current.ensureStarted();
      });
    }
  }
}

/** Resolves with `promise`, or rejects with the signal's reason when it aborts first. */
function abortable(promise: Promise<void>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      () => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}
