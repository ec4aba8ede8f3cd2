import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureTestModel } from "../helpers/test-models.js";
import { postJson, readSse, spawnRuntime, startRuntime, streamedText } from "../helpers/runtime.js";
import { waitFor } from "../helpers/wait.js";

interface Runtime {
  url: string;
  close(): Promise<void>;
}

/**
 * The loop runs in two modes: in this (vitest) process libuv has several workers and sampling
 * waits for the decode's result; a runtime started with UV_THREADPOOL_SIZE=1, as every launcher
 * starts it, queues sampling right behind the decode.
 */
const MODES: [string, (model: string, parallel: number) => Promise<Runtime>][] = [
  ["in-process, sampling after the decode", (model, parallel) => startRuntime({ model, parallel, contextSize: 256 })],
  [
    "UV_THREADPOOL_SIZE=1, sampling queued behind the decode",
    async (model, parallel) => {
      const runtime = await spawnRuntime(["--model", model, "--parallel", String(parallel), "--context-size", "256"], { UV_THREADPOOL_SIZE: "1" });
      const exited = async () => {
        if (runtime.child.exitCode === null) runtime.child.kill("SIGTERM");
        await runtime.exit;
      };
      try {
        await waitFor(async () => (await fetch(`${runtime.url}/readyz`).catch(() => undefined))?.status === 200, { message: "timed out waiting for runtime ready", timeoutMs: 60_000 });
        expect(runtime.stdout()).toContain('"sampleBehindDecode":true');
      } catch (error) {
        await exited();
        throw error;
      }
      return { url: runtime.url, close: exited };
    },
  ],
];

async function generate(url: string, body: Record<string, unknown>): Promise<{ response: string; finish_reason: string; usage: any }> {
  const response = await postJson(`${url}/generate`, body);
  expect(response.status).toBe(200);
  return (await response.json()) as any;
}

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Number(new RegExp(`^${name}\\{[^}]*\\} (\\d+)`, "m").exec(text)?.[1] ?? NaN);
}

/** The successor model continues any letter with the next one up to "z", then ends. */
function successorOf(prompt: string, maxLength: number): string {
  const last = prompt.charCodeAt(prompt.length - 1);
  let text = "";
  for (let code = last + 1; code <= "z".charCodeAt(0) && text.length < maxLength; code++) text += String.fromCharCode(code);
  return text;
}

// Corral's own batch loop: sequences join and leave between decode steps, each keeps its own
// positions and sampler, and a sequence's KV cells are reused by the next request on it.
describe.each(MODES)("batched decoding across sequences (%s)", (_mode, start) => {
  let successor: Runtime;
  let tiny: Runtime;

  beforeAll(async () => {
    successor = await start(await ensureTestModel("successor"), 4);
    tiny = await start(await ensureTestModel("tiny"), 1);
  }, 120_000);
  afterAll(async () => {
    await successor?.close();
    await tiny?.close();
  });

  it("requests of different lengths that join at different times each get their own exact text", async () => {
    const prompts = ["Hello wor", "abc", "the quick brown f", "Mmm", "x", "count from g", "jkl", "p"];
    const answers = await Promise.all(
      prompts.map(async (prompt, i) => {
        // Staggered arrivals: some join while others are mid-generation.
        await new Promise((resolve) => setTimeout(resolve, (i % 3) * 5));
        const maxLength = 3 + (i % 4) * 5;
        const body = await generate(successor.url, { prompt, max_length: maxLength, temperature: 0.9 });
        return { prompt, maxLength, body };
      }),
    );
    for (const { prompt, maxLength, body } of answers) {
      const expected = successorOf(prompt, maxLength);
      expect(body.response, prompt).toBe(expected);
      expect(body.finish_reason, prompt).toBe(expected.length === maxLength ? "length" : "stop");
    }
  });

  it("streams from several sequences at once keep their chunks apart", async () => {
    const prompts = ["Hello wor", "hij", "mno", "a"];
    const streams = await Promise.all(
      prompts.map(async (prompt) => {
        const response = await postJson(`${successor.url}/generate`, { prompt, max_length: 30, stream: true });
        return streamedText((await readSse(response)).events);
      }),
    );
    expect(streams).toEqual(prompts.map((prompt) => successorOf(prompt, 30)));
  });

  it("a stop string that falls across tokens ends the text before it, and none of it is sent", async () => {
    const response = await postJson(`${successor.url}/v1/completions`, { prompt: "Hello wor", max_tokens: 20, stop: ["uvw"], stream: true });
    const { events } = await readSse(response);
    const text = events.filter((e) => e.data !== "[DONE]").map((e) => JSON.parse(e.data).choices?.[0]?.text ?? "").join("");
    expect(text).toBe("st");
  });

  it("a request sharing the start of the previous prompt reuses its cells and gets the same greedy text as a fresh run", async () => {
    const first = "The lighthouse keeper counted ships every night until";
    const other = "The lighthouse keeper sang";
    const fresh = await generate(tiny.url, { prompt: first, max_length: 12, do_sample: false });
    const before = await metric(tiny.url, "corral_runtime_prompt_tokens_reused_total");
    await generate(tiny.url, { prompt: other, max_length: 12, do_sample: false });
    const again = await generate(tiny.url, { prompt: first, max_length: 12, do_sample: false });
    const reused = (await metric(tiny.url, "corral_runtime_prompt_tokens_reused_total")) - before;
    // "The lighthouse keeper " is shared with the second prompt, whose cells the third request finds.
    expect(reused).toBeGreaterThan(10);
    expect(again.response).toBe(fresh.response);
    expect(again.usage.prompt_tokens).toBe(fresh.usage.prompt_tokens);
    expect(again.usage.completion_tokens).toBe(fresh.usage.completion_tokens);
  });
});
