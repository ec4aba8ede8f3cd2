import { RateLimiterCompatibleAbstract, RateLimiterRedis, RateLimiterRes } from "rate-limiter-flexible";
import type { Redis } from "ioredis";
import type { Logger } from "../common/logger.js";

/**
 * Per-client rate limits: a token bucket (GCRA, the "generic cell rate algorithm").
 *
 * Each client has a bucket of `burst` tokens that refills continuously at `points / duration`
 * tokens per second; a request takes one token or is rejected. With the defaults (60 per 60 s,
 * burst 10): 10 requests at once pass and the 11th is refused; after that one request per second
 * passes, so any window of T seconds admits at most 10 + T requests and the sustained rate is
 * exactly 60 a minute. A refused request takes nothing.
 *
 * The bucket is stored as one number, the "theoretical arrival time" TAT: the instant at which the
 * bucket would be full again. With I = duration/points seconds per token and τ = burst·I (the time
 * an empty bucket takes to fill): a request at `now` passes when max(TAT, now) + I − τ ≤ now, and
 * then TAT := max(TAT, now) + I. Tokens left = (τ − (TAT − now)) / I.
 *
 * rate-limiter-flexible stores it: RateLimiterRedis with our Lua script (atomic, Redis's clock, so
 * router replicas sharing one Redis share each client's bucket), and an in-memory limiter with the
 * same algorithm, used alone without Redis and as RateLimiterRedis's `insuranceLimiter` while
 * Redis is unreachable (each replica then limits on its own; Redis takes over again as soon as it
 * answers a PING: see RateLimiter's circuit breaker).
 *
 * In rate-limiter-flexible's terms: `points` = burst, `duration` = τ; the script answers
 * [tokens in use after this request (more than `points` when refused), ms until the bucket is full
 * (refused: ms until the request would pass)].
 */
export const GCRA_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local n = tonumber(ARGV[1])
local burst = tonumber(ARGV[3])
local tau = tonumber(ARGV[4]) * 1000
local interval = tau / burst
local tat = tonumber(redis.call('GET', KEYS[1]))
if (not tat) or tat < now then tat = now end
local new_tat = tat + n * interval
local allow_at = new_tat - tau
if allow_at > now then
  return {burst + n, math.ceil(allow_at - now)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.max(1, math.ceil(new_tat - now)))
return {math.ceil((new_tat - now) / interval - 1e-6), math.ceil(new_tat - now)}
`;

export interface RateLimitSettings {
  /** Sustained requests per `duration` seconds (the refill rate). */
  points: number;
  duration: number;
  /** Bucket capacity: requests allowed at once. */
  burst: number;
  keyPrefix?: string;
}

/** The outcome of one check, with what the RateLimit-* headers report. */
export interface RateLimitDecision {
  allowed: boolean;
  /** Bucket capacity. */
  limit: number;
  remaining: number;
  /** Allowed: seconds until the bucket is full again. Refused: seconds until a request would pass. */
  resetSeconds: number;
  /** Where the decision was made. */
  store: "redis" | "memory";
  /** The settings it was made with (the router's, or a key's own). */
  settings: RateLimitSettings;
}

/** One bucket shape (capacity and fill time): its Redis limiter and its in-memory stand-in. */
interface BucketStore {
  memory: TokenBucketMemory;
  redis: RateLimiterRedis | undefined;
}

/**
 * The same GCRA in this process's memory, shaped as a rate-limiter-flexible limiter so that it
 * can be RateLimiterRedis's insuranceLimiter. Only `consume`, `get` and `delete` are used.
 */
export class TokenBucketMemory extends RateLimiterCompatibleAbstract {
  private readonly tats = new Map<string, number>();
  private operations = 0;
  /** Bucket capacity. */
  readonly points: number;
  /** Seconds an empty bucket takes to fill. */
  readonly duration: number;
  // rate-limiter-flexible's limiter interface (own fields shadow the base class's throwing
  // accessors); blocking and "execute evenly" are not used.
  override readonly keyPrefix: string;
  override blockDuration = 0;
  override execEvenly = false;

  constructor(options: { points: number; duration: number; keyPrefix?: string }) {
    super();
    this.points = options.points;
    this.duration = options.duration;
    this.keyPrefix = options.keyPrefix ?? "corral:rl";
  }

  private getKey(key: string): string {
    return `${this.keyPrefix}:${key}`;
  }

  /** `options` is the object given to RateLimiterRedis.consume, handed on when it falls back here. */
  override consume(key: string | number, pointsToConsume = 1, options: CheckOptions = {}): Promise<RateLimiterRes> {
    options.answeredInMemory = true;
    const rlKey = this.getKey(String(key));
    const now = Date.now();
    if (++this.operations % 1000 === 0) this.sweep(now);
    const tau = this.duration * 1000;
    const interval = tau / this.points;
    const tat = Math.max(this.tats.get(rlKey) ?? now, now);
    const newTat = tat + pointsToConsume * interval;
    const allowAt = newTat - tau;
    if (allowAt > now) {
      return Promise.reject(new RateLimiterRes(0, Math.ceil(allowAt - now), this.points + pointsToConsume, false));
    }
    this.tats.set(rlKey, newTat);
    const used = Math.ceil((newTat - now) / interval - 1e-6);
    return Promise.resolve(new RateLimiterRes(Math.max(this.points - used, 0), Math.ceil(newTat - now), used, tat === now));
  }

  override get(key: string | number): Promise<RateLimiterRes | null> {
    const now = Date.now();
    const tat = this.tats.get(this.getKey(String(key)));
    if (tat === undefined || tat <= now) return Promise.resolve(null);
    const used = Math.ceil((tat - now) / ((this.duration * 1000) / this.points) - 1e-6);
    return Promise.resolve(new RateLimiterRes(Math.max(this.points - used, 0), Math.ceil(tat - now), used, false));
  }

  override delete(key: string | number): Promise<boolean> {
    return Promise.resolve(this.tats.delete(this.getKey(String(key))));
  }

  /** Forgets buckets that are full again (they hold no information). */
  private sweep(now: number): void {
    for (const [key, tat] of this.tats) if (tat <= now) this.tats.delete(key);
  }
}

interface CheckOptions {
  [key: string]: unknown;
  answeredInMemory?: boolean;
}

export interface RateLimiterHooks {
  logger: Logger;
  /** Counts checks answered in memory because Redis was unreachable. */
  onFallback?: () => void;
  /** How often Redis is probed with PING (default 1000 ms). */
  probeIntervalMs?: number;
  /** How long a PING may take before it counts as unanswered (default 500 ms). */
  probeTimeoutMs?: number;
  /** Unanswered PINGs in a row that open the breaker (default 2; one failed check opens it at once). */
  probeFailuresToTrip?: number;
}

/**
 * Checks one request of one client; `check` never throws.
 *
 * With Redis, a circuit breaker decides where checks go. Closed: to Redis (RateLimiterRedis, with
 * the in-memory limiter as its insuranceLimiter for a check that fails). Open: straight to memory,
 * without touching Redis, so that a Redis that hangs (the connection stays up, commands time out)
 * costs the command timeout once rather than on every request. One failed check (it has already
 * paid the timeout) or two unanswered PINGs in a row (one slow PING on a busy machine is not an
 * outage) open it; a PING answered closes it. Redis gets a PING every `probeIntervalMs` (and at
 * once on each reconnection), so a hang is seen at the first check that times out (or within
 * about 2.5 s without traffic) and a recovery within about a second; `mode` (what /health and
 * corral_router_ratelimit_redis_up report) follows whether Redis answers, not only whether the
 * connection is up.
 */
export class RateLimiter {
  /** By bucket shape: the router's settings, and each distinct shape keys ask for. */
  private readonly stores = new Map<string, BucketStore>();
  /** The breaker: open while Redis is not answering (checks are then kept in memory). */
  private open = false;
  private probing = false;
  private probeFailures = 0;
  private probeTimer: NodeJS.Timeout | undefined;
  private readonly probeTimeoutMs: number;

  constructor(
    readonly settings: RateLimitSettings,
    private readonly redis: Redis | undefined,
    private readonly hooks: RateLimiterHooks,
  ) {
    this.probeTimeoutMs = hooks.probeTimeoutMs ?? 500;
    if (redis) {
      // Not reachable at start-up (run() has said so): memory until a PING is answered, quietly.
      this.open = redis.status !== "ready";
      redis.on("ready", () => void this.probe());
      redis.once("end", () => this.close());
      this.probeTimer = setInterval(() => void this.probe(), hooks.probeIntervalMs ?? 1000);
      this.probeTimer.unref();
    }
  }

  /** `redis`, `memory` (no Redis configured) or `memory-fallback` (Redis not answering). */
  get mode(): "redis" | "memory" | "memory-fallback" {
    if (!this.redis) return "memory";
    return this.open || this.redis.status !== "ready" ? "memory-fallback" : "redis";
  }

  get limit(): number {
    return this.settings.burst;
  }

  /** True while checks go to Redis (shared by the replicas): other shared counters follow the same breaker. */
  get redisUp(): boolean {
    return this.mode === "redis";
  }

  /** The stores of one bucket shape, made on first use (keys with their own rate share them by shape). */
  private store(settings: RateLimitSettings): BucketStore {
    const tau = (settings.burst * settings.duration) / settings.points;
    const id = `${settings.burst}/${tau}`;
    let store = this.stores.get(id);
    if (store) return store;
    // The router's own shape keeps its historical key prefix; other shapes get theirs, so that a
    // key whose rate changes starts a fresh bucket rather than reading one of another shape.
    const keyPrefix = (settings.keyPrefix ?? "corral:rl") + (this.stores.size === 0 ? "" : `:${id}`);
    const memory = new TokenBucketMemory({ points: settings.burst, duration: tau, keyPrefix });
    const redisLimiter = this.redis
      ? new RateLimiterRedis({
          storeClient: this.redis,
          points: settings.burst,
          duration: tau,
          keyPrefix,
          customIncrTtlLuaScript: GCRA_LUA,
          // Fail over to memory at once when the connection is down instead of queueing commands.
          rejectIfRedisNotReady: true,
          insuranceLimiter: memory,
        })
      : undefined;
    store = { memory, redis: redisLimiter };
    this.stores.set(id, store);
    return store;
  }

  /** One request of `key`, with the router's settings or the key's own. */
  async check(key: string, settings: RateLimitSettings = this.settings): Promise<RateLimitDecision> {
    const { memory, redis: redisLimiter } = this.store(settings);
    const limiter = redisLimiter && !this.open ? redisLimiter : memory;
    const options: CheckOptions = {};
    let result: RateLimiterRes;
    let allowed = true;
    try {
      result = await limiter.consume(key, 1, options);
    } catch (rejection) {
      if (!(rejection instanceof RateLimiterRes)) {
        // Redis failed and so did the insurance (cannot happen with the memory limiter): let it through.
        this.hooks.logger.error({ err: rejection }, "rate limit check failed; request allowed");
        return { allowed: true, limit: settings.burst, remaining: settings.burst, resetSeconds: 0, store: "memory", settings };
      }
      result = rejection;
      allowed = false;
    }
    const store = redisLimiter && !options.answeredInMemory ? "redis" : "memory";
    if (redisLimiter && options.answeredInMemory) {
      this.hooks.onFallback?.();
      if (limiter === redisLimiter) this.trip({ redisStatus: this.redis?.status }, "a rate-limit check failed");
    }
    return {
      allowed,
      limit: settings.burst,
      remaining: allowed ? result.remainingPoints : 0,
      resetSeconds: Math.max(0, Math.ceil(result.msBeforeNext / 1000)),
      store,
      settings,
    };
  }

  /** Stops probing Redis (also done when the Redis connection is closed for good). */
  close(): void {
    clearInterval(this.probeTimer);
    this.probeTimer = undefined;
  }

  private trip(details: Record<string, unknown>, reason: string): void {
    if (this.open || !this.probeTimer) return;
    this.open = true;
    this.hooks.logger.warn({ ...details, reason }, "Redis is unreachable: rate limits are kept in memory until it answers");
  }

  /** One PING at a time; its answer closes the breaker, its failure or silence opens it. */
  private async probe(): Promise<void> {
    const redis = this.redis;
    if (!redis || this.probing || !this.probeTimer) return;
    this.probing = true;
    let timer: NodeJS.Timeout | undefined;
    try {
      const ping = redis.ping();
      ping.catch(() => {}); // it may fail after the timeout below has already decided
      const timeout = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer to PING within ${this.probeTimeoutMs} ms`)), this.probeTimeoutMs);
      });
      await Promise.race([ping, timeout]);
      this.probeFailures = 0;
      if (this.open && this.probeTimer) {
        this.open = false;
        this.hooks.logger.info("Redis is back: rate limits are shared again");
      }
    } catch (error) {
      if (++this.probeFailures >= (this.hooks.probeFailuresToTrip ?? 2)) this.trip({ redisStatus: redis.status }, (error as Error).message);
    } finally {
      clearTimeout(timer);
      this.probing = false;
    }
  }

  /** The `RateLimit-*` headers (IETF draft 6 names) and, when refused, `Retry-After`. */
  headers(decision: RateLimitDecision): Record<string, string> {
    const { burst, duration, points } = decision.settings;
    const window = Math.round((burst * duration) / points);
    const headers: Record<string, string> = {
      "ratelimit-limit": String(decision.limit),
      "ratelimit-remaining": String(decision.remaining),
      "ratelimit-reset": String(decision.resetSeconds),
      "ratelimit-policy": `${decision.limit};w=${window}`,
    };
    if (!decision.allowed) headers["retry-after"] = String(Math.max(1, decision.resetSeconds));
    return headers;
  }
}
