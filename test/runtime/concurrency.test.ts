import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureTestModel } from "../helpers/test-models.js";
import { info, postJson, startRuntime } from "../helpers/runtime.js";
import { waitFor } from "../helpers/wait.js";
import type { RuntimeHandle } from "../../runtime/run.js";

/** Opens a stream and resolves once its first chunk arrived (the request holds a sequence). */
async function openStream(url: string, body: Record<string, unknown>) {
  const controller = new AbortController();
  const response = await postJson(`${url}/generate`, { ...body, stream: true }, { signal: controller.signal });
  expect(response.status).toBe(200);
  const reader = response.body!.getReader();
  const first = await reader.read();
  expect(first.done).toBe(false);
  const rest = (async () => {
    try {
      for (;;) if ((await reader.read()).done) return;
    } catch {
      // aborted by the test
    }
  })();
  return { abort: () => controller.abort(), rest };
}

async function completionTokens(url: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Number(/^corral_runtime_completion_tokens_total\{[^}]*\} (\d+)/m.exec(text)?.[1] ?? NaN);
}

// The benchmark-shaped model decodes at tens of tokens/s here: slow enough to observe requests
// holding sequences and waiting in the queue.
describe("concurrency: parallel sequences, bounded queue, disconnects", () => {
  let runtime: RuntimeHandle;

  beforeAll(async () => {
    const model = await ensureTestModel("bench", "q8_0");
    runtime = await startRuntime({ model, parallel: 2, maxQueue: 1, contextSize: 512 });
  }, 180_000);
  afterAll(() => runtime?.close());

  it("runs N requests at once, queues one more, and answers 429 beyond that", async () => {
    const url = runtime.url;
    const streams = await Promise.all([openStream(url, { prompt: "one", max_length: 400 }), openStream(url, { prompt: "two", max_length: 400 })]);
    await waitFor(async () => (await info(url)).slots_busy === 2, { message: "timed out waiting for both sequences busy", timeoutMs: 20_000 });

    const queuedController = new AbortController();
    const queued = postJson(`${url}/generate`, { prompt: "three", max_length: 2 }, { signal: queuedController.signal }).catch(() => undefined);
    await waitFor(async () => (await info(url)).queue_depth === 1, { message: "timed out waiting for one request queued", timeoutMs: 20_000 });

    const rejected = await postJson(`${url}/generate`, { prompt: "four", max_length: 2 });
    expect(rejected.status).toBe(429);
    expect(rejected.headers.get("retry-after")).toBe("1");
    expect(((await rejected.json()) as any).detail).toMatch(/busy/);

    queuedController.abort();
    await queued;
    await waitFor(async () => (await info(url)).queue_depth === 0, { message: "timed out waiting for the abandoned request left the queue", timeoutMs: 20_000 });
    for (const stream of streams) stream.abort();
    await waitFor(async () => (await info(url)).slots_busy === 0, { message: "timed out waiting for sequences freed", timeoutMs: 20_000 });
  });

  it("a client that disconnects frees its sequence within a token or two", async () => {
    const url = runtime.url;
    const before = await completionTokens(url);
    const stream = await openStream(url, { prompt: "a long story", max_length: 400 });
    stream.abort();
    await waitFor(async () => (await info(url)).slots_busy === 0, { message: "timed out waiting for sequence freed after disconnect", timeoutMs: 5000 });
    const generated = (await completionTokens(url)) - before;
    expect(generated).toBeGreaterThan(0);
    expect(generated).toBeLessThan(20);

    // A non-streamed request whose client goes away is aborted too.
    const controller = new AbortController();
    const pending = postJson(`${url}/generate`, { prompt: "another", max_length: 400 }, { signal: controller.signal }).catch(() => undefined);
    await waitFor(async () => (await info(url)).slots_busy === 1, { message: "timed out waiting for request running", timeoutMs: 20_000 });
    const mid = await completionTokens(url);
    controller.abort();
    await pending;
    await waitFor(async () => (await info(url)).slots_busy === 0, { message: "timed out waiting for sequence freed after non-streamed disconnect", timeoutMs: 5000 });
    expect((await completionTokens(url)) - mid).toBeLessThan(400);
  });
});
