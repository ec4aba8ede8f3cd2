// A streaming request that must wait (scale from zero, a download, a load, a full model) gets its
// SSE head at once and comment lines saying why it waits; the runtime's stream then continues the
// same response. The backend is a stub whose status the tests script; the runtimes are fakes.

import http from "node:http";
import type { AddressInfo } from "node:net";
import { createParser, type EventSourceMessage } from "eventsource-parser";
import { afterEach, describe, expect, it } from "vitest";
import { StaticBackend } from "../../router/backends/static.js";
import { ModelStartError, type Endpoint, type ModelProgress, type ModelState, type ModelStatus } from "../../router/backends/types.js";
import type { RouterConfig } from "../../router/config.js";
import { waitStage } from "../../router/routes/forward.js";
import { run, type RouterHandle } from "../../router/run.js";
import { testRouterConfig } from "../helpers/config.js";
import { waitFor } from "../helpers/wait.js";
import { FakeRuntime } from "./fake-runtime.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A backend whose model starts when a test says so, reporting the state and progress the test scripts. */
class ScriptedBackend extends StaticBackend {
  state: ModelState = "starting";
  progress: ModelProgress | null = null;
  private ready: readonly Endpoint[] = [];
  private pending: { resolve: () => void; reject: (error: unknown) => void }[] = [];
  /** Set: ensureReady fails at once with this reason. */
  failWith: string | undefined;

  constructor(private readonly later: readonly Endpoint[]) {
    super([{ modelId: "m", endpoints: [] }]);
  }

  override readyEndpoints(): readonly Endpoint[] {
    return this.ready;
  }

  override status(modelId: string): ModelStatus {
    const ready = this.ready.length > 0;
    return { model_id: modelId, state: ready ? "ready" : this.state, progress: ready ? null : this.progress, message: null, endpoints: this.ready };
  }

  override ensureReady(modelId: string, signal: AbortSignal): Promise<void> {
    if (this.failWith) return Promise.reject(new ModelStartError(modelId, this.failWith));
    if (this.ready.length > 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject });
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
    });
  }

  /** Requests waiting in ensureReady. */
  get waiting(): number {
    return this.pending.length;
  }

  makeReady(): void {
    this.ready = this.later;
    for (const waiter of this.pending.splice(0)) waiter.resolve();
  }

  fail(reason: string): void {
    this.state = "failed";
    for (const waiter of this.pending.splice(0)) waiter.reject(new ModelStartError("m", reason));
  }
}

async function startRouter(backend: StaticBackend, overrides: Partial<RouterConfig> = {}): Promise<RouterHandle> {
  const handle = await run(testRouterConfig({ rateLimitPoints: 0, ...overrides }), { backend });
  cleanups.push(() => handle.close());
  return handle;
}

async function fakeRuntime(): Promise<FakeRuntime> {
  const fake = await new FakeRuntime("m").start();
  cleanups.push(() => fake.close());
  return fake;
}

/** A runtime that answers every POST with one status and JSON body. */
async function answeringRuntime(status: number, body: unknown): Promise<Endpoint> {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      const text = JSON.stringify(body);
      res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text), "retry-after": "7" });
      res.end(text);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  return { id: "answering", url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

/** Reads a response body as it arrives: `raw` grows while the test goes on. */
class Body {
  raw = "";
  readonly done: Promise<void>;

  constructor(response: Response) {
    this.done = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) this.raw += decoder.decode(chunk, { stream: true });
    })();
  }

  /** What a spec-compliant SSE parser makes of it: comments are not events. */
  events(): EventSourceMessage[] {
    const events: EventSourceMessage[] = [];
    const parser = createParser({ onEvent: (event) => events.push(event) });
    parser.feed(this.raw);
    return events;
  }

  /** The comment lines, in order, without the colon. */
  comments(): string[] {
    return [...this.raw.matchAll(/^: ?(.*)$/gm)].map((match) => match[1]!);
  }
}

async function post(url: string, body: unknown): Promise<Response> {
  return await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
}

describe("a streaming request held while its model starts", () => {
  it("gets the SSE head at once, comment lines with the stage and progress, then the runtime's stream", async () => {
    const fake = await fakeRuntime();
    const backend = new ScriptedBackend([{ id: "m-1", url: fake.url }]);
    const router = await startRouter(backend);
    const response = await post(`${router.url}/generate`, { prompt: "x", stream: true });
    // The head came before the model was ready.
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
    expect(response.headers.get("x-request-id")).toBeTruthy();
    const body = new Body(response);
    await waitFor(() => body.raw.includes(": scheduling\n\n"), { message: "the scheduling comment" });

    backend.state = "downloading";
    backend.progress = { bytes_done: 420, bytes_total: 1000, fraction: 0.42 };
    await waitFor(() => body.raw.includes(": downloading 42%\n\n"), { message: "the download comment" });
    backend.progress = { bytes_done: 900, bytes_total: 1000, fraction: 0.9 };
    await waitFor(() => body.raw.includes(": downloading 90%\n\n"), { message: "the download's progress" });
    backend.state = "loading";
    backend.progress = null;
    await waitFor(() => body.raw.includes(": loading\n\n"), { message: "the loading comment" });
    expect(body.raw).not.toContain("data:");

    backend.makeReady();
    await body.done;
    expect(body.comments()).toEqual(["scheduling", "downloading 42%", "downloading 90%", "loading"]);
    // Every comment precedes the first data event, and a parser sees exactly the runtime's stream.
    expect(body.raw.lastIndexOf(": loading")).toBeLessThan(body.raw.indexOf("data:"));
    expect(body.raw.endsWith("data: Hel\n\ndata: lo\n\ndata:  world\n\ndata: [DONE]\n\n")).toBe(true);
    expect(body.events().map((event) => event.data)).toEqual(["Hel", "lo", " world", "[DONE]"]);
  });

  it("holds OpenAI streams the same way", async () => {
    const fake = await fakeRuntime();
    const backend = new ScriptedBackend([{ id: "m-1", url: fake.url }]);
    const router = await startRouter(backend);
    const response = await post(`${router.url}/v1/completions`, { model: "m", prompt: "x", stream: true });
    expect(response.status).toBe(200);
    const body = new Body(response);
    await waitFor(() => body.raw.includes(": scheduling\n\n"));
    backend.makeReady();
    await body.done;
    expect(body.events().map((event) => event.data)).toEqual(["Hel", "lo", " world", "[DONE]"]);
  });

  it("turns a runtime's error answer after the head into the SSE error event and [DONE]", async () => {
    const busy = await answeringRuntime(429, { detail: "runtime busy: 8 requests queued" });
    const backend = new ScriptedBackend([busy]);
    const router = await startRouter(backend);
    const response = await post(`${router.url}/generate`, { prompt: "x", stream: true });
    expect(response.status).toBe(200);
    const body = new Body(response);
    await waitFor(() => body.raw.includes(": scheduling\n\n"));
    backend.makeReady();
    await body.done;
    expect(body.raw.endsWith(`event: error\ndata: ${JSON.stringify({ detail: "runtime busy: 8 requests queued" })}\n\ndata: [DONE]\n\n`)).toBe(true);
    expect(body.events().map(({ event, data }) => ({ event, data }))).toEqual([
      { event: "error", data: JSON.stringify({ detail: "runtime busy: 8 requests queued" }) },
      { event: undefined, data: "[DONE]" },
    ]);
    // Counted as the 429 it was, though the status line said 200.
    await waitFor(async () => /corral_router_requests_total\{[^}]*status="429"[^}]*\} 1/.test(await (await fetch(`${router.url}/metrics`)).text()), {
      message: "the request counted as 429",
    });
  });

  it("ends with the SSE error event when the model fails while the request waits", async () => {
    const backend = new ScriptedBackend([]);
    const router = await startRouter(backend);
    const response = await post(`${router.url}/generate`, { prompt: "x", stream: true });
    const body = new Body(response);
    await waitFor(() => body.raw.includes(": scheduling\n\n"));
    backend.fail("model m failed: not a GGUF file");
    await body.done;
    expect(response.status).toBe(200);
    expect(body.events().map(({ event, data }) => ({ event, data }))).toEqual([
      { event: "error", data: JSON.stringify({ detail: "model m failed: not a GGUF file" }) },
      { event: undefined, data: "[DONE]" },
    ]);
  });

  it("ends with the SSE error event when the wait times out", async () => {
    const backend = new ScriptedBackend([]);
    const router = await startRouter(backend, { readyWaitSeconds: 0.5 });
    const response = await post(`${router.url}/generate`, { prompt: "x", stream: true });
    const body = new Body(response);
    await body.done;
    expect(body.comments()[0]).toBe("scheduling");
    const [error, done] = body.events();
    expect(error!.event).toBe("error");
    expect(JSON.parse(error!.data).detail).toMatch(/model m is not ready after 0.5 s \(starting\)/);
    expect(done!.data).toBe("[DONE]");
  });

  it("keeps its status code when the wait fails at once, before any head", async () => {
    const backend = new ScriptedBackend([]);
    backend.failWith = "model m failed: out of memory";
    const router = await startRouter(backend);
    const response = await post(`${router.url}/generate`, { prompt: "x", stream: true });
    expect(response.status).toBe(503);
    expect(response.headers.get("content-type")).toMatch(/^application\/json/);
    expect(response.headers.get("retry-after")).toBe("5");
    expect((await response.json()) as unknown).toEqual({ detail: "model m failed: out of memory" });
  });

  it("writes a heartbeat comment at least every 5 s while nothing changes", async () => {
    const fake = await fakeRuntime();
    const backend = new ScriptedBackend([{ id: "m-1", url: fake.url }]);
    const router = await startRouter(backend);
    const started = Date.now();
    const response = await post(`${router.url}/generate`, { prompt: "x", stream: true });
    const body = new Body(response);
    await waitFor(() => body.comments().length >= 2, { timeoutMs: 7000, message: "a second comment" });
    expect(Date.now() - started).toBeLessThan(6000);
    expect(body.comments()).toEqual(["scheduling", "scheduling"]);
    backend.makeReady();
    await body.done;
    expect(body.events().map((event) => event.data)).toEqual(["Hel", "lo", " world", "[DONE]"]);
  }, 15_000);

  it("says its place in the queue while the model is saturated", async () => {
    const fake = await fakeRuntime();
    fake.eventDelayMs = 200;
    // One sequence and no room beyond it: a second request waits in the router's queue.
    const backend = new StaticBackend([{ modelId: "m", endpoints: [{ id: "m-1", url: fake.url, capacity: 1 }] }]);
    const router = await startRouter(backend, { endpointQueue: 0 });
    const first = new Body(await post(`${router.url}/generate`, { prompt: "a", stream: true }));
    await waitFor(() => first.raw.includes("data: Hel"));
    const response = await post(`${router.url}/generate`, { prompt: "b", stream: true });
    expect(response.status).toBe(200);
    const second = new Body(response);
    await waitFor(() => second.raw.includes(": queued 1\n\n"), { message: "the queue comment" });
    await Promise.all([first.done, second.done]);
    expect(second.comments()).toEqual(["queued 1"]);
    expect(second.events().map((event) => event.data)).toEqual(["Hel", "lo", " world", "[DONE]"]);
  });
});

describe("a non-streaming request held while its model starts", () => {
  it("waits silently and gets the plain JSON answer", async () => {
    const fake = await fakeRuntime();
    const backend = new ScriptedBackend([{ id: "m-1", url: fake.url }]);
    const router = await startRouter(backend);
    const answer = post(`${router.url}/generate`, { prompt: "x" });
    await waitFor(() => backend.waiting === 1, { message: "the request waiting for the model" });
    backend.makeReady();
    const response = await answer;
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^application\/json/);
    expect(await response.text()).toBe(JSON.stringify({ response: "m:x", finish_reason: "stop", usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } }));
  });

  it("still answers 503 with Retry-After when the model fails", async () => {
    const backend = new ScriptedBackend([]);
    const router = await startRouter(backend);
    const answer = post(`${router.url}/generate`, { prompt: "x" });
    await waitFor(() => backend.waiting === 1, { message: "the request waiting for the model" });
    backend.fail("model m failed: not a GGUF file");
    const response = await answer;
    expect(response.status).toBe(503);
    expect(response.headers.get("retry-after")).toBe("5");
    expect((await response.json()) as unknown).toEqual({ detail: "model m failed: not a GGUF file" });
  });
});

describe("waitStage", () => {
  const status = (state: ModelState, progress: ModelProgress | null = null): ModelStatus => ({ model_id: "m", state, progress, message: null, endpoints: [] });

  it("names the stage, with the download's percentage or size", () => {
    expect(waitStage(status("not_loaded"), undefined)).toBe("scheduling");
    expect(waitStage(status("starting"), undefined)).toBe("scheduling");
    expect(waitStage(status("downloading", { bytes_done: 42, bytes_total: 100, fraction: 0.42 }), undefined)).toBe("downloading 42%");
    expect(waitStage(status("downloading", { bytes_done: 5 * 1024 * 1024, bytes_total: null, fraction: null }), undefined)).toBe("downloading 5.0 MiB");
    expect(waitStage(status("loading", { bytes_done: 1000, bytes_total: 1000, fraction: 0.8 }), undefined)).toBe("loading 80%");
    expect(waitStage(status("loading", null), undefined)).toBe("loading");
    expect(waitStage(status("downloading"), undefined)).toBe("downloading");
    expect(waitStage(status("loading"), undefined)).toBe("loading");
    expect(waitStage(status("restarting"), undefined)).toBe("restarting");
  });

  it("gives the queue position once the model is ready", () => {
    expect(waitStage(status("ready"), 3)).toBe("queued 3");
    expect(waitStage(status("ready"), undefined)).toBe("queued");
    // A model that is not ready says how far it is, whatever the queue.
    expect(waitStage(status("loading"), 3)).toBe("loading");
  });
});
