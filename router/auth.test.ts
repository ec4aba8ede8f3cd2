// Authentication end to end through a running router: the lockout after repeated failures (key
// guessing), admin keys for model management, and /metrics and /docs behind keys (--metrics-port).

import { freePort } from "../test/helpers/net.js";
import { afterEach, describe, expect, it } from "vitest";
import { FakeRuntime } from "../test/router/fake-runtime.js";
import { HAS_REDIS, NO_REDIS_MESSAGE, TestRedis } from "../test/router/redis.js";
import { StaticBackend } from "./backends/static.js";
import { type RouterConfig } from "./config.js";
import { run, type RouterHandle } from "./run.js";
import { waitFor } from "../test/helpers/wait.js";
import { testRouterConfig } from "../test/helpers/config.js";

if (!HAS_REDIS) console.warn(NO_REDIS_MESSAGE);

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A router in front of one fake runtime; 127.0.0.1 is a trusted proxy, so X-Forwarded-For names the client. */
async function startRouter(overrides: Partial<RouterConfig> = {}): Promise<RouterHandle> {
  const fake = await new FakeRuntime("tiny").start();
  cleanups.push(() => fake.close());
  const backend = new StaticBackend([{ modelId: "tiny", endpoints: [{ id: fake.name, url: fake.url }] }]);
  const handle = await run(testRouterConfig({ rateLimitPoints: 0, trustedProxies: ["127.0.0.1"], ...overrides }), { backend });
  cleanups.push(() => handle.close());
  return handle;
}

async function detailOf(response: Response): Promise<string> {
  return ((await response.json()) as { detail: string }).detail;
}

function headers(client: string, key?: string): Record<string, string> {
  return { "content-type": "application/json", "x-forwarded-for": client, ...(key === undefined ? {} : { authorization: `Bearer ${key}` }) };
}

async function generate(router: RouterHandle, client: string, key?: string): Promise<Response> {
  return await fetch(`${router.url}/generate`, { method: "POST", headers: headers(client, key), body: JSON.stringify({ prompt: "x" }) });
}

describe("failed authentication is limited per client", () => {
  it("after 10 wrong keys a client gets 429 with Retry-After, even with a right key; other clients are unaffected", async () => {
    const router = await startRouter({ apiKeys: ["right"] });
    const statuses: number[] = [];
    let last: Response | undefined;
    for (let i = 0; i < 150; i++) {
      last = await generate(router, "10.0.0.1", `guess-${i}`);
      statuses.push(last.status);
      if (i < 149) await last.body?.cancel();
    }
    expect(statuses).toEqual([...Array(10).fill(401), ...Array(140).fill(429)]);
    const retryAfter = Number(last!.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(await last!.json()).toEqual({ detail: `too many failed authentication attempts; retry in ${retryAfter} s` });

    // The right key does not end the lockout (or guessing would go on) ...
    const locked = await generate(router, "10.0.0.1", "right");
    expect(locked.status).toBe(429);
    expect(await detailOf(locked)).toMatch(/^too many failed authentication attempts; retry in \d+ s$/);
    // ... and other clients go on as before.
    expect((await generate(router, "10.0.0.2", "right")).status).toBe(200);

    const metrics = await (await fetch(`${router.url}/metrics`, { headers: headers("10.0.0.3", "right") })).text();
    expect(metrics).toMatch(/corral_router_auth_failures_total\{reason="invalid_key"\} 10\n/);
    expect(metrics).toMatch(/corral_router_auth_failures_total\{reason="locked_out"\} 141\n/);
  });

  it("requests without a key are 401 but do not count, and the lockout ends with its window", async () => {
    const router = await startRouter({ apiKeys: ["right"], authFailureLimit: 2, authFailureWindowSeconds: 1 });
    for (let i = 0; i < 5; i++) expect((await generate(router, "10.0.0.1")).status).toBe(401);
    expect((await generate(router, "10.0.0.1", "wrong")).status).toBe(401);
    expect((await generate(router, "10.0.0.1", "wrong")).status).toBe(401);
    expect((await generate(router, "10.0.0.1", "right")).status).toBe(429);
    const status = await waitFor(
      async () => {
        const answer = (await generate(router, "10.0.0.1", "right")).status;
        return answer === 429 ? undefined : answer;
      },
      { intervalMs: 100, message: "timed out waiting for the lockout to end" },
    );
    expect(status).toBe(200);
  });

  it.skipIf(!HAS_REDIS)("router replicas sharing a Redis share the count of each client's failures", async () => {
    const redis = await TestRedis.start();
    cleanups.push(() => redis.stop());
    const [one, two] = [await startRouter({ apiKeys: ["right"], rateLimitPoints: 6000, rateLimitBurst: 1000, redisUrl: redis.url }), await startRouter({ apiKeys: ["right"], rateLimitPoints: 6000, rateLimitBurst: 1000, redisUrl: redis.url })];
    expect(one.limiter?.mode).toBe("redis");
    for (let i = 0; i < 5; i++) {
      expect((await generate(one, "10.0.0.1", "wrong")).status).toBe(401);
      expect((await generate(two, "10.0.0.1", "wrong")).status).toBe(401);
    }
    expect((await generate(one, "10.0.0.1", "right")).status).toBe(429);
    expect((await generate(two, "10.0.0.1", "right")).status).toBe(429);
    expect((await generate(two, "10.0.0.2", "right")).status).toBe(200);
  });

  it("--auth-failure-limit 0 turns the lockout off", async () => {
    const router = await startRouter({ apiKeys: ["right"], authFailureLimit: 0 });
    for (let i = 0; i < 15; i++) expect((await generate(router, "10.0.0.1", "wrong")).status).toBe(401);
    expect((await generate(router, "10.0.0.1", "right")).status).toBe(200);
  });
});

describe("admin keys", () => {
  async function call(router: RouterHandle, method: string, route: string, key?: string, body?: unknown): Promise<Response> {
    return await fetch(`${router.url}${route}`, { method, headers: headers("10.0.0.9", key), body: body === undefined ? undefined : JSON.stringify(body) });
  }

  it("model management and system info need an admin key; ordinary keys get 403; admin keys may generate", async () => {
    const router = await startRouter({ apiKeys: ["user"], adminApiKeys: ["root"] });
    for (const [method, route, body, scope] of [
      ["POST", "/models/load", { model_id: "tiny" }, "models:manage"],
      ["POST", "/models/unload", { model_id: "tiny" }, "models:manage"],
      ["GET", "/system/info", undefined, "admin"],
      ["GET", "/metrics", undefined, "admin"],
      ["GET", "/usage", undefined, "admin"],
    ] as const) {
      let response = await call(router, method, route, "user", body);
      expect(response.status, route).toBe(403);
      expect(await detailOf(response)).toMatch(new RegExp(`^key "key:[0-9a-f]{16}" may not call ${route}: it needs the ${scope} scope$`));
      response = await call(router, method, route, undefined, body);
      expect(response.status, route).toBe(401);
      expect(await detailOf(response)).toMatch(/missing API key/);
      response = await call(router, method, route, "nope", body);
      expect(response.status, route).toBe(401);
      expect(await response.json()).toEqual({ detail: "invalid API key" });
    }
    expect((await call(router, "POST", "/models/unload", "root", { model_id: "tiny" })).status).toBe(200);
    const loaded = await call(router, "POST", "/models/load", "root", { model_id: "tiny" });
    expect(loaded.status).toBe(200);
    expect(((await loaded.json()) as { model_id: string }).model_id).toBe("tiny");
    expect((await call(router, "GET", "/system/info", "root")).status).toBe(200);
    // Both kinds of key generate and read the model list.
    expect((await generate(router, "10.0.0.9", "user")).status).toBe(200);
    expect((await generate(router, "10.0.0.9", "root")).status).toBe(200);
    expect((await call(router, "GET", "/models/current", "user")).status).toBe(200);
  });

  it("admin keys alone leave generation open and guard only model management", async () => {
    const router = await startRouter({ adminApiKeys: ["root"] });
    expect((await generate(router, "10.0.0.9")).status).toBe(200);
    expect((await call(router, "GET", "/models/available")).status).toBe(200);
    expect((await call(router, "POST", "/models/load", undefined, { model_id: "tiny" })).status).toBe(401);
    expect((await call(router, "GET", "/system/info", "root")).status).toBe(200);
  });

  it("without admin keys, an ordinary key manages models as before", async () => {
    const router = await startRouter({ apiKeys: ["user"] });
    expect((await call(router, "POST", "/models/load", "user", { model_id: "tiny" })).status).toBe(200);
    expect((await call(router, "GET", "/system/info", "user")).status).toBe(200);
  });


});

describe("/metrics and /docs with keys on", () => {
  it("need a key on the main port; /health stays open", async () => {
    const router = await startRouter({ apiKeys: ["user"] });
    for (const route of ["/metrics", "/docs", "/docs/json"]) {
      const response = await fetch(`${router.url}${route}`);
      expect(response.status, route).toBe(401);
      expect(await detailOf(response)).toMatch(/missing API key/);
    }
    const metrics = await fetch(`${router.url}/metrics`, { headers: { authorization: "Bearer user" } });
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toMatch(/corral_router_requests_total/);
    expect((await fetch(`${router.url}/health`)).status).toBe(200);
  });

  it("--metrics-port serves /metrics without auth and nothing else", async () => {
    const port = await freePort();
    const router = await startRouter({ apiKeys: ["user"], metricsPort: port });
    expect(router.metricsUrl).toBe(`http://127.0.0.1:${port}`);
    const metrics = await fetch(`${router.metricsUrl}/metrics`);
    expect(metrics.status).toBe(200);
    expect(metrics.headers.get("content-type")).toMatch(/^text\/plain/);
    expect(await metrics.text()).toMatch(/corral_router_requests_total/);
    const other = await fetch(`${router.metricsUrl}/generate`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: "x" }) });
    expect(other.status).toBe(404);
    expect((await fetch(`${router.metricsUrl}/health`)).status).toBe(404);
    // The main port still asks for a key.
    expect((await fetch(`${router.url}/metrics`)).status).toBe(401);
    await router.close();
    await expect(fetch(`${router.metricsUrl}/metrics`)).rejects.toThrow();
  });

  it("without keys, /metrics and /docs stay open", async () => {
    const router = await startRouter();
    for (const route of ["/metrics", "/docs/json", "/health"]) expect((await fetch(`${router.url}${route}`)).status, route).toBe(200);
  });
});
