import type { Redis } from "ioredis";
import { DEFAULT_SAMPLING } from "../common/api.js";
import type { Logger } from "../common/logger.js";
import type { Tenant } from "./tenants.js";

/**
 * Token budgets per key: prompt plus completion tokens per minute and per day (fixed windows: the
 * UTC minute and the UTC day), counted from what the runtimes report for each request, streams
 * included (common/usage.ts).
 *
 * A request is admitted while the key's settled tokens plus the tokens reserved by its requests
 * in flight are below the limit; it then reserves an upper bound of what it can use (its prompt's
 * bytes, a few tokens per message, and its max_length), and settles the real figure when it ends.
 * So concurrent requests cannot overspend: the last one admitted can take the key past its limit
 * by at most its own tokens, never more.
 *
 * With Redis the counts live there (two Lua scripts, atomic, shared by every router replica),
 * behind the rate limiter's circuit breaker; while Redis is not answering each replica counts in
 * its own memory, as the rate limits do.
 */

export type BudgetWindow = "minute" | "day";
const WINDOW_MS: Record<BudgetWindow, number> = { minute: 60_000, day: 86_400_000 };
/** How long a window's counts are kept after it began (long enough for /usage and late settles). */
const WINDOW_TTL_SECONDS: Record<BudgetWindow, number> = { minute: 180, day: 2 * 86_400 };
/** New in-memory windows between sweeps of the expired ones. */
const MEMORY_SWEEP_EVERY = 1000;
/** Retry-After when a budget is held by reservations that may settle lower (not spent yet). */
const RESERVED_RETRY_SECONDS = 2;

/**
 * KEYS: the minute and the day counters (hashes: used, pending). ARGV: the minute limit, the day
 * limit (0: none), the reservation, the two TTLs. Answers {0} when admitted, else {window, used}.
 */
const RESERVE_LUA = `
for i = 1, 2 do
  local limit = tonumber(ARGV[i])
  if limit > 0 then
    local used = tonumber(redis.call('HGET', KEYS[i], 'used') or '0')
    local pending = tonumber(redis.call('HGET', KEYS[i], 'pending') or '0')
    if used + pending >= limit then return {i, used} end
  end
end
for i = 1, 2 do
  redis.call('HINCRBY', KEYS[i], 'pending', ARGV[3])
  redis.call('EXPIRE', KEYS[i], ARGV[3 + i])
end
return {0, 0}
`;

/** KEYS: as above. ARGV: the reservation to release, the tokens used, the two TTLs. */
const SETTLE_LUA = `
for i = 1, 2 do
  if tonumber(ARGV[1]) > 0 then redis.call('HINCRBY', KEYS[i], 'pending', -tonumber(ARGV[1])) end
  redis.call('HINCRBY', KEYS[i], 'used', ARGV[2])
  redis.call('EXPIRE', KEYS[i], ARGV[2 + i])
end
return 1
`;

export interface Reservation {
  tenant: string;
  tokens: number;
  keys: [string, string];
  store: "redis" | "memory";
}

export interface BudgetRefusal {
  window: BudgetWindow;
  limit: number;
  used: number;
  retryAfterSeconds: number;
}

export interface WindowUsage {
  used: number;
  reserved: number;
  limit: number | null;
  resetSeconds: number;
}

type RedisWithBudgets = Redis & {
  corralReserve(minute: string, day: string, minuteLimit: number, dayLimit: number, tokens: number, minuteTtl: number, dayTtl: number): Promise<[number, number]>;
  corralSettle(minute: string, day: string, reserved: number, used: number, minuteTtl: number, dayTtl: number): Promise<number>;
};

export class TokenBudgets {
  private readonly memory = new Map<string, { used: number; pending: number; expires: number }>();
  private created = 0;
  private readonly redis: RedisWithBudgets | undefined;

  constructor(
    redis: Redis | undefined,
    /** The rate limiter's breaker: true while Redis answers. */
    private readonly redisUp: () => boolean,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {
    if (redis) {
      redis.defineCommand("corralReserve", { numberOfKeys: 2, lua: RESERVE_LUA });
      redis.defineCommand("corralSettle", { numberOfKeys: 2, lua: SETTLE_LUA });
      this.redis = redis as RedisWithBudgets;
    }
  }

  /** A reservation of `tokens` for the tenant, or why it is refused. */
  async reserve(tenant: Tenant, tokens: number): Promise<Reservation | BudgetRefusal> {
    const at = this.now();
    const keys = windowKeys(tenant.name, at);
    const minuteLimit = tenant.tokensPerMinute ?? 0;
    const dayLimit = tenant.tokensPerDay ?? 0;
    let answer: [number, number] | undefined;
    let store: "redis" | "memory" = "memory";
    if (this.redis && this.redisUp()) {
      try {
        answer = await this.redis.corralReserve(keys[0], keys[1], minuteLimit, dayLimit, tokens, WINDOW_TTL_SECONDS.minute, WINDOW_TTL_SECONDS.day);
        store = "redis";
      } catch (error) {
        this.logger.warn({ reason: (error as Error).message }, "token budget check failed in Redis; counted in memory");
      }
    }
    answer ??= this.reserveInMemory(keys, [minuteLimit, dayLimit], tokens, at);
    const [refusedBy, used] = answer;
    if (refusedBy === 0) return { tenant: tenant.name, tokens, keys, store };
    const window: BudgetWindow = refusedBy === 1 ? "minute" : "day";
    const limit = window === "minute" ? minuteLimit : dayLimit;
    const windowLeft = Math.max(1, Math.ceil((WINDOW_MS[window] - (at % WINDOW_MS[window])) / 1000));
    return { window, limit, used, retryAfterSeconds: used >= limit ? windowLeft : Math.min(windowLeft, RESERVED_RETRY_SECONDS) };
  }

  /** Releases the reservation and counts what the request used (in the windows it was admitted in). */
  async settle(reservation: Reservation, used: number): Promise<void> {
    const { keys, tokens } = reservation;
    if (reservation.store === "redis" && this.redis) {
      try {
        await this.redis.corralSettle(keys[0], keys[1], tokens, used, WINDOW_TTL_SECONDS.minute, WINDOW_TTL_SECONDS.day);
        return;
      } catch (error) {
        this.logger.warn({ tenant: reservation.tenant, reason: (error as Error).message }, "token usage could not be written to Redis; counted in memory");
      }
    }
    const at = this.now();
    keys.forEach((key, i) => {
      const entry = this.entry(key, at, i === 0 ? "minute" : "day");
      if (reservation.store === "memory") entry.pending = Math.max(0, entry.pending - tokens);
      entry.used += used;
    });
  }

  /** Counts tokens of a request that reserved nothing (a key without budgets), for /usage. */
  record(tenant: Tenant, used: number): Promise<void> {
    return this.settle({ tenant: tenant.name, tokens: 0, keys: windowKeys(tenant.name, this.now()), store: this.redis && this.redisUp() ? "redis" : "memory" }, used);
  }

  /** The key's use of its current windows (shared through Redis when it answers). */
  async usage(tenant: Tenant): Promise<Record<BudgetWindow, WindowUsage>> {
    const at = this.now();
    const keys = windowKeys(tenant.name, at);
    let counts: { used: number; pending: number }[] | undefined;
    if (this.redis && this.redisUp()) {
      try {
        const answers = await Promise.all(keys.map((key) => this.redis!.hmget(key, "used", "pending")));
        counts = answers.map(([used, pending]) => ({ used: Number(used ?? 0), pending: Number(pending ?? 0) }));
      } catch {
        // below: this replica's own counts
      }
    }
    counts ??= keys.map((key, i) => this.entry(key, at, i === 0 ? "minute" : "day"));
    const windowUsage = (window: BudgetWindow, i: number, limit: number | undefined): WindowUsage => ({
      used: counts![i]!.used,
      reserved: counts![i]!.pending,
      limit: limit ?? null,
      resetSeconds: Math.ceil((WINDOW_MS[window] - (at % WINDOW_MS[window])) / 1000),
    });
    return { minute: windowUsage("minute", 0, tenant.tokensPerMinute), day: windowUsage("day", 1, tenant.tokensPerDay) };
  }

  private reserveInMemory(keys: [string, string], limits: [number, number], tokens: number, at: number): [number, number] {
    const entries = keys.map((key, i) => this.entry(key, at, i === 0 ? "minute" : "day"));
    for (let i = 0; i < 2; i++) {
      if (limits[i]! > 0 && entries[i]!.used + entries[i]!.pending >= limits[i]!) return [i + 1, entries[i]!.used];
    }
    for (const entry of entries) entry.pending += tokens;
    return [0, 0];
  }

  private entry(key: string, at: number, window: BudgetWindow) {
    let entry = this.memory.get(key);
    if (!entry || entry.expires <= at) {
      // Expired windows are swept once per so many new ones, never on every request.
      if (++this.created % MEMORY_SWEEP_EVERY === 0) for (const [k, e] of this.memory) if (e.expires <= at) this.memory.delete(k);
      entry = { used: 0, pending: 0, expires: at + WINDOW_TTL_SECONDS[window] * 1000 };
      this.memory.set(key, entry);
    }
    return entry;
  }
}

/** The Redis keys of the tenant's current minute and day. */
function windowKeys(name: string, at: number): [string, string] {
  return [`corral:tok:${name}:m:${Math.floor(at / WINDOW_MS.minute)}`, `corral:tok:${name}:d:${Math.floor(at / WINDOW_MS.day)}`];
}

/** The refusal's words: which budget, how much, when to retry. */
export function describeRefusal(tenant: Tenant, refusal: BudgetRefusal): string {
  const spent = refusal.used >= refusal.limit ? `used ${refusal.used} of its ${refusal.limit} tokens per ${refusal.window}` : `has its ${refusal.limit} tokens per ${refusal.window} reserved by requests in flight`;
  return `token budget exceeded: key "${tenant.name}" ${spent}; retry in ${refusal.retryAfterSeconds} s`;
}

/** Per message: the chat template's own tokens (role markers, separators), generously. */
const TOKENS_PER_MESSAGE = 8;
const TOKENS_PER_PROMPT = 16;

/**
 * An upper bound of the tokens a request can use: no tokenizer turns a byte into more than one
 * token, plus the template's tokens, plus the most it may generate for each prompt.
 */
export function tokenBound(body: Record<string, unknown>): number {
  const maxNew = Number(body.max_length ?? body.max_tokens ?? body.max_completion_tokens ?? DEFAULT_SAMPLING.max_length);
  const completion = Number.isFinite(maxNew) && maxNew > 0 ? maxNew : DEFAULT_SAMPLING.max_length;
  return promptBound(body) + promptsOf(body).length * (TOKENS_PER_PROMPT + completion);
}

/** An upper bound of the prompt tokens alone: its bytes, plus the template's tokens per message. */
export function promptBound(body: Record<string, unknown>): number {
  let tokens = 0;
  for (const prompt of promptsOf(body)) tokens += typeof prompt === "string" ? Buffer.byteLength(prompt) : Array.isArray(prompt) ? prompt.length : 0;
  if (Array.isArray(body.messages)) {
    for (const message of body.messages as { content?: unknown }[]) tokens += TOKENS_PER_MESSAGE + Buffer.byteLength(JSON.stringify(message?.content ?? ""));
  }
  return tokens;
}

/** The prompts a request decodes: a batch's, a completion's (a string or a list), or one chat. */
function promptsOf(body: Record<string, unknown>): unknown[] {
  if (Array.isArray(body.prompts)) return body.prompts;
  // OpenAI's prompt: a string, a list of them, a list of token ids (one prompt), or a list of those.
  if (Array.isArray(body.prompt)) return body.prompt.every((item) => typeof item === "number") ? [body.prompt] : body.prompt;
  if (body.prompt !== undefined) return [body.prompt];
  return [null];
}
