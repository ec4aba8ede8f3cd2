// The router as a multi-tenant front door, end to end (docs/keys.md): named keys from a keys file
// with scopes, allowed models, their own request rate and token budgets shared by two router
// replicas through a real Redis, usage counted from what the runtime reports (streams included),
// /usage, per-key metrics, and keys rotated without a restart.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { StaticBackend } from "../../router/backends/static.js";
import { run, type RouterHandle } from "../../router/run.js";
import { testRouterConfig } from "../helpers/config.js";
import { waitFor } from "../helpers/wait.js";
import { FakeRuntime } from "./fake-runtime.js";
import { HAS_REDIS, NO_REDIS_MESSAGE, TestRedis } from "./redis.js";

if (!HAS_REDIS) console.warn(NO_REDIS_MESSAGE);

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const KEYS = {
  writer: "sk-writer-0123456789abcdef",
  ops: "sk-ops-0123456789abcdef",
  narrow: "sk-narrow-0123456789abcdef",
  slow: "sk-slow-0123456789abcdef",
  queued: "sk-queued-0123456789abcdef",
};

function keysFile(text: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "corral-keys-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, "keys.yaml");
  writeFileSync(file, text);
  return file;
}

const KEYS_YAML = `
keys:
  - name: writer
    key: ${KEYS.writer}
    limits: { tokensPerDay: 100 }
  - name: ops
    key: ${KEYS.ops}
    scopes: [generate, models:manage, admin]
  - name: narrow
    key: ${KEYS.narrow}
    models: [tiny]
  - name: slow
    key: ${KEYS.slow}
    limits: { requestsPerMinute: 60, burst: 2 }
  - name: queued
    key: ${KEYS.queued}
    maxQueued: 1
`;

/**
 * Routers in front of fake runtimes of "tiny" and "other", sharing `redisUrl` when given; with
 * `capacity`, tiny's runtime takes that many requests at once and the router queues the rest.
 */
async function startRouters(file: string, count: number, redisUrl?: string, capacity?: number): Promise<RouterHandle[]> {
  const tiny = await new FakeRuntime("tiny").start();
  const other = await new FakeRuntime("other").start();
  tiny.eventDelayMs = capacity ? 300 : tiny.eventDelayMs;
  cleanups.push(() => tiny.close(), () => other.close());
  const routers: RouterHandle[] = [];
  for (let i = 0; i < count; i++) {
    const backend = new StaticBackend([
      { modelId: "tiny", endpoints: [{ id: "tiny", url: tiny.url, capacity }] },
      { modelId: "other", endpoints: [{ id: "other", url: other.url }] },
    ]);
    const router = await run(testRouterConfig({ keysFile: file, redisUrl, rateLimitPoints: 6000, rateLimitBurst: 1000, endpointQueue: 0 }), { backend });
    cleanups.push(() => router.close());
    routers.push(router);
  }
  return routers;
}

const call = (router: RouterHandle, method: string, route: string, key: string | undefined, body?: unknown) =>
  fetch(`${router.url}${route}`, {
    method,
    headers: { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
const detail = async (response: Response) => ((await response.json()) as { detail: string }).detail;

describe("keys with scopes and allowed models", () => {
  it("refuse a route outside the key's scopes and a model outside its list with 403 naming them, and list only its models", async () => {
    const [router] = await startRouters(keysFile(KEYS_YAML), 1);
    let response = await call(router!, "POST", "/models/load", KEYS.writer, { model_id: "tiny" });
    expect(response.status).toBe(403);
    expect(await detail(response)).toBe('key "writer" may not call /models/load: it needs the models:manage scope');
    for (const route of ["/system/info", "/usage", "/metrics"]) {
      response = await call(router!, "GET", route, KEYS.writer);
      expect(response.status, route).toBe(403);
      expect(await detail(response)).toBe(`key "writer" may not call ${route}: it needs the admin scope`);
    }
    expect((await call(router!, "POST", "/models/load", KEYS.ops, { model_id: "tiny" })).status).toBe(200);
    expect((await call(router!, "GET", "/usage", KEYS.ops)).status).toBe(200);

    response = await call(router!, "POST", "/generate", KEYS.narrow, { model_id: "other", prompt: "x" });
    expect(response.status).toBe(403);
    expect(await detail(response)).toBe('key "narrow" may not use model other');
    expect((await call(router!, "POST", "/v1/completions", KEYS.narrow, { model: "other", prompt: "x" })).status).toBe(403);
    expect((await call(router!, "POST", "/generate", KEYS.narrow, { model_id: "tiny", prompt: "x" })).status).toBe(200);
    const models = (await (await call(router!, "GET", "/v1/models", KEYS.narrow)).json()) as { data: { id: string }[] };
    expect(models.data.map((m) => m.id)).toEqual(["tiny"]);
    const available = (await (await call(router!, "GET", "/models/available", KEYS.narrow)).json()) as { models: { model_id: string }[] };
    expect(available.models.map((m) => m.model_id)).toEqual(["tiny"]);
    expect((await call(router!, "GET", "/v1/models", KEYS.ops).then((r) => r.json())) as { data: unknown[] }).toMatchObject({ data: [{}, {}] });
  });

  it("give a key its own request rate, leaving other keys alone", async () => {
    const [router] = await startRouters(keysFile(KEYS_YAML), 1);
    const send = (key: string) => call(router!, "POST", "/generate", key, { model_id: "tiny", prompt: "x" });
    expect((await send(KEYS.slow)).status).toBe(200);
    expect((await send(KEYS.slow)).status).toBe(200);
    const refused = await send(KEYS.slow);
    expect(refused.status).toBe(429);
    expect(refused.headers.get("retry-after")).toBe("1");
    expect(await detail(refused)).toBe("rate limit exceeded: 60 requests per 60 s with bursts of 2; retry in 1 s");
    for (let i = 0; i < 5; i++) expect((await send(KEYS.narrow)).status).toBe(200);
  });

  it("queue a key's requests for a saturated model up to its maxQueued, and refuse one more with 429, Retry-After and a detail naming the key", async () => {
    const [router] = await startRouters(keysFile(KEYS_YAML), 1, undefined, 1);
    // A stream holds tiny's only place for about a second; the next request waits in the queue.
    const holding = call(router!, "POST", "/generate", KEYS.queued, { model_id: "tiny", prompt: "x", stream: true });
    await waitFor(async () => (await holding).status === 200, { message: "the stream did not start" });
    const waiting = call(router!, "POST", "/generate", KEYS.queued, { model_id: "tiny", prompt: "x" });
    // Give the waiting request time to reach the queue (nothing to observe from outside).
    await new Promise((resolve) => setTimeout(resolve, 100));
    const refused = await call(router!, "POST", "/generate", KEYS.queued, { model_id: "tiny", prompt: "x" });
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(await detail(refused)).toBe('too many requests of key "queued" waiting for model tiny (1); retry shortly');
    // Another key still gets its turn; the waiting request is answered once the stream ends.
    const other = call(router!, "POST", "/generate", KEYS.narrow, { model_id: "tiny", prompt: "x" });
    await (await holding).text();
    expect((await waiting).status).toBe(200);
    expect((await other).status).toBe(200);
  });

  it("are rotated without a restart: a new key works and a removed one gets 401 once the file changes", async () => {
    const file = keysFile(KEYS_YAML);
    const [router] = await startRouters(file, 1);
    expect((await call(router!, "POST", "/generate", KEYS.writer, { model_id: "tiny", prompt: "x" })).status).toBe(200);
    writeFileSync(file, KEYS_YAML.replace(KEYS.writer, "sk-writer-rotated-0123456789"));
    await waitFor(async () => (await call(router!, "POST", "/generate", "sk-writer-rotated-0123456789", { model_id: "tiny", prompt: "x" })).status === 200, {
      message: "the rotated key was not accepted",
      timeoutMs: 10_000,
      intervalMs: 200,
    });
    const old = await call(router!, "POST", "/generate", KEYS.writer, { model_id: "tiny", prompt: "x" });
    expect(old.status).toBe(401);
    const metrics = await (await call(router!, "GET", "/metrics", KEYS.ops)).text();
    expect(metrics).toMatch(/corral_router_key_reloads_total\{result="success"\} [1-9]/);
  });
});

describe.skipIf(!HAS_REDIS)("token budgets shared by two router replicas", () => {
  it("are exact under concurrency (no overspend beyond one request's tokens), count streams, refuse with 429 naming the budget, and show in /usage and the metrics", async () => {
    const redis = await TestRedis.start();
    cleanups.push(() => redis.stop());
    const routers = await startRouters(keysFile(KEYS_YAML), 2, redis.url);
    // A stream: the fake runtime reports 3 prompt and 3 completion tokens in its trailer.
    const stream = await call(routers[0]!, "POST", "/generate", KEYS.writer, { model_id: "tiny", prompt: "x", stream: true, max_length: 4 });
    expect(stream.status).toBe(200);
    expect(stream.headers.get("x-corral-usage")).toBeNull();
    await stream.text();
    // Then 10 clients over both replicas, each until it is told the budget of 100 tokens a day is
    // spent (a refusal while it is only reserved by requests in flight is tried again); each answer
    // uses 5 tokens (3 prompt + 2 completion).
    const statuses: number[] = [];
    const details: string[] = [];
    await Promise.all(
      Array.from({ length: 10 }, async (_, c) => {
        for (let i = 0; i < 100; i++) {
          const response = await call(routers[c % 2]!, "POST", "/generate", KEYS.writer, { model_id: "tiny", prompt: "hello", max_length: 2 });
          statuses.push(response.status);
          if (response.status !== 429) {
            await response.text();
            continue;
          }
          expect(Number(response.headers.get("retry-after"))).toBeGreaterThan(0);
          const text = await detail(response);
          details.push(text);
          if (text.includes(" used ")) return;
        }
      }),
    );
    const answered = statuses.filter((s) => s === 200).length;
    expect(statuses.filter((s) => s !== 200 && s !== 429)).toEqual([]);
    expect(details.length).toBeGreaterThan(0);
    expect(details.some((d) => /^token budget exceeded: key "writer" (used \d+ of its 100 tokens per day|has its 100 tokens per day reserved by requests in flight); retry in \d+ s$/.test(d))).toBe(true);
    const spent = 6 + 5 * answered;
    // Admitted only while under the limit: the last one may pass it by its own 5 tokens, no more.
    expect(spent).toBeGreaterThanOrEqual(100);
    expect(spent).toBeLessThanOrEqual(100 + 5);
    // Both replicas report the same shared figure.
    await waitFor(async () => {
      const views = await Promise.all(routers.map(async (r) => ((await (await call(r, "GET", "/usage", KEYS.ops)).json()) as { keys: { name: string; tokens: { day: { used: number; reserved: number } } }[] }).keys));
      const days = views.map((keys) => keys.find((k) => k.name === "writer")!.tokens.day);
      return days.every((d) => d.used === spent && d.reserved === 0);
    }, { message: "the replicas did not agree on the key's use", timeoutMs: 5000 });
    const usage = (await (await call(routers[0]!, "GET", "/usage", KEYS.ops)).json()) as { keys: Record<string, unknown>[] };
    expect(usage.keys.find((k) => k.name === "writer")).toMatchObject({ scopes: ["generate"], models: null, tokens: { day: { used: spent, limit: 100 }, minute: { limit: null } } });
    const metrics = (await Promise.all(routers.map(async (r) => (await call(r, "GET", "/metrics", KEYS.ops)).text()))).join("\n");
    expect(metrics).toMatch(/corral_router_key_requests_total\{key="writer",status="200"\} [1-9]/);
    expect(metrics).toMatch(/corral_router_key_tokens_total\{key="writer",kind="completion"\} [1-9]/);
    expect(metrics).toMatch(/corral_router_token_budget_rejections_total\{key="writer",window="day"\} [1-9]/);
  });
});
