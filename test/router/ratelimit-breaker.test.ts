import { Writable } from "node:stream";
import { Redis } from "ioredis";
import { pino } from "pino";
import type { Logger } from "../../common/logger.js";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { StaticBackend } from "../../router/backends/static.js";
import { RateLimiter } from "../../router/ratelimit.js";
import { run, type RouterHandle } from "../../router/run.js";
import { FakeRuntime } from "./fake-runtime.js";
import { HAS_REDIS, NO_REDIS_MESSAGE, TestRedis } from "./redis.js";
import { testRouterConfig } from "../helpers/config.js";
import { waitFor } from "../helpers/wait.js";

// The rate limiter's circuit breaker against a real redis-server that hangs (SIGSTOP) or dies.

if (!HAS_REDIS) console.warn(NO_REDIS_MESSAGE);

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** What was measured, printed as a table at the end (for the notes of whoever runs this). */
const measured: { scenario: string; event: string; ms: number }[] = [];
afterAll(() => {
  if (measured.length === 0) return;
  const lines = measured.map(({ scenario, event, ms }) => `${scenario.padEnd(22)} ${event.padEnd(46)} ${ms.toFixed(1).padStart(7)}`);
  console.log(["rate limiter, Redis outages (ms)", `${"scenario".padEnd(22)} ${"event".padEnd(46)} ${"ms".padStart(7)}`, ...lines].join("\n"));
});

/** Command timeout of the Redis connection, as run() sets it. */
const COMMAND_TIMEOUT_MS = 500;

/** A Redis connection with run()'s options: no offline queue, no retries, a 500 ms command timeout. */
async function connect(redis: TestRedis): Promise<Redis> {
  const client = new Redis(redis.url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: COMMAND_TIMEOUT_MS,
    connectTimeout: 2000,
    retryStrategy: (times) => Math.min(100 * times, 2000),
    lazyConnect: true,
  });
  client.on("error", () => {});
  await client.connect();
  cleanups.push(() => client.disconnect());
  return client;
}

function captureLogs(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const logger = pino({ level: "info" }, new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(chunk.toString()), done()) }));
  return { logger, lines };
}

/** Two limiters (two router replicas) on one Redis; 60 a minute, bursts of 10. */
async function replicas(redis: TestRedis): Promise<{ a: RateLimiter; b: RateLimiter; logs: string[] }> {
  const { logger, lines } = captureLogs();
  const settings = { points: 60, duration: 60, burst: 10 };
  const a = new RateLimiter(settings, await connect(redis), { logger });
  const b = new RateLimiter(settings, await connect(redis), { logger: pino({ level: "silent" }) });
  cleanups.push(() => (a.close(), b.close()));
  return { a, b, logs: lines };
}

async function startRedis(): Promise<TestRedis> {
  const redis = await TestRedis.start();
  cleanups.push(async () => {
    redis.unpause();
    await redis.stop();
  });
  return redis;
}

/** Checks one after another for `forMs`; returns each check's latency. */
async function checkFor(limiter: RateLimiter, key: string, forMs: number): Promise<number[]> {
  const latencies: number[] = [];
  const end = Date.now() + forMs;
  while (Date.now() < end) {
    const started = performance.now();
    await limiter.check(key);
    latencies.push(performance.now() - started);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return latencies;
}

/** Whether the two limiters share one bucket: 10 taken through `a` leave nothing for `b`. */
async function shared(a: RateLimiter, b: RateLimiter, key: string): Promise<boolean> {
  for (let i = 0; i < 10; i++) if (!(await a.check(key)).allowed) return false;
  const decision = await b.check(key);
  return !decision.allowed && decision.store === "redis";
}

const slow = (latencies: number[]) => latencies.filter((ms) => ms > COMMAND_TIMEOUT_MS / 2).length;
const logged = (lines: string[], text: string) => lines.filter((line) => line.includes(text)).length;

describe.skipIf(!HAS_REDIS)("the rate limiter's circuit breaker", () => {
  it("trips to memory when Redis hangs (only the first check waits) and goes back when it answers again", async () => {
    const redis = await startRedis();
    const { a, b, logs } = await replicas(redis);
    expect([a.mode, b.mode]).toEqual(["redis", "redis"]);
    expect((await a.check("warm")).store).toBe("redis");

    const stoppedAt = Date.now();
    redis.pause();
    // `a` has traffic: the first check pays the command timeout and trips the breaker; the rest
    // are decided in memory at once.
    const latencies = await checkFor(a, "during-hang", 1500);
    expect(slow(latencies)).toBeLessThanOrEqual(2);
    expect(latencies.length).toBeGreaterThan(10);
    expect(a.mode).toBe("memory-fallback");
    // Decided in memory: still a token bucket (emptied by now, one token a second), not "everything passes".
    const [first, second] = [await a.check("during-hang"), await a.check("during-hang")];
    expect([first.allowed, second.allowed]).not.toEqual([true, true]);
    // `b` has none: two unanswered PINGs in a row trip it.
    await waitFor(() => b.mode === "memory-fallback", { message: "timed out waiting for the idle replica to trip", timeoutMs: 5000, intervalMs: 10 });
    const bTripped = Date.now() - stoppedAt;
    measured.push({ scenario: "hang (SIGSTOP)", event: "idle replica in memory (2 PINGs unanswered)", ms: bTripped });
    measured.push({ scenario: "hang (SIGSTOP)", event: "busy replica: first check (pays the timeout)", ms: latencies[0]! });
    measured.push({ scenario: "hang (SIGSTOP)", event: `busy replica: slowest of the next ${latencies.length - 1} checks`, ms: Math.max(...latencies.slice(1)) });

    const resumedAt = Date.now();
    redis.unpause();
    await waitFor(() => a.mode === "redis", { message: "timed out waiting for `a` to use Redis again", timeoutMs: 5000, intervalMs: 10 });
    const aBack = Date.now() - resumedAt;
    await waitFor(() => b.mode === "redis", { message: "timed out waiting for `b` to use Redis again", timeoutMs: 5000, intervalMs: 10 });
    const bBack = Date.now() - resumedAt;
    measured.push({ scenario: "hang (SIGSTOP)", event: "SIGCONT -> both replicas on Redis", ms: Math.max(aBack, bBack) });
    expect(await shared(a, b, "after-hang")).toBe(true);
    expect(logged(logs, "Redis is unreachable")).toBe(1);
    expect(logged(logs, "Redis is back")).toBe(1);
  });

  it("trips when Redis is killed and goes back when it is restarted", async () => {
    const redis = await startRedis();
    const { a, b, logs } = await replicas(redis);
    const killedAt = Date.now();
    await redis.stop();
    await waitFor(() => a.mode === "memory-fallback" && b.mode === "memory-fallback", { message: "timed out waiting for the fallback", timeoutMs: 10_000, intervalMs: 10 });
    const down = Date.now() - killedAt;
    measured.push({ scenario: "killed", event: "kill -> both replicas in memory", ms: down });
    const latencies = await checkFor(a, "during-outage", 500);
    expect(slow(latencies)).toBe(0);

    const restartedAt = Date.now();
    await redis.resume();
    await waitFor(() => a.mode === "redis" && b.mode === "redis", { message: "timed out waiting for Redis to be used again", timeoutMs: 10_000, intervalMs: 10 });
    const back = Date.now() - restartedAt;
    measured.push({ scenario: "killed", event: "restart -> both replicas on Redis", ms: back });
    expect(await shared(a, b, "after-restart")).toBe(true);
    expect(logged(logs, "Redis is unreachable")).toBe(1);
    expect(logged(logs, "Redis is back")).toBe(1);
  });

  it("reports a hung Redis on /health and corral_router_ratelimit_redis_up, and the recovery", async () => {
    const redis = await startRedis();
    const fake = await new FakeRuntime("tiny").start();
    cleanups.push(() => fake.close());
    const { logger, lines } = captureLogs();
    const handle: RouterHandle = await run(testRouterConfig({ redisUrl: redis.url }), {
      backend: new StaticBackend([{ modelId: "tiny", endpoints: [{ id: "fake", url: fake.url }] }]),
      logger,
    });
    cleanups.push(() => handle.close());
    const health = async () => ((await (await fetch(`${handle.url}/health`)).json()) as { status: string; components: { rate_limiter: string } });
    const redisUp = async () => Number(/^corral_router_ratelimit_redis_up (\d+)$/m.exec(await (await fetch(`${handle.url}/metrics`)).text())?.[1]);
    const generate = async () => {
      const started = performance.now();
      const response = await fetch(`${handle.url}/generate`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"prompt":"x"}' });
      await response.arrayBuffer();
      return { status: response.status, ms: performance.now() - started };
    };
    expect((await health()).components.rate_limiter).toBe("redis");
    expect(await redisUp()).toBe(1);

    const stoppedAt = Date.now();
    redis.pause();
    await waitFor(async () => (await health()).components.rate_limiter === "memory-fallback", { message: "timed out waiting for /health to say memory-fallback", timeoutMs: 5000, intervalMs: 10 });
    const degraded = Date.now() - stoppedAt;
    measured.push({ scenario: "hang, router, idle", event: "SIGSTOP -> /health memory-fallback", ms: degraded });
    expect((await health()).status).toBe("degraded");
    expect(await redisUp()).toBe(0);
    // Open: requests are limited in memory without waiting for Redis.
    const during = [];
    for (let i = 0; i < 5; i++) during.push(await generate());
    expect(during.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    expect(slow(during.map((r) => r.ms))).toBe(0);

    const resumedAt = Date.now();
    redis.unpause();
    await waitFor(async () => (await health()).status === "ok", { message: "timed out waiting for /health to be ok again", timeoutMs: 5000, intervalMs: 10 });
    const ok = Date.now() - resumedAt;
    measured.push({ scenario: "hang, router, idle", event: "SIGCONT -> /health ok", ms: ok });
    expect((await health()).components.rate_limiter).toBe("redis");
    expect(await redisUp()).toBe(1);
    expect(logged(lines, "Redis is unreachable")).toBe(1);
    expect(logged(lines, "Redis is back")).toBe(1);
  });
});
