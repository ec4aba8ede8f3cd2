import type { Backend, Endpoint } from "./backends/types.js";
import type { RoutingStrategy } from "../common/routing.js";
import { FairQueue, type QueueKey } from "./fair-queue.js";
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

/**
 * Requests an endpoint with a known capacity may hold beyond it before the router queues instead:
 * one waits at each runtime, so a sequence that frees up is refilled at once, without a round trip.
 */
export const DEFAULT_ENDPOINT_QUEUE = 1;

/** The most requests of one client key that may wait for a saturated model, unless the key sets its own. */
export const DEFAULT_QUEUE_PER_KEY = 32;

/** The queue key of requests that name no client. */
export const ANONYMOUS_KEY = "anonymous";

/** The longest Retry-After a refused request is told (the estimate grows with slow requests). */
const MAX_QUEUE_RETRY_AFTER_SECONDS = 60;

/** How much of the mean lease time one lease moves (an exponential moving average). */
const HOLD_SMOOTHING = 0.2;

/**
 * A client key has as many requests waiting for a saturated model as it may: the router answers
 * 429 with Retry-After. Other keys still get their turns.
 */
export class QueueFullError extends Error {
  constructor(
    readonly modelId: string,
    readonly key: string,
    readonly maxQueued: number,
    /** Roughly until the key's next turn: what Retry-After says. */
    readonly retryAfterSeconds: number,
  ) {
    super(`too many requests of key "${key}" waiting for model ${modelId} (${maxQueued}); retry shortly`);
    this.name = "QueueFullError";
  }
}


/** KubeAI's and the paper's usual bound: no endpoint above 1.25 times the average load. */
export const DEFAULT_LOAD_FACTOR = 1.25;

export interface BalancerOptions {
  /** The router's strategy (common/routing.ts); a model's own (Backend.routingOf) wins. */
  strategy?: RoutingStrategy;
  /** With `prefix`: the most an endpoint may carry, as a multiple of the model's average load (> 1). */
  loadFactor?: number;
  /** Told of each prefix pick: on the key's own endpoint (`hit`), or on a later one because it was full (`spill`). */
  onPrefixPick?: (outcome: "hit" | "spill") => void;
  /** Requests an endpoint may hold beyond its capacity before its model counts as saturated (>= 0; default 1). */
  endpointQueue?: number;
  /** The most requests of one client key that may wait for a saturated model, unless the key sets its own (default 32). */
  queuePerKey?: number;
  /** Told how long each queued request waited for its turn, when it gets it (requests served at once are not told). */
  onQueueWait?: (modelId: string, seconds: number) => void;
  /** Told of each request refused because its key's queue was full (QueueFullError). */
  onQueueReject?: (modelId: string) => void;
}

/** Whose request it is, for fair queueing when its model is saturated. */
export interface ClientHint {
  /** The key's name, or `ip:<addr>` without auth. */
  name: string;
  /** Its share of the turns relative to other keys (> 0; 1 by default in the keys file). */
  weight: number;
  /** The most of its requests that may wait; default: the balancer's queuePerKey. */
  maxQueued?: number;
}

/** Which endpoint a request wants, besides the model. */
export interface PickHints {
  /** Taken only when nothing else is ready (a retry after this endpoint failed). */
  avoid?: Endpoint;
  /** The request's routing key (prefix routing): a ring position from routing-key.ts. */
  key?: number;
  /** Whose request it is: a saturated model serves keys in turn, by weight. Absent: one shared key. */
  client?: ClientHint;
  /** Told the request's place in its model's queue (1: next) when it is queued and whenever that changes. */
  onQueued?: (position: number) => void;
}

/** A request waiting in a model's queue. */
interface Waiter {
  readonly hints: PickHints;
  /** performance.now() when queued, for onQueueWait. */
  readonly queuedAt: number;
  /** The position it was last told (0: none yet). */
  position: number;
  grant(lease: Lease): void;
  fail(reason: unknown): void;
}

/** The requests waiting for one saturated model. */
interface ModelQueue {
  readonly queue: FairQueue<Waiter>;
  /** Waiters that want their position: none, and positions are not computed. */
  watchers: number;
}

/**
 * Chooses the endpoint for each request, the one place that does: from the backend's ready
 * endpoints, leaving out the ones that failed a moment ago while others remain, by the routing
 * strategy; when none is ready it starts the model and waits. Owns the in-flight counts.
 *
 * Endpoints that know their capacity (parallel sequences) take at most capacity + endpointQueue
 * requests. When every usable endpoint of a model is that full, the model is saturated: requests
 * wait here in one FIFO per client key, and each freed slot goes to the next key by weighted fair
 * queueing (fair-queue.ts), so one busy key cannot starve the others.
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
  /** Model -> requests waiting for it (only while it has some). */
  private readonly queues = new Map<string, ModelQueue>();
  /** Model -> mean seconds a lease is held, for a refused request's Retry-After. */
  private readonly holdSeconds = new Map<string, number>();
  private roundRobin = 0;
  readonly strategy: RoutingStrategy;
  private readonly loadFactor: number;
  private readonly endpointQueue: number;
  private readonly queuePerKey: number;

  constructor(
    private readonly backend: Backend,
    private readonly options: BalancerOptions = {},
  ) {
    this.strategy = options.strategy ?? "prefix";
    this.loadFactor = options.loadFactor ?? DEFAULT_LOAD_FACTOR;
    if (!(this.loadFactor > 1)) throw new RangeError(`loadFactor must be greater than 1, got ${this.loadFactor}`);
    this.endpointQueue = options.endpointQueue ?? DEFAULT_ENDPOINT_QUEUE;
    if (!(this.endpointQueue >= 0)) throw new RangeError(`endpointQueue must be at least 0, got ${this.endpointQueue}`);
    this.queuePerKey = options.queuePerKey ?? DEFAULT_QUEUE_PER_KEY;
    if (!(this.queuePerKey >= 0)) throw new RangeError(`queuePerKey must be at least 0, got ${this.queuePerKey}`);
    // A backend that stops runtimes to make room asks how busy each is.
    backend.trackInFlight?.((endpoint) => this.inFlightTo(endpoint));
    backend.watchEndpoints?.((modelId) => this.endpointsChanged(modelId));
  }

  /** How this model's endpoints are chosen: its own strategy (a Model's spec.routing), else the router's. */
  strategyFor(modelId: string): RoutingStrategy {
    return this.backend.routingOf?.(modelId) ?? this.strategy;
  }

  /** Requests in flight to an endpoint (for /system/info and tests). */
  inFlightTo(endpoint: Endpoint): number {
    return this.inFlight.get(endpoint.url) ?? 0;
  }

  /** Requests waiting for a model's endpoints (for /system/info and tests). */
  queuedFor(modelId: string): number {
    return this.queues.get(modelId)?.queue.size ?? 0;
  }

  /**
   * A lease on a ready endpoint now, or undefined when the model has none, is saturated, or has
   * requests waiting (nobody jumps the queue). `hints.avoid` (the endpoint a retry failed on) is
   * taken only when nothing else is ready: a single runtime is tried again, on a fresh
   * connection. A retry had its turn already: it is not held back by saturation.
   */
  tryAcquire(modelId: string, hints: PickHints = {}): Lease | undefined {
    const ready = this.backend.readyEndpoints(modelId);
    const retry = hints.avoid !== undefined;
    if (!retry && this.queues.has(modelId)) {
      this.drain(modelId);
      if (this.queues.has(modelId)) return undefined;
    }
    const candidates = this.usable(ready, hints.avoid);
    const open = this.withRoom(candidates);
    if (open.length === 0 && !retry) return undefined;
    const endpoint = this.pick(modelId, ready, open.length > 0 ? open : candidates, hints.key);
    return endpoint ? this.lease(modelId, endpoint) : undefined;
  }

  /**
   * A lease on a ready endpoint, starting the model and waiting for it when none is ready, or
   * waiting for a turn (fair among client keys) while it is saturated. Rejects like
   * `Backend.ensureReady` (ModelStartError, or `signal.reason` once it aborts), with
   * NoEndpointError when the model was ready and is not any more (also while queued), or with
   * QueueFullError when the client's key has as many requests waiting as it may.
   */
  async acquire(modelId: string, signal: AbortSignal, hints: PickHints = {}): Promise<Lease> {
    const now = this.tryAcquire(modelId, hints);
    if (now) return now;
    if (this.backend.readyEndpoints(modelId).length === 0) {
      await this.backend.ensureReady(modelId, signal);
      const later = this.tryAcquire(modelId, hints);
      if (later) return later;
      if (this.backend.readyEndpoints(modelId).length === 0) throw new NoEndpointError(modelId);
    }
    return this.enqueue(modelId, signal, hints);
  }

  /**
   * A model's ready endpoints changed (a runtime became ready: scale-out): its waiting requests
   * take the room at once. Without a model id, every model with waiting requests is re-checked.
   */
  endpointsChanged(modelId?: string): void {
    if (modelId !== undefined) this.drain(modelId);
    else for (const id of [...this.queues.keys()]) this.drain(id);
  }

  /** A request failed on this endpoint before its answer began: others take the next requests. */
  reportFailure(modelId: string, endpoint: Endpoint, error: Error): void {
    this.suspects.set(endpoint.id, Date.now() + SUSPECT_MS);
    this.backend.reportFailure(modelId, endpoint, error);
  }

  /** The ready endpoints but the avoided and suspect ones, unless that leaves none. */
  private usable(ready: readonly Endpoint[], avoid: Endpoint | undefined): readonly Endpoint[] {
    // Usually nothing is left out: then no per-request filtering of a large endpoint list.
    if (ready.length <= 1 || (avoid === undefined && this.suspects.size === 0)) return ready;
    const now = Date.now();
    const isUsable = (endpoint: Endpoint) => endpoint.id !== avoid?.id && !this.isSuspect(endpoint, now);
    // Leaving everything out would refuse a request some runtime may still answer.
    return ready.some(isUsable) ? ready.filter(isUsable) : ready;
  }

  /** The endpoints that may take one more request: all but those at capacity + endpointQueue. */
  private withRoom(candidates: readonly Endpoint[]): readonly Endpoint[] {
    return candidates.every((endpoint) => this.hasRoom(endpoint)) ? candidates : candidates.filter((endpoint) => this.hasRoom(endpoint));
  }

  /** An endpoint without a known capacity always has room (the runtime queues, as before the router did). */
  private hasRoom(endpoint: Endpoint): boolean {
    return endpoint.capacity === undefined || this.inFlightTo(endpoint) < endpoint.capacity + this.endpointQueue;
  }

  /** One of `candidates` (a non-empty subset of `ready`) by the model's strategy. */
  private pick(modelId: string, ready: readonly Endpoint[], candidates: readonly Endpoint[], key: number | undefined): Endpoint | undefined {
    if (candidates.length <= 1) return candidates[0];
    if (key !== undefined && this.strategyFor(modelId) === "prefix") {
      const picked = this.pickByPrefix(modelId, ready, candidates, key);
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
    const since = performance.now();
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
        this.recordHold(modelId, (performance.now() - since) / 1000);
        // The freed slot goes to the next waiting request, by key.
        this.drain(modelId);
      },
    };
  }

  private recordHold(modelId: string, seconds: number): void {
    const mean = this.holdSeconds.get(modelId);
    this.holdSeconds.set(modelId, mean === undefined ? seconds : mean + HOLD_SMOOTHING * (seconds - mean));
  }

  // Fair queueing ---------------------------------------------------------------------------------

  /** Holds a request of a saturated model until a slot is its key's turn (fair-queue.ts). */
  private enqueue(modelId: string, signal: AbortSignal, hints: PickHints): Promise<Lease> {
    if (signal.aborted) return Promise.reject(signal.reason);
    const key = queueKeyOf(hints.client, this.queuePerKey);
    const waiting = this.queues.get(modelId) ?? { queue: new FairQueue<Waiter>(), watchers: 0 };
    return new Promise<Lease>((resolve, reject) => {
      const leave = () => {
        signal.removeEventListener("abort", onAbort);
        if (hints.onQueued) waiting.watchers--;
      };
      const waiter: Waiter = {
        hints,
        queuedAt: performance.now(),
        position: 0,
        grant: (lease) => {
          leave();
          this.options.onQueueWait?.(modelId, (performance.now() - waiter.queuedAt) / 1000);
          resolve(lease);
        },
        fail: (reason) => {
          leave();
          reject(reason);
        },
      };
      const onAbort = () => {
        // Out at once, so that it takes no turn; its key's time is untouched (it was not served).
        if (!waiting.queue.remove(waiter)) return;
        waiter.fail(signal.reason);
        this.settled(modelId, waiting);
      };
      if (!waiting.queue.push(key, waiter)) {
        this.options.onQueueReject?.(modelId);
        reject(new QueueFullError(modelId, key.name, key.maxQueued, this.retryAfterSeconds(modelId, waiting, key.weight)));
        return;
      }
      this.queues.set(modelId, waiting);
      if (hints.onQueued) waiting.watchers++;
      signal.addEventListener("abort", onAbort, { once: true });
      this.tellPositions(waiting);
    });
  }

  /**
   * Hands free slots of a model to its waiting requests, a key's turn at a time, while it has
   * endpoints with room; fails them all when it has no ready endpoint any more.
   */
  private drain(modelId: string): void {
    const waiting = this.queues.get(modelId);
    if (!waiting) return;
    const ready = this.backend.readyEndpoints(modelId);
    if (ready.length === 0) {
      // As a request that finds the model gone after waiting for it: 503, try again.
      for (let waiter = waiting.queue.pop(); waiter; waiter = waiting.queue.pop()) waiter.fail(new NoEndpointError(modelId));
      this.settled(modelId, waiting);
      return;
    }
    let served = false;
    while (waiting.queue.size > 0) {
      const open = this.withRoom(this.usable(ready, undefined));
      if (open.length === 0) break;
      const waiter = waiting.queue.pop()!;
      waiter.grant(this.lease(modelId, this.pick(modelId, ready, open, waiter.hints.key)!));
      served = true;
    }
    if (served || waiting.queue.size === 0) this.settled(modelId, waiting);
  }

  /** After requests left a model's queue: forget it when empty, else tell the rest their new places. */
  private settled(modelId: string, waiting: ModelQueue): void {
    if (waiting.queue.size > 0) this.tellPositions(waiting);
    // A request queued meanwhile (from a callback) may have made a new queue: only this one goes.
    else if (this.queues.get(modelId) === waiting) this.queues.delete(modelId);
  }

  /** Tells each waiting request that asks its place in the queue, when it changed (1: next). */
  private tellPositions(waiting: ModelQueue): void {
    if (waiting.watchers === 0) return;
    const order = waiting.queue.order();
    order.forEach((waiter, index) => {
      const position = index + 1;
      if (!waiter.hints.onQueued || waiter.position === position) return;
      waiter.position = position;
      waiter.hints.onQueued(position);
    });
  }

  /**
   * Roughly until the key's next turn: the model frees a slot every mean lease time / its slots,
   * and the key gets weight / (the waiting keys' weights) of the turns. At least 1 s.
   */
  private retryAfterSeconds(modelId: string, waiting: ModelQueue, weight: number): number {
    const hold = this.holdSeconds.get(modelId);
    if (hold === undefined) return 1;
    let slots = 0;
    for (const endpoint of this.backend.readyEndpoints(modelId)) slots += (endpoint.capacity ?? 0) + this.endpointQueue;
    const turns = Math.max(1, waiting.queue.activeWeight() / weight);
    const seconds = Math.ceil((hold * turns) / Math.max(1, slots));
    return Math.min(MAX_QUEUE_RETRY_AFTER_SECONDS, Math.max(1, seconds));
  }
}

/** The fair queue's view of a request's client: the anonymous key, weight 1, and the default bound unless it says otherwise. */
function queueKeyOf(client: ClientHint | undefined, queuePerKey: number): QueueKey {
  return { name: client?.name ?? ANONYMOUS_KEY, weight: client?.weight ?? 1, maxQueued: client?.maxQueued ?? queuePerKey };
}
