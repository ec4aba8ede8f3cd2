import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { RateLimiter, TokenBucketMemory } from "./ratelimit.js";

const logger = pino({ level: "silent" });

describe("the token bucket (in memory)", () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(new Date("2026-01-01T00:00:00Z"));
  });
  afterEach(() => vi.useRealTimers());

  it("allows a burst of 10 at once and then one request a second (60 a minute, burst 10)", async () => {
    const limiter = new RateLimiter({ points: 60, duration: 60, burst: 10 }, undefined, { logger });
    const decisions = [];
    for (let i = 0; i < 12; i++) decisions.push(await limiter.check("client"));
    expect(decisions.map((d) => d.allowed)).toEqual([...Array(10).fill(true), false, false]);
    expect(decisions.map((d) => d.remaining)).toEqual([9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0]);
    // Allowed: seconds until the bucket is full again. Refused: until the next request passes.
    expect(decisions[0]!.resetSeconds).toBe(1);
    expect(decisions[9]!.resetSeconds).toBe(10);
    expect(decisions[10]!.resetSeconds).toBe(1);

    vi.advanceTimersByTime(999);
    expect((await limiter.check("client")).allowed).toBe(false);
    vi.advanceTimersByTime(1);
    expect((await limiter.check("client")).allowed).toBe(true);
    expect((await limiter.check("client")).allowed).toBe(false);

    // Sustained: over the next minute, one request a second passes, 60 in all.
    let allowed = 0;
    for (let ms = 0; ms < 60_000; ms += 100) {
      vi.advanceTimersByTime(100);
      if ((await limiter.check("client")).allowed) allowed++;
    }
    expect(allowed).toBe(60);
  });

  it("refills completely after burst/rate seconds and keeps clients apart", async () => {
    const limiter = new RateLimiter({ points: 60, duration: 60, burst: 10 }, undefined, { logger });
    for (let i = 0; i < 10; i++) await limiter.check("a");
    expect((await limiter.check("a")).allowed).toBe(false);
    expect((await limiter.check("b")).allowed).toBe(true);
    vi.advanceTimersByTime(10_000);
    const results = [];
    for (let i = 0; i < 11; i++) results.push((await limiter.check("a")).allowed);
    expect(results).toEqual([...Array(10).fill(true), false]);
  });

  it("supports other rates: 120 a minute with bursts of 4", async () => {
    const limiter = new RateLimiter({ points: 120, duration: 60, burst: 4 }, undefined, { logger });
    const results = [];
    for (let i = 0; i < 5; i++) results.push((await limiter.check("c")).allowed);
    expect(results).toEqual([true, true, true, true, false]);
    vi.advanceTimersByTime(500);
    expect((await limiter.check("c")).allowed).toBe(true);
    expect((await limiter.check("c")).allowed).toBe(false);
  });

  it("builds the RateLimit headers", async () => {
    const limiter = new RateLimiter({ points: 60, duration: 60, burst: 10 }, undefined, { logger });
    expect(limiter.headers(await limiter.check("h"))).toEqual({ "ratelimit-limit": "10", "ratelimit-remaining": "9", "ratelimit-reset": "1", "ratelimit-policy": "10;w=10" });
    for (let i = 0; i < 9; i++) await limiter.check("h");
    expect(limiter.headers(await limiter.check("h"))).toMatchObject({ "ratelimit-remaining": "0", "retry-after": "1" });
  });

  it("forgets full buckets", async () => {
    const bucket = new TokenBucketMemory({ points: 10, duration: 10 });
    await bucket.consume("k");
    expect(await bucket.get("k")).not.toBeNull();
    vi.advanceTimersByTime(1000);
    expect(await bucket.get("k")).toBeNull();
  });
});
