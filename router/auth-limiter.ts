import type { Redis } from "ioredis";
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from "rate-limiter-flexible";

export interface AuthLimitSettings {
  /** Failed attempts a client may make per window (0: no limit). */
  failures: number;
  /** Seconds of the window that starts at a client's first failure. */
  windowSeconds: number;
}

/**
 * Failed authentication per client, against key guessing: a fixed window of `windowSeconds` that
 * starts at a client's first failure. Once a client has failed `failures` times in its window,
 * every request of it is refused (429) until the window ends — with a correct key too, or the
 * guessing would go on. Other clients are unaffected.
 *
 * With the router's Redis the counts are shared by its replicas (rate-limiter-flexible's
 * RateLimiterRedis). `redisUp` is the rate limiter's circuit breaker: while it is open (Redis
 * unreachable or not answering) each replica counts in memory on its own, so that a stalled Redis
 * does not hold up every authenticated request; a Redis error on a check falls back to memory too.
 */
export class AuthFailureLimiter {
  private readonly memory: RateLimiterMemory;
  private readonly redisStore: RateLimiterRedis | undefined;

  constructor(
    readonly settings: AuthLimitSettings,
    redis?: Redis,
    private readonly redisUp: () => boolean = () => true,
  ) {
    const options = { points: settings.failures, duration: settings.windowSeconds, keyPrefix: "corral:authfail" };
    this.memory = new RateLimiterMemory(options);
    this.redisStore = redis ? new RateLimiterRedis({ ...options, storeClient: redis, insuranceLimiter: this.memory }) : undefined;
  }

  private get store(): RateLimiterAbstract {
    return this.redisStore && this.redisUp() ? this.redisStore : this.memory;
  }

  /** Seconds until a locked-out client may try again, or 0 when it may try now. */
  async lockedFor(client: string): Promise<number> {
    const state = await this.store.get(client);
    if (!state || state.consumedPoints < this.settings.failures) return 0;
    return Math.max(1, Math.ceil(state.msBeforeNext / 1000));
  }

  /** Counts one failed attempt of a client. */
  async fail(client: string): Promise<void> {
    try {
      await this.store.consume(client);
    } catch (error) {
      // A refusal only means the client was already at its limit; anything else is a store error.
      if (!(error instanceof RateLimiterRes)) throw error;
    }
  }
}
