import { Redis } from "ioredis";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { HAS_REDIS, NO_REDIS_MESSAGE, TestRedis } from "../test/router/redis.js";
import type { Tenant } from "./tenants.js";
import { TokenBudgets, describeRefusal, tokenBound, type BudgetRefusal, type Reservation } from "./token-budget.js";

if (!HAS_REDIS) console.warn(NO_REDIS_MESSAGE);

const logger = pino({ level: "silent" });
const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const tenant = (overrides: Partial<Tenant> = {}): Tenant => ({ name: "team-a", scopes: new Set(["generate"]), models: null, weight: 1, ...overrides });
const isRefusal = (r: Reservation | BudgetRefusal): r is BudgetRefusal => "window" in r;

/**
 * `clients` concurrent request loops over the budgets (one TokenBudgets per router replica),
 * each request reserving `bound` and, after a few milliseconds, settling a random use at most
 * `bound`; runs until every request of the last second is refused. Returns the tokens settled.
 */
async function spend(replicas: TokenBudgets[], who: Tenant, bound: number, clients: number, requests: number): Promise<{ used: number; admitted: number; refused: number }> {
  let used = 0;
  let admitted = 0;
  let refused = 0;
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      const budgets = replicas[c % replicas.length]!;
      for (let i = 0; i < requests; i++) {
        const reservation = await budgets.reserve(who, bound);
        if (isRefusal(reservation)) {
          refused++;
          continue;
        }
        admitted++;
        await new Promise((resolve) => setTimeout(resolve, 1 + (i % 3)));
        const tokens = 1 + ((c * 31 + i * 17) % bound);
        used += tokens;
        await budgets.settle(reservation, tokens);
      }
    }),
  );
  return { used, admitted, refused };
}

describe("token budgets in memory", () => {
  it("admit while settled plus reserved is under the limit, refuse with the window and when to retry, and count what was used", async () => {
    let now = Date.UTC(2026, 11, 6, 10, 0, 30);
    const budgets = new TokenBudgets(undefined, () => false, logger, () => now);
    const who = tenant({ tokensPerMinute: 100, tokensPerDay: 1000 });
    const first = await budgets.reserve(who, 60);
    expect(isRefusal(first)).toBe(false);
    // 60 reserved of 100: a second request is still admitted (the last one may go over by its own tokens).
    const second = await budgets.reserve(who, 60);
    expect(isRefusal(second)).toBe(false);
    // 120 reserved: refused for now, retry soon (reservations may settle lower).
    const third = (await budgets.reserve(who, 10)) as BudgetRefusal;
    expect(third).toMatchObject({ window: "minute", limit: 100, used: 0, retryAfterSeconds: 2 });
    expect(describeRefusal(who, third)).toBe('token budget exceeded: key "team-a" has its 100 tokens per minute reserved by requests in flight; retry in 2 s');
    await budgets.settle(first as Reservation, 20);
    await budgets.settle(second as Reservation, 90);
    const spent = (await budgets.reserve(who, 10)) as BudgetRefusal;
    expect(spent).toMatchObject({ window: "minute", used: 110, retryAfterSeconds: 30 });
    expect(describeRefusal(who, spent)).toBe('token budget exceeded: key "team-a" used 110 of its 100 tokens per minute; retry in 30 s');
    expect(await budgets.usage(who)).toMatchObject({ minute: { used: 110, reserved: 0, limit: 100, resetSeconds: 30 }, day: { used: 110, limit: 1000 } });
    // The next minute starts afresh; the day remembers.
    now += 60_000;
    expect(isRefusal(await budgets.reserve(who, 10))).toBe(false);
    expect((await budgets.usage(who)).day.used).toBe(110);
  });

  it("a key without budgets is never refused, and its use is still counted", async () => {
    const budgets = new TokenBudgets(undefined, () => false, logger);
    const who = tenant();
    await budgets.record(who, 42);
    expect(await budgets.usage(who)).toMatchObject({ minute: { used: 42, limit: null }, day: { used: 42, limit: null } });
  });
});

describe("tokenBound", () => {
  it("is the prompt's bytes, the template's tokens and the most each prompt may generate", () => {
    expect(tokenBound({ prompt: "héllo", max_length: 10 })).toBe(16 + 10 + 6);
    expect(tokenBound({ prompts: ["a", "bb"], max_length: 5 })).toBe(2 * (16 + 5) + 3);
    expect(tokenBound({ messages: [{ role: "user", content: "hi" }], max_tokens: 7 })).toBe(16 + 7 + 8 + 4);
    // OpenAI's token-id prompts: one list is one prompt, a list of lists is several.
    expect(tokenBound({ prompt: [1, 2, 3], max_tokens: 1 })).toBe(16 + 1 + 3);
    expect(tokenBound({ prompt: [[1, 2], [3]], max_tokens: 1 })).toBe(2 * (16 + 1) + 3);
    // No max_length: the API's default (8192).
    expect(tokenBound({ prompt: "x" })).toBe(16 + 8192 + 1);
  });
});

describe.skipIf(!HAS_REDIS)("token budgets in Redis, shared by router replicas", () => {
  it("never overspend by more than one request's tokens, with 16 concurrent clients on two replicas", async () => {
    const server = await TestRedis.start();
    cleanups.push(() => server.stop());
    const connections = [new Redis(server.url), new Redis(server.url)];
    cleanups.push(() => Promise.all(connections.map((c) => c.quit())));
    const replicas = connections.map((redis) => new TokenBudgets(redis, () => true, logger));
    const limit = 5000;
    const bound = 200;
    // A name of its own, so the windows start empty.
    const who = tenant({ name: `team-${Date.now()}`, tokensPerMinute: limit });
    const result = await spend(replicas, who, bound, 16, 60);
    expect(result.refused).toBeGreaterThan(0);
    expect(result.used).toBeGreaterThan(limit - bound);
    expect(result.used).toBeLessThanOrEqual(limit + bound);
    // Both replicas read the same counts, with nothing left reserved.
    const [a, b] = await Promise.all(replicas.map((r) => r.usage(who)));
    expect(a).toEqual(b);
    expect(a.minute).toMatchObject({ used: result.used, reserved: 0, limit });
  });

  it("count in memory while Redis is down, and in Redis again once it is back", async () => {
    const server = await TestRedis.start();
    cleanups.push(() => server.stop());
    const redis = new Redis(server.url, { maxRetriesPerRequest: 0, enableOfflineQueue: false });
    cleanups.push(() => redis.disconnect());
    await new Promise((resolve) => redis.once("ready", resolve));
    let up = true;
    const budgets = new TokenBudgets(redis, () => up, logger);
    const who = tenant({ name: `team-${Date.now()}`, tokensPerMinute: 1000 });
    await budgets.settle((await budgets.reserve(who, 100)) as Reservation, 100);
    up = false;
    const held = (await budgets.reserve(who, 100)) as Reservation;
    expect(held.store).toBe("memory");
    await budgets.settle(held, 50);
    expect((await budgets.usage(who)).minute.used).toBe(50);
    up = true;
    expect((await budgets.usage(who)).minute.used).toBe(100);
  });
});
