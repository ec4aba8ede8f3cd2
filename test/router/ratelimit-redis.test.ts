import { Writable } from "node:stream";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { StaticBackend } from "../../router/backends/static.js";
import { run, type RouterHandle } from "../../router/run.js";
import { FakeRuntime } from "./fake-runtime.js";
import { HAS_REDIS, NO_REDIS_MESSAGE, TestRedis } from "./redis.js";
import { testRouterConfig } from "../helpers/config.js";
import { waitFor } from "../helpers/wait.js";

if (!HAS_REDIS) console.warn(NO_REDIS_MESSAGE);

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function setup(): Promise<{ redis: TestRedis; fake: FakeRuntime }> {
  const redis = await TestRedis.start();
  cleanups.push(() => redis.stop());
  const fake = await new FakeRuntime("tiny").start();
  cleanups.push(() => fake.close());
  return { redis, fake };
}

/** A router with the default limits (60 a minute, bursts of 10) kept in the given Redis. */
async function router(redis: TestRedis, fake: FakeRuntime, logs?: string[]): Promise<RouterHandle> {
  const logger = logs
    ? pino({ level: "info" }, new Writable({ write: (chunk: Buffer, _encoding, done) => (logs.push(chunk.toString()), done()) }))
    : pino({ level: "silent" });
  const handle = await run(testRouterConfig({ redisUrl: redis.url }), {
    backend: new StaticBackend([{ modelId: "tiny", endpoints: [{ id: "fake", url: fake.url }] }]),
    logger,
  });
  cleanups.push(() => handle.close());
  return handle;
}

async function generate(handle: RouterHandle): Promise<Response> {
  const response = await fetch(`${handle.url}/generate`, { method: "POST", headers: { "content-type": "application/json" }, body: '{"prompt":"x"}' });
  await response.arrayBuffer();
  return response;
}

async function burst(handles: RouterHandle[], count: number): Promise<number[]> {
  const responses = await Promise.all(Array.from({ length: count }, (_, i) => generate(handles[i % handles.length]!)));
  return responses.map((response) => response.status);
}

async function healthOf(handle: RouterHandle): Promise<{ components: { rate_limiter: string } }> {
  return (await (await fetch(`${handle.url}/health`)).json()) as { components: { rate_limiter: string } };
}

const count = (statuses: number[], status: number) => statuses.filter((s) => s === status).length;

describe.skipIf(!HAS_REDIS)("rate limits in Redis", () => {
  it("lets exactly 10 of a burst of 12 through, then refills one request a second", async () => {
    const { redis, fake } = await setup();
    const handle = await router(redis, fake);
    expect(handle.limiter!.mode).toBe("redis");
    const statuses = await burst([handle], 12);
    expect(count(statuses, 200)).toBe(10);
    expect(count(statuses, 429)).toBe(2);
    const refused = await generate(handle);
    expect(refused.status).toBe(429);
    expect(refused.headers.get("retry-after")).toBe("1");
    expect(refused.headers.get("ratelimit-remaining")).toBe("0");
    // The bucket refills at 1 token a second: the next request passes about a second later, not before.
    const emptiedAt = Date.now();
    await waitFor(async () => (await generate(handle)).status === 200, { message: "timed out waiting for a refilled token", timeoutMs: 15_000 });
    const waited = Date.now() - emptiedAt;
    expect(waited).toBeGreaterThan(300);
    expect(waited).toBeLessThan(2500);
    expect((await generate(handle)).status).toBe(429);
  });

  it("shares each client's budget between two routers on one Redis", async () => {
    const { redis, fake } = await setup();
    const first = await router(redis, fake);
    const second = await router(redis, fake);
    const statuses = await burst([first, second], 12);
    expect(count(statuses, 200)).toBe(10);
    expect(count(statuses, 429)).toBe(2);
    expect((await generate(second)).status).toBe(429);
  });

  it("keeps limiting in memory while Redis is down (logged once, counted), then goes back to Redis", async () => {
    const { redis, fake } = await setup();
    const logs: string[] = [];
    const handle = await router(redis, fake, logs);
    expect(count(await burst([handle], 10), 200)).toBe(10);
    expect((await generate(handle)).status).toBe(429);

    await redis.stop();
    await waitFor(async () => (await healthOf(handle)).components.rate_limiter === "memory-fallback", { message: "timed out waiting for the fallback", timeoutMs: 15_000 });
    // The in-memory bucket starts full: still 10 at once, not more.
    const statuses = await burst([handle], 12);
    expect(count(statuses, 200)).toBe(10);
    expect(count(statuses, 429)).toBe(2);
    const metrics = await (await fetch(`${handle.url}/metrics`)).text();
    expect(Number(/corral_router_ratelimit_redis_fallbacks_total (\d+)/.exec(metrics)?.[1])).toBe(12);
    expect(logs.filter((line) => line.includes("Redis is unreachable")).length).toBe(1);
    expect((await healthOf(handle)).components.rate_limiter).toBe("memory-fallback");

    await redis.resume();
    await waitFor(async () => (await healthOf(handle)).components.rate_limiter === "redis", { message: "timed out waiting for Redis to be used again", timeoutMs: 20_000 });
    // Redis came back empty: a full bucket again, kept in Redis (a second router shares it).
    const other = await router(redis, fake);
    const after = await burst([handle, other], 12);
    expect(count(after, 200)).toBe(10);
    expect(count(after, 429)).toBe(2);
    expect(logs.some((line) => line.includes("Redis is back"))).toBe(true);
  });
});
