import type { Backend, Endpoint } from "./backends/types.js";
import type { RoutingStrategy } from "../common/routing.js";
import { HashRing } from "./prefix-ring.js";

/**
 * One request's hold on an endpoint: counted in flight until `release()` (idempotent), so the
 * next pick sees it and a backend making room stops only idle runtimes.
 */
export interface Lease {
  readonly endpoint: Endpoint;
  release(): void;
}

/** Nothing serves the model although the backend said it was ready (it went away meanwhile). */
export class NoEndpointError extends Error {
  constructor(readonly modelId: string) {
    super(`model ${modelId} has no ready endpoint; try again shortly`);
    this.name = "NoEndpointError";
  }
}

/**
 * An endpoint that just failed a request (refused, reset before answering) is left out for this
 * long while its model has others: long enough for the backend to notice a dead runtime, short
 * enough that a runtime that only dropped one keep-alive connection is back in rotation at once.
 */
export const SUSPECT_MS = 2000;

/** What a 503 for a model that is starting, or has no runtime for a moment, says to wait (Retry-After). */
export const RETRY_AFTER_SECONDS = 5;


/** KubeAI's and the paper's usual bound: no endpoint above 1.25 times the average load. */
export const DEFAULT_LOAD_FACTOR = 1.25;

export interface BalancerOptions {
  /** The router's strategy (common/routing.ts); a model's own (Backend.routingOf) wins. */
  strategy?: RoutingStrategy;
  /** With `prefix`: the most an endpoint may carry, as a multiple of the model's average load (> 1). */
  loadFactor?: number;
  /** Told of each prefix pick: on the key's own endpoint (`hit`), or on a later one because it was full (`spill`). */
  onPrefixPick?: (outcome: "hit" | "spill") => void;
}

/** Which endpoint a request wants, besides the model. */
export interface PickHints {
  /** Taken only when nothing else is ready (a retry after this endpoint failed). */
  avoid?: Endpoint;
  /** The request's routing key (prefix routing): a ring position from routing-key.ts. */
  key?: number;
}

/**
 * Chooses the endpoint for each request, the one place that does: from the backend's ready
 * endpoints, leaving out the ones that failed a moment ago while others remain, by the routing
 * strategy; when none is ready it starts the model and waits. Owns the in-flight counts.
 */
export class Balancer {
  /** Endpoint URL -> requests in flight through a lease. */
  private readonly inFlight = new Map<string, number>();
  /** Model -> requests in flight to all its endpoints (the average load prefix routing bounds). */
  private readonly modelInFlight = new Map<string, number>();
  /** Endpoint id -> until when (ms since the epoch) it is left out. */
  private readonly suspects = new Map<string, number>();
  /** Model -> the hash ring of its ready endpoints, rebuilt when they change. */
  private readonly rings = new Map<string, HashRing>();
  private roundRobin = 0;
  readonly strategy: RoutingStrategy;
  private readonly loadFactor: number;

  constructor(
    private readonly backend: Backend,
    private readonly options: BalancerOptions = {},
  ) {
    this.strategy = options.strategy ?? "prefix";
    this.loadFactor = options.loadFactor ?? DEFAULT_LOAD_FACTOR;
    if (!(this.loadFactor > 1)) throw new RangeError(`loadFactor must be greater than 1, got ${this.loadFactor}`);
    // A backend that stops runtimes to make room asks how busy each is.
    backend.trackInFlight?.((endpoint) => this.inFlightTo(endpoint));
  }

  /** Requests in flight to an endpoint (for /system/info and tests). */
  inFlightTo(endpoint: Endpoint): number {
    return this.inFlight.get(endpoint.url) ?? 0;
  }

  /**
   * A lease on a ready endpoint now, or undefined when the model has none. `hints.avoid` (the
   * endpoint a retry failed on) is taken only when nothing else is ready: a single runtime is
   * tried again, on a fresh connection.
   */
  tryAcquire(modelId: string, hints: PickHints = {}): Lease | undefined {
    const endpoint = this.pick(modelId, this.backend.readyEndpoints(modelId), hints);
    return endpoint ? this.lease(modelId, endpoint) : undefined;
  }

  /**
   * A lease on a ready endpoint, starting the model and waiting for it when none is ready.
   * Rejects like `Backend.ensureReady` (ModelStartError, or `signal.reason` once it aborts), or
   * with NoEndpointError when the model was ready and is not any more.
   */
  async acquire(modelId: string, signal: AbortSignal, hints: PickHints = {}): Promise<Lease> {
    const now = this.tryAcquire(modelId, hints);
    if (now) return now;
    await this.backend.ensureReady(modelId, signal);
    const later = this.tryAcquire(modelId, hints);
    if (!later) throw new NoEndpointError(modelId);
    return later;
  }

  /** A request failed on this endpoint before its answer began: others take the next requests. */
  reportFailure(modelId: string, endpoint: Endpoint, error: Error): void {
    this.suspects.set(endpoint.id, Date.now() + SUSPECT_MS);
    this.backend.reportFailure(modelId, endpoint, error);
  }

  private pick(modelId: string, ready: readonly Endpoint[], hints: PickHints): Endpoint | undefined {
    if (ready.length <= 1) return ready[0];
    const { avoid } = hints;
    let candidates = ready;
    // Usually nothing is left out: then no per-request filtering of a large endpoint list.
    if (avoid !== undefined || this.suspects.size > 0) {
      const now = Date.now();
      const usable = (endpoint: Endpoint) => endpoint.id !== avoid?.id && !this.isSuspect(endpoint, now);
      // Leaving everything out would refuse a request some runtime may still answer.
      if (ready.some(usable)) candidates = ready.filter(usable);
    }
    if (candidates.length === 1) return candidates[0];
    if (hints.key !== undefined && (this.backend.routingOf?.(modelId) ?? this.strategy) === "prefix") {
      const picked = this.pickByPrefix(modelId, ready, candidates, hints.key);
      if (picked) return picked;
    }
    return this.leastLoaded(candidates);
  }

  /** The key's endpoint on the model's ring, or the next one clockwise whose load is within the bound. */
  private pickByPrefix(modelId: string, ready: readonly Endpoint[], candidates: readonly Endpoint[], key: number): Endpoint | undefined {
    let ring = this.rings.get(modelId);
    // The ring covers every ready endpoint, usable or not, so a brief suspicion moves no keys.
    if (!ring?.matches(ready)) this.rings.set(modelId, (ring = new HashRing(ready)));
    const bound = Math.ceil((this.loadFactor * ((this.modelInFlight.get(modelId) ?? 0) + 1)) / candidates.length);
    const allowed = candidates.length === ready.length ? undefined : new Set(candidates);
    let first = true;
    let spilled = false;
    const picked = ring.pick(key, (endpoint) => {
      if (allowed && !allowed.has(endpoint)) return false;
      const fits = this.inFlightTo(endpoint) + 1 <= bound;
      if (!fits && first) spilled = true;
      first = false;
      return fits;
    });
    if (picked) this.options.onPrefixPick?.(spilled ? "spill" : "hit");
    return picked;
  }

  private leastLoaded(candidates: readonly Endpoint[]): Endpoint | undefined {
    const start = this.roundRobin++ % candidates.length;
    let best: Endpoint | undefined;
    let bestCount = Infinity;
    for (let i = 0; i < candidates.length; i++) {
      const endpoint = candidates[(start + i) % candidates.length]!;
      const count = this.inFlightTo(endpoint);
      if (count < bestCount) {
        best = endpoint;
        bestCount = count;
      }
    }
    return best;
  }

  private isSuspect(endpoint: Endpoint, now: number): boolean {
    const until = this.suspects.get(endpoint.id);
    if (until === undefined) return false;
    if (until > now) return true;
    this.suspects.delete(endpoint.id);
    return false;
  }

  private lease(modelId: string, endpoint: Endpoint): Lease {
    const key = endpoint.url;
    this.inFlight.set(key, (this.inFlight.get(key) ?? 0) + 1);
    this.modelInFlight.set(modelId, (this.modelInFlight.get(modelId) ?? 0) + 1);
    let released = false;
    return {
      endpoint,
      release: () => {
        if (released) return;
        released = true;
        const left = (this.inFlight.get(key) ?? 1) - 1;
        if (left > 0) this.inFlight.set(key, left);
        else this.inFlight.delete(key);
        const modelLeft = (this.modelInFlight.get(modelId) ?? 1) - 1;
        if (modelLeft > 0) this.modelInFlight.set(modelId, modelLeft);
        else this.modelInFlight.delete(modelId);
      },
    };
  }
}
