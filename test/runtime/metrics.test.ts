import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureTestModel } from "../helpers/test-models.js";
import { info, postJson, readSse, startRuntime } from "../helpers/runtime.js";
import { waitFor } from "../helpers/wait.js";
import type { RuntimeHandle } from "../../runtime/run.js";

/** corral_runtime_requests_total by status for one endpoint, as /metrics shows it. */
async function requestCounts(url: string, endpoint: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const counts: Record<string, number> = {};
  for (const match of text.matchAll(/^corral_runtime_requests_total\{([^}]*)\} (\d+)$/gm)) {
    const labels = Object.fromEntries([...match[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((label) => [label[1], label[2]]));
    if (labels.endpoint === endpoint) counts[labels.status!] = Number(match[2]);
  }
  return counts;
}

/** Waits until the counts for `endpoint` are exactly `expected` (each answer is counted when its connection closes). */
async function expectCounts(url: string, endpoint: string, expected: Record<string, number>): Promise<void> {
  let last: Record<string, number> = {};
  try {
    await waitFor(async () => JSON.stringify((last = await requestCounts(url, endpoint))) === JSON.stringify(expected), { timeoutMs: 3000, message: "timed out waiting for the request counts" });
  } finally {
    expect(last).toEqual(expected);
  }
}

// Every answer counts once in corral_runtime_requests_total, with the status the client saw:
// a hijacked (streamed) reply must not be counted both by the route and by the onResponse hook.
describe("runtime request metrics", () => {
  let runtime: RuntimeHandle;

  // The benchmark-shaped model decodes slowly enough to disconnect in the middle of a stream.
  beforeAll(async () => {
    const model = await ensureTestModel("bench", "q8_0");
    runtime = await startRuntime({ model, parallel: 2, contextSize: 512 });
  }, 180_000);
  afterAll(() => runtime?.close());

  it("counts plain, streamed, rejected and abandoned requests exactly once each", async () => {
    const url = runtime.url;
    const endpoint = "/generate";
    await expectCounts(url, endpoint, {});

    const plain = await postJson(`${url}${endpoint}`, { prompt: "one", max_length: 2 });
    expect(plain.status).toBe(200);
    await plain.json();
    await expectCounts(url, endpoint, { "200": 1 });

    const streamed = await postJson(`${url}${endpoint}`, { prompt: "two", max_length: 2, stream: true });
    expect(streamed.status).toBe(200);
    expect((await readSse(streamed)).events.at(-1)?.data).toBe("[DONE]");
    await expectCounts(url, endpoint, { "200": 2 });

    const invalid = await postJson(`${url}${endpoint}`, { prompt: 3 });
    expect(invalid.status).toBe(400);
    await invalid.text();
    await expectCounts(url, endpoint, { "200": 2, "400": 1 });

    // A client that goes away mid-stream: 499 (nginx's convention, as the router counts it).
    const controller = new AbortController();
    const abandoned = await postJson(`${url}${endpoint}`, { prompt: "three", max_length: 400, stream: true }, { signal: controller.signal });
    expect(abandoned.status).toBe(200);
    const reader = abandoned.body!.getReader();
    expect((await reader.read()).done).toBe(false);
    controller.abort();
    await reader.read().catch(() => undefined);
    await waitFor(async () => (await info(url)).slots_busy === 0, { timeoutMs: 5000, message: "timed out waiting for the sequence to be freed after the disconnect" });
    await expectCounts(url, endpoint, { "200": 2, "400": 1, "499": 1 });
  });
});
