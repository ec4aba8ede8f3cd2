import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FakeRuntime } from "../test/router/fake-runtime.js";
import { StaticBackend } from "./backends/static.js";
import { ModelStartError, ModelsBusyError, type Endpoint } from "./backends/types.js";
import { type RouterConfig } from "./config.js";
import { run, type RouterHandle } from "./run.js";
import { testRouterConfig } from "../test/helpers/config.js";
import { waitFor } from "../test/helpers/wait.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function fakeRuntime(name: string): Promise<FakeRuntime> {
  const fake = await new FakeRuntime(name).start();
  cleanups.push(() => fake.close());
  return fake;
}

async function startRouter(backend: StaticBackend, overrides: Partial<RouterConfig> = {}): Promise<RouterHandle> {
  const handle = await run(testRouterConfig({ rateLimitPoints: 0, ...overrides }), { backend });
  cleanups.push(() => handle.close());
  return handle;
}

function endpoint(fake: FakeRuntime): Endpoint {
  return { id: fake.name, url: fake.url };
}

async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return await fetch(url, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: typeof body === "string" ? body : JSON.stringify(body) });
}

/** A static backend whose models become ready only when a test says so. */
class ManualBackend extends StaticBackend {
  private pending = new Map<string, { resolve: () => void; reject: (error: unknown) => void }[]>();
  private readyNow = new Map<string, readonly Endpoint[]>();
  failWith: string | undefined;

  constructor(
    ids: string[],
    private readonly later: Record<string, readonly Endpoint[]>,
  ) {
    super(ids.map((modelId) => ({ modelId, endpoints: [] })));
  }

  override readyEndpoints(modelId: string): readonly Endpoint[] {
    return this.readyNow.get(modelId) ?? [];
  }

  override ensureReady(modelId: string, signal: AbortSignal): Promise<void> {
    if (this.failWith) return Promise.reject(new ModelStartError(modelId, this.failWith));
    if (this.readyNow.has(modelId)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const list = this.pending.get(modelId) ?? [];
      list.push({ resolve, reject });
      this.pending.set(modelId, list);
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
    });
  }

  /** Serves `endpoints` for a model now, as if it had been ready all along. */
  serveNow(modelId: string, endpoints: readonly Endpoint[]): void {
    this.readyNow.set(modelId, endpoints);
  }

  /** Takes a model out of rotation, as the local backend does with a runtime that refuses connections. */
  takeOut(modelId: string): void {
    this.readyNow.delete(modelId);
  }

  makeReady(modelId: string): void {
    this.readyNow.set(modelId, this.later[modelId] ?? []);
    for (const waiter of this.pending.get(modelId) ?? []) waiter.resolve();
    this.pending.delete(modelId);
  }
}

describe("proxying", () => {
  let fake: FakeRuntime;
  let router: RouterHandle;
  beforeEach(async () => {
    fake = await fakeRuntime("tiny");
    router = await startRouter(new StaticBackend([{ modelId: "tiny", endpoints: [endpoint(fake)] }, { modelId: "microsoft/phi-2", endpoints: [endpoint(fake)] }]));
  });

  it("forwards the body bytes exactly as the client sent them, model_id included", async () => {
    const raw = '{ "prompt" : "Hi\\u0021",   "model_id": null, "temperature": 0.70, "extra": [1,2] }';
    const response = await post(`${router.url}/generate`, raw);
    expect(response.status).toBe(200);
    expect(await jsonOf(response)).toEqual({ response: "tiny:Hi!", finish_reason: "stop", usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } });
    const seen = fake.seen.find((request) => request.url === "/generate")!;
    expect(seen.body.toString("utf8")).toBe(raw);
  });

  it("routes a model id with a slash and never forwards the API key", async () => {
    const response = await post(`${router.url}/chat`, { messages: [{ role: "user", content: "x" }], model_id: "microsoft/phi-2" }, { authorization: "Bearer secret" });
    expect(response.status).toBe(200);
    const seen = fake.seen.find((request) => request.url === "/chat")!;
    expect(seen.headers.authorization).toBeUndefined();
    expect(seen.headers["x-request-id"]).toBeTruthy();
  });

  it("streams SSE byte for byte", async () => {
    const response = await post(`${router.url}/generate`, { prompt: "x", stream: true });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
    expect(await response.text()).toBe("data: Hel\n\ndata: lo\n\ndata:  world\n\ndata: [DONE]\n\n");
  });

  it("answers 404 with a detail for an unknown model", async () => {
    const response = await post(`${router.url}/generate`, { prompt: "x", model_id: "nope/nope" });
    expect(response.status).toBe(404);
    expect((await jsonOf(response)).detail).toMatch(/nope\/nope.*not available/);
    const openai = await post(`${router.url}/v1/completions`, { prompt: "x", model: "gpt-4" });
    expect(openai.status).toBe(404);
  });

  it("retries once on another endpoint when the first fails before answering", async () => {
    const dead = await fakeRuntime("dead");
    await dead.close();
    const backend = new StaticBackend([{ modelId: "m", endpoints: [endpoint(dead), endpoint(fake)] }]);
    const twoEndpoints = await startRouter(backend);
    // Ties go round-robin: of two requests one is sent to the dead endpoint first, and retried.
    for (let i = 0; i < 2; i++) {
      const response = await post(`${twoEndpoints.url}/generate`, { prompt: "p" });
      expect(response.status).toBe(200);
      expect((await jsonOf(response)).response).toBe("tiny:p");
    }
    const metrics = await (await fetch(`${twoEndpoints.url}/metrics`)).text();
    expect(metrics).toMatch(/corral_router_upstream_retries_total\{model="m"\} 1/);
    expect(metrics).toMatch(/corral_router_upstream_errors_total\{model="m",phase="connect"\} 1/);
  });

  it("answers 503 when the retry fails as well", async () => {
    fake.failures.push("reset", "reset");
    const response = await post(`${router.url}/generate`, { prompt: "p" });
    expect(response.status).toBe(503);
    expect(response.headers.get("retry-after")).toBe("5");
    expect((await jsonOf(response)).detail).toMatch(/failed before answering/);
  });

  it("ends a stream with the documented error event when the runtime fails after the first byte", async () => {
    fake.failures.push("midstream");
    const response = await post(`${router.url}/generate`, { prompt: "x", stream: true });
    expect(response.status).toBe(200);
    expect(await response.text()).toBe('data: Hel\n\nevent: error\ndata: {"detail":"model tiny: the runtime failed while streaming"}\n\ndata: [DONE]\n\n');
  });

  it("aborts the upstream request when the client disconnects", async () => {
    fake.eventDelayMs = 200;
    fake.events = Array.from({ length: 50 }, (_, i) => `t${i}`);
    const controller = new AbortController();
    const response = await fetch(`${router.url}/generate`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: "x", stream: true }),
      signal: controller.signal,
    });
    const reader = response.body!.getReader();
    await reader.read();
    expect(fake.active).toBe(1);
    controller.abort();
    await waitFor(() => fake.active === 0 && fake.aborted === 1, { message: "timed out waiting for the runtime to see the abort", timeoutMs: 5000, intervalMs: 10 });
  });

  it("with --routing least-load sends each endpoint its fair share: the one with fewer requests in flight first", async () => {
    const other = await fakeRuntime("other");
    for (const f of [fake, other]) {
      f.eventDelayMs = 100;
      f.events = ["a", "b", "c"];
    }
    const balanced = await startRouter(new StaticBackend([{ modelId: "m", endpoints: [endpoint(fake), endpoint(other)] }]), { routing: "least-load" });
    await Promise.all([1, 2, 3, 4].map(async () => (await post(`${balanced.url}/generate`, { prompt: "x", stream: true })).text()));
    const streams = (f: FakeRuntime) => f.seen.filter((request) => request.url === "/generate").length;
    expect(streams(fake)).toBe(2);
    expect(streams(other)).toBe(2);
  });

  it("counts requests, tokens and time to first token in /metrics", async () => {
    await post(`${router.url}/generate`, { prompt: "x" });
    await (await post(`${router.url}/generate`, { prompt: "x", stream: true })).text();
    const metrics = await (await fetch(`${router.url}/metrics`)).text();
    expect(metrics).toMatch(/corral_router_requests_total\{route="\/generate",method="POST",status="200",model="tiny"\} 2/);
    expect(metrics).toMatch(/corral_router_tokens_total\{model="tiny",kind="completion"\} 2/);
    expect(metrics).toMatch(/corral_router_time_to_first_token_seconds_count\{route="\/generate",model="tiny"\} 1/);
    expect(metrics).toMatch(/corral_router_stream_events_total\{model="tiny"\} 4/);
  });
});

describe("bad input", () => {
  let fake: FakeRuntime;
  let router: RouterHandle;
  beforeEach(async () => {
    fake = await fakeRuntime("tiny");
    router = await startRouter(new StaticBackend([{ modelId: "tiny", endpoints: [endpoint(fake)] }]), { bodyLimitBytes: 2048, maxBatchPrompts: 3 });
  });

  const cases: [string, string, unknown, number, RegExp][] = [
    ["invalid JSON", "/generate", "{not json", 400, /not valid JSON/],
    ["an empty body", "/generate", "", 400, /JSON object/],
    ["a JSON array", "/generate", "[1]", 400, /JSON object/],
    ["a missing prompt", "/generate", { temperature: 0.5 }, 400, /^prompt: field required/],
    ["a string temperature", "/generate", { prompt: "x", temperature: "hot" }, 400, /^temperature: /],
    ["a negative temperature", "/generate", { prompt: "x", temperature: -1 }, 400, /^temperature: /],
    ["a huge temperature", "/generate", { prompt: "x", temperature: 1e308 }, 400, /^temperature: must be <= 2$/],
    ["a temperature above 2", "/chat", { messages: [{ role: "user", content: "x" }], temperature: 2.01 }, 400, /^temperature: must be <= 2$/],
    ["a huge repetition_penalty", "/generate", { prompt: "x", repetition_penalty: 1e308 }, 400, /^repetition_penalty: must be <= 2$/],
    ["a batch repetition_penalty above 2", "/generate/batch", { prompts: ["a"], repetition_penalty: 3 }, 400, /^repetition_penalty: must be <= 2$/],
    ["an OpenAI temperature above 2", "/v1/chat/completions", { messages: [{ role: "user", content: "x" }], temperature: 5 }, 400, /^temperature: /],
    ["an OpenAI repetition_penalty above 2", "/v1/completions", { prompt: "x", repetition_penalty: 1e308 }, 400, /^repetition_penalty: must be <= 2$/],
    ["top_p above 1", "/generate", { prompt: "x", top_p: 1.5 }, 400, /^top_p: /],
    ["a fractional top_k", "/generate", { prompt: "x", top_k: 2.5 }, 400, /^top_k: /],
    ["max_length above the limit", "/generate", { prompt: "x", max_length: 100000 }, 400, /^max_length: /],
    ["a numeric model_id", "/generate", { prompt: "x", model_id: 7 }, 400, /^model_id: /],
    ["a string stream flag", "/generate", { prompt: "x", stream: "yes" }, 400, /^stream: /],
    ["a bad chat role", "/chat", { messages: [{ role: "wizard", content: "x" }] }, 400, /^messages\/0\/role: must be one of/],
    ["no messages", "/chat", { messages: [] }, 400, /^messages: /],
    ["a prompt list of numbers", "/generate/batch", { prompts: [1, 2] }, 400, /^prompts\/0: /],
    ["too many prompts", "/generate/batch", { prompts: ["a", "b", "c", "d"] }, 413, /at most 3 prompts/],
    ["a body over the limit", "/generate", { prompt: "x".repeat(4096) }, 413, /larger than the limit/],
    ["OpenAI n > 1", "/v1/completions", { prompt: "x", n: 2 }, 400, /^n: /],
    ["OpenAI messages missing", "/v1/chat/completions", { model: "tiny" }, 400, /^messages: field required/],
    ["a load without model_id", "/models/load", {}, 400, /^model_id: field required/],
    ["an unload with a numeric model_id", "/models/unload", { model_id: 3 }, 400, /model_id/],
    ["a __proto__ key", "/generate", '{"prompt":"x","__proto__":{"admin":true}}', 400, /^request body: the key "__proto__" is not allowed/],
    ["an escaped __proto__ key", "/chat", '{"messages":[{"role":"user","content":"x","\\u005f_proto__":{}}]}', 400, /^request body: the key "__proto__" is not allowed/],
    ["invalid JSON mentioning proto", "/generate", '{"prompt":"proto",', 400, /^request body is not valid JSON: /],
  ];

  it.each(cases)("rejects %s before proxying", async (_name, path, body, status, detail) => {
    const response = await post(`${router.url}${path}`, body);
    expect(response.status).toBe(status);
    const json = (await jsonOf(response)) as { detail: string };
    expect(json.detail).toMatch(detail);
    expect(fake.seen.filter((request) => request.method === "POST")).toHaveLength(0);
  });

  it("accepts __proto__ and proto as text, not as a key", async () => {
    const response = await post(`${router.url}/generate`, { prompt: "__proto__ and \u0070roto", model_id: null });
    expect(response.status).toBe(200);
  });

  it("never answers 5xx to odd bodies on any route", async () => {
    const bodies = ["null", '"text"', "123", "true", "{}", '{"prompt":{}}', '{"__proto__":{"polluted":1},"prompt":"x"}', '{"constructor":{"prototype":{}}}',
      '{"prompt":"x","max_length":1e400}', '{"prompt":"\\ud800"}', '{"messages":[null]}', '{"prompts":[[[]]]}', '{"model_id":""}', `[${"[".repeat(500)}${"]".repeat(500)}]`];
    const routes = ["/generate", "/chat", "/generate/batch", "/v1/completions", "/v1/chat/completions", "/models/load", "/models/unload"];
    for (const route of routes) {
      for (const body of bodies) {
        const response = await post(`${router.url}${route}`, body);
        expect(response.status, `${route} ${body}`).toBeLessThan(500);
        expect(typeof (await jsonOf(response)).detail === "string" || response.status === 200, `${route} ${body}`).toBe(true);
      }
    }
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it("answers 415 for a body that is not JSON", async () => {
    const response = await fetch(`${router.url}/generate`, { method: "POST", headers: { "content-type": "text/plain" }, body: "hi" });
    expect(response.status).toBe(415);
    expect((await jsonOf(response)).detail).toMatch(/application\/json/);
  });

  it("answers 404 with a detail for an unknown route", async () => {
    const response = await fetch(`${router.url}/nope`);
    expect(response.status).toBe(404);
    expect((await jsonOf(response)).detail).toBe("no route for GET /nope");
  });
});

describe("models", () => {
  it("waits (bounded) for a model that is not ready, then proxies", async () => {
    const fake = await fakeRuntime("late");
    const backend = new ManualBackend(["late"], { late: [endpoint(fake)] });
    const router = await startRouter(backend, { readyWaitSeconds: 10 });
    const pending = post(`${router.url}/generate`, { prompt: "x", model_id: "late" });
    await new Promise((resolve) => setTimeout(resolve, 100));
    backend.makeReady("late");
    const response = await pending;
    expect(response.status).toBe(200);
    expect((await jsonOf(response)).response).toBe("late:x");
  });

  it("a request whose runtime is gone (nothing listening) waits for the restart, then proxies", async () => {
    const dead = await fakeRuntime("dead");
    await dead.close();
    const restarted = await fakeRuntime("restarted");
    const backend = new (class extends ManualBackend {
      override reportFailure(): void {
        this.takeOut("m");
        setTimeout(() => this.makeReady("m"), 100);
      }
    })(["m"], { m: [endpoint(restarted)] });
    backend.serveNow("m", [endpoint(dead)]);
    const router = await startRouter(backend, { readyWaitSeconds: 10 });
    const response = await post(`${router.url}/generate`, { prompt: "x" });
    expect(response.status).toBe(200);
    expect((await jsonOf(response)).response).toBe("restarted:x");
  });

  it("answers 503 with Retry-After past the bound", async () => {
    const backend = new ManualBackend(["slow"], {});
    const router = await startRouter(backend, { readyWaitSeconds: 0.2 });
    const response = await post(`${router.url}/generate`, { prompt: "x" });
    expect(response.status).toBe(503);
    expect(response.headers.get("retry-after")).toBe("5");
    expect((await jsonOf(response)).detail).toMatch(/slow is not ready after 0.2 s/);
  });

  it("answers 503 with the reason when a model cannot start", async () => {
    const backend = new ManualBackend(["broken"], {});
    backend.failWith = "model broken could not be started: no such file";
    const router = await startRouter(backend);
    const response = await post(`${router.url}/generate`, { prompt: "x" });
    expect(response.status).toBe(503);
    expect((await jsonOf(response)).detail).toBe("model broken could not be started: no such file");
  });

  it("a load refused because every loaded model is busy is 503 with Retry-After; another failure has none", async () => {
    const busy = new ManualBackend(["a", "b"], {});
    busy.load = (modelId: string) => Promise.reject(new ModelsBusyError(modelId, `model ${modelId} cannot start now: all loaded models are busy`));
    const router = await startRouter(busy);
    const refused = await post(`${router.url}/models/load`, { model_id: "b" });
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toMatch(/^\d+$/);
    expect((await jsonOf(refused)).detail).toBe("model b cannot start now: all loaded models are busy");
    const broken = new ManualBackend(["a", "b"], {});
    broken.load = (modelId: string) => Promise.reject(new ModelStartError(modelId, `model ${modelId} could not be started: no such file`));
    const failed = await post(`${(await startRouter(broken)).url}/models/load`, { model_id: "b" });
    expect(failed.status).toBe(503);
    expect(failed.headers.get("retry-after")).toBeNull();
  });

  it("answers 504 when /models/load times out", async () => {
    const backend = new ManualBackend(["a", "b"], {});
    const router = await startRouter(backend, { loadTimeoutSeconds: 1 });
    const response = await post(`${router.url}/models/load`, { model_id: "b" });
    expect(response.status).toBe(504);
    expect((await jsonOf(response)).detail).toMatch(/b is not ready after 1 s/);
  });

  it("loads, reports, lists and unloads", async () => {
    const fake = await fakeRuntime("a");
    const router = await startRouter(new StaticBackend([{ modelId: "a", endpoints: [endpoint(fake)] }, { modelId: "org/b", endpoints: [endpoint(fake)] }]));
    let response = await post(`${router.url}/models/load`, { model_id: "org/b" });
    expect(response.status).toBe(200);
    expect(await jsonOf(response)).toMatchObject({ model_id: "org/b", state: "ready", current: true, context_size: 512, parallel: 2, defaults: { temperature: 0.7 }, endpoints: 1 });
    response = await fetch(`${router.url}/models/current`);
    expect(await jsonOf(response)).toMatchObject({ model_id: "org/b", state: "ready" });
    response = await fetch(`${router.url}/models/available`);
    const available = (await jsonOf(response)) as { current: string; models: { model_id: string; state: string; current: boolean }[] };
    expect(available.current).toBe("org/b");
    expect(available.models.map((model) => [model.model_id, model.current])).toEqual([
      ["a", false],
      ["org/b", true],
    ]);
    response = await fetch(`${router.url}/v1/models`);
    expect(((await jsonOf(response)) as { data: { id: string }[] }).data.map((model) => model.id)).toEqual(["a", "org/b"]);
    response = await fetch(`${router.url}/models/unload`, { method: "POST" });
    expect(response.status).toBe(200);
    expect(await jsonOf(response)).toMatchObject({ model_id: "org/b", state: "not_loaded" });
    response = await fetch(`${router.url}/models/current`);
    expect(await jsonOf(response)).toMatchObject({ model_id: null, state: "not_loaded" });
    response = await fetch(`${router.url}/models/unload`, { method: "POST" });
    expect(response.status).toBe(400);
    expect((await jsonOf(response)).detail).toBe("no model is loaded");
    response = await post(`${router.url}/generate`, { prompt: "x" });
    expect(response.status).toBe(400);
    expect((await jsonOf(response)).detail).toMatch(/no model is loaded/);
    response = await post(`${router.url}/models/load`, { model_id: "zzz" });
    expect(response.status).toBe(404);
  });
});

describe("system endpoints", () => {
  it("reports health, system info and docs", async () => {
    const fake = await fakeRuntime("tiny");
    const router = await startRouter(new StaticBackend([{ modelId: "tiny", endpoints: [endpoint(fake)] }]), { rateLimitPoints: 60 });
    let response = await fetch(`${router.url}/health`);
    expect(response.status).toBe(200);
    expect(await jsonOf(response)).toEqual({
      status: "ok",
      version: expect.any(String),
      components: { router: "ok", backend: { kind: "static", state: "ok" }, rate_limiter: "memory", current_model: { model_id: "tiny", state: "ready" } },
    });
    expect(response.headers.get("ratelimit-limit")).toBeNull();
    response = await fetch(`${router.url}/system/info`);
    const info = (await jsonOf(response)) as Record<string, any>;
    expect(info.router).toMatchObject({ backend: "static", auth: false, rate_limit: { store: "memory", points: 60, burst: 10 } });
    expect(info.host.cpu_count).toBeGreaterThan(0);
    expect(info.host.memory_total_bytes).toBeGreaterThan(0);
    expect(info.models[0]).toMatchObject({ model_id: "tiny", state: "ready", current: true, endpoints: [{ id: "tiny", in_flight: 0, info: { model_id: "tiny", slots_busy: 0 } }] });
    expect(info.requests.total).toBeGreaterThanOrEqual(1);
    response = await fetch(`${router.url}/docs/json`);
    const openapi = (await jsonOf(response)) as { paths: Record<string, unknown> };
    expect(Object.keys(openapi.paths)).toEqual(
      expect.arrayContaining(["/generate", "/chat", "/generate/batch", "/models/load", "/models/current", "/models/available", "/models/unload", "/system/info", "/health", "/v1/chat/completions", "/v1/completions", "/v1/models"]),
    );
    response = await fetch(`${router.url}/docs`);
    expect(response.status).toBe(200);
    expect(await response.text()).toMatch(/swagger/i);
  });

  it("lets a running stream finish when closing", async () => {
    const fake = await fakeRuntime("tiny");
    fake.eventDelayMs = 100;
    const router = await run(testRouterConfig({ rateLimitPoints: 0, drainSeconds: 5 }), { backend: new StaticBackend([{ modelId: "tiny", endpoints: [endpoint(fake)] }]) });
    const stream = await post(`${router.url}/generate`, { prompt: "x", stream: true });
    const closing = router.close();
    // The stream that was running finishes within the drain bound.
    expect(await stream.text()).toMatch(/data: \[DONE\]\n\n$/);
    await closing;
  });
});

describe("API keys", () => {
  it("answers 401 without a valid key and lets only the probe through", async () => {
    const fake = await fakeRuntime("tiny");
    const router = await startRouter(new StaticBackend([{ modelId: "tiny", endpoints: [endpoint(fake)] }]), { apiKeys: ["k-one", "k-two"] });
    let response = await post(`${router.url}/generate`, { prompt: "x" });
    expect(response.status).toBe(401);
    expect(response.headers.get("www-authenticate")).toMatch(/^Bearer/);
    expect((await jsonOf(response)).detail).toMatch(/missing API key/);
    response = await post(`${router.url}/generate`, { prompt: "x" }, { authorization: "Bearer k-three" });
    expect(response.status).toBe(401);
    expect((await jsonOf(response)).detail).toBe("invalid API key");
    response = await post(`${router.url}/generate`, { prompt: "x" }, { authorization: "Bearer k-two" });
    expect(response.status).toBe(200);
    response = await fetch(`${router.url}/models/current`);
    expect(response.status).toBe(401);
    expect((await fetch(`${router.url}/health`)).status).toBe(200);
    // Metrics and docs need a key like any route (router/auth.test.ts: --metrics-port).
    for (const path of ["/metrics", "/docs", "/docs/json"]) {
      expect((await fetch(`${router.url}${path}`)).status, path).toBe(401);
      expect((await fetch(`${router.url}${path}`, { headers: { authorization: "Bearer k-one" } })).status, path).toBe(200);
    }
  });
});

describe("rate limits (memory)", () => {
  it("lets a burst of 10 through, refuses the 11th with 429, Retry-After and RateLimit headers", async () => {
    const fake = await fakeRuntime("tiny");
    const router = await startRouter(new StaticBackend([{ modelId: "tiny", endpoints: [endpoint(fake)] }]), { rateLimitPoints: 60 });
    const statuses: number[] = [];
    let last: Response | undefined;
    for (let i = 0; i < 12; i++) {
      last = await post(`${router.url}/generate`, { prompt: "x" });
      statuses.push(last.status);
      if (i === 0) expect(last.headers.get("ratelimit-remaining")).toBe("9");
    }
    expect(statuses).toEqual([...Array(10).fill(200), 429, 429]);
    expect(last!.headers.get("retry-after")).toBe("1");
    expect(last!.headers.get("ratelimit-limit")).toBe("10");
    expect(last!.headers.get("ratelimit-remaining")).toBe("0");
    expect(last!.headers.get("ratelimit-policy")).toBe("10;w=10");
    expect((await jsonOf(last!)).detail).toMatch(/rate limit exceeded/);
    // Probes are exempt.
    expect((await fetch(`${router.url}/health`)).status).toBe(200);
    const metrics = await (await fetch(`${router.url}/metrics`)).text();
    expect(metrics).toMatch(/corral_router_ratelimit_rejections_total 2/);
  });

  it("trusts X-Forwarded-For only from configured proxies", async () => {
    const fake = await fakeRuntime("tiny");
    const backend = () => new StaticBackend([{ modelId: "tiny", endpoints: [endpoint(fake)] }]);
    const untrusting = await startRouter(backend(), { rateLimitPoints: 1, rateLimitDuration: 60, rateLimitBurst: 1 });
    expect((await post(`${untrusting.url}/generate`, { prompt: "x" }, { "x-forwarded-for": "10.0.0.1" })).status).toBe(200);
    // A different forwarded address does not make a different client.
    expect((await post(`${untrusting.url}/generate`, { prompt: "x" }, { "x-forwarded-for": "10.0.0.2" })).status).toBe(429);

    const trusting = await startRouter(backend(), { rateLimitPoints: 1, rateLimitDuration: 60, rateLimitBurst: 1, trustedProxies: ["127.0.0.1"] });
    expect((await post(`${trusting.url}/generate`, { prompt: "x" }, { "x-forwarded-for": "10.0.0.1" })).status).toBe(200);
    expect((await post(`${trusting.url}/generate`, { prompt: "x" }, { "x-forwarded-for": "10.0.0.2" })).status).toBe(200);
    expect((await post(`${trusting.url}/generate`, { prompt: "x" }, { "x-forwarded-for": "10.0.0.1" })).status).toBe(429);
  });

  it("limits per API key when auth is on", async () => {
    const fake = await fakeRuntime("tiny");
    const router = await startRouter(new StaticBackend([{ modelId: "tiny", endpoints: [endpoint(fake)] }]), {
      apiKeys: ["alpha", "beta"],
      rateLimitPoints: 1,
      rateLimitDuration: 60,
      rateLimitBurst: 1,
    });
    expect((await post(`${router.url}/generate`, { prompt: "x" }, { authorization: "Bearer alpha" })).status).toBe(200);
    expect((await post(`${router.url}/generate`, { prompt: "x" }, { authorization: "Bearer alpha" })).status).toBe(429);
    expect((await post(`${router.url}/generate`, { prompt: "x" }, { authorization: "Bearer beta" })).status).toBe(200);
  });
});

// eslint-disable-next-line @typescript-eslint/no-explicit-any
async function jsonOf(response: Response): Promise<any> {
  return await response.json();
}

describe("prefix routing", () => {
  it("with --routing prefix every turn of a conversation goes to one runtime, and conversations spread over the runtimes", async () => {
    const fakes = [await fakeRuntime("left"), await fakeRuntime("right")];
    const backend = new StaticBackend([{ modelId: "m", endpoints: fakes.map(endpoint) }]);
    const router = await startRouter(backend, { routing: "prefix" });
    const servedBy = async (messages: { role: string; content: string }[]) => ((await jsonOf(await post(`${router.url}/chat`, { messages }))) as { from: string }).from;
    const used = new Set<string>();
    for (let conversation = 0; conversation < 12; conversation++) {
      const history = [
        { role: "system", content: "You are terse." },
        { role: "user", content: `question ${conversation}` },
      ];
      const first = await servedBy(history);
      for (let turn = 1; turn < 4; turn++) {
        history.push({ role: "assistant", content: `answer ${turn}` }, { role: "user", content: `follow-up ${turn}` });
        expect(await servedBy(history)).toBe(first);
      }
      used.add(first);
    }
    expect(used).toEqual(new Set(["left", "right"]));
    const metrics = await (await fetch(`${router.url}/metrics`)).text();
    expect(metrics).toMatch(/corral_router_prefix_picks_total\{outcome="hit"\} 48/);
  });

  it("refuses an unknown strategy and a load factor that is not above 1 at start-up", () => {
    expect(() => testRouterConfig({ routing: "random" as never })).toThrow(/routing/);
    expect(() => testRouterConfig({ routingLoadFactor: 1 })).toThrow(/routingLoadFactor|routing-load-factor/);
  });
});
