import type { Backend, Endpoint } from "./backends/types.js";

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

/**
 * Chooses the endpoint for each request, the one place that does: from the backend's ready
 * endpoints, leaving out the ones that failed a moment ago while others remain, the one with the
 * fewest requests in flight (ties round-robin); when none is ready it starts the model and waits.
 */
export class Balancer {
  /** Endpoint URL -> requests in flight through a lease. */
  private readonly inFlight = new Map<string, number>();
  /** Endpoint id -> until when (ms since the epoch) it is left out. */
  private readonly suspects = new Map<string, number>();
  private roundRobin = 0;

  constructor(private readonly backend: Backend) {
    // A backend that stops runtimes to make room asks how busy each is.
    backend.trackInFlight?.((endpoint) => this.inFlightTo(endpoint));
  }

  /** Requests in flight to an endpoint (for /system/info and tests). */
  inFlightTo(endpoint: Endpoint): number {
    return this.inFlight.get(endpoint.url) ?? 0;
  }

  /**
   * A lease on a ready endpoint now, or undefined when the model has none. `avoid` (the endpoint
   * a retry failed on) is taken only when nothing else is ready: a single runtime is tried again,
   * on a fresh connection.
   */
  tryAcquire(modelId: string, avoid?: Endpoint): Lease | undefined {
    const endpoint = this.pick(this.backend.readyEndpoints(modelId), avoid);
    return endpoint ? this.lease(endpoint) : undefined;
  }

  /**
   * A lease on a ready endpoint, starting the model and waiting for it when none is ready.
   * Rejects like `Backend.ensureReady` (ModelStartError, or `signal.reason` once it aborts), or
   * with NoEndpointError when the model was ready and is not any more.
   */
  async acquire(modelId: string, signal: AbortSignal): Promise<Lease> {
    const now = this.tryAcquire(modelId);
    if (now) return now;
    await this.backend.ensureReady(modelId, signal);
    const later = this.tryAcquire(modelId);
    if (!later) throw new NoEndpointError(modelId);
    return later;
  }

  /** A request failed on this endpoint before its answer began: others take the next requests. */
  reportFailure(modelId: string, endpoint: Endpoint, error: Error): void {
    this.suspects.set(endpoint.id, Date.now() + SUSPECT_MS);
    this.backend.reportFailure(modelId, endpoint, error);
  }

  private pick(ready: readonly Endpoint[], avoid: Endpoint | undefined): Endpoint | undefined {
    if (ready.length <= 1) return ready[0];
    const now = Date.now();
    const usable = (endpoint: Endpoint) => endpoint.id !== avoid?.id && !this.isSuspect(endpoint, now);
    // Leaving everything out would refuse a request some runtime may still answer.
    const candidates = ready.some(usable) ? ready.filter(usable) : ready;
    if (candidates.length === 1) return candidates[0];
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

  private lease(endpoint: Endpoint): Lease {
    const key = endpoint.url;
    this.inFlight.set(key, (this.inFlight.get(key) ?? 0) + 1);
    let released = false;
    return {
      endpoint,
      release: () => {
        if (released) return;
        released = true;
        const left = (this.inFlight.get(key) ?? 1) - 1;
        if (left > 0) this.inFlight.set(key, left);
        else this.inFlight.delete(key);
      },
    };
  }
}
