import { afterAll, beforeAll, describe, expect, it } from "vitest";
import OpenAI from "openai";
import { ensureTestModel } from "../helpers/test-models.js";
import { info, postJson, readSse, startRuntime, streamedText } from "../helpers/runtime.js";
import { waitFor } from "../helpers/wait.js";
import type { RuntimeHandle } from "../../runtime/run.js";

// The successor model continues every letter with the next one and stops after "z", so
// answers are exact at any temperature.
describe("runtime API on the successor model", () => {
  let runtime: RuntimeHandle;
  let url: string;

  beforeAll(async () => {
    const model = await ensureTestModel("successor");
    runtime = await startRuntime({ model, modelId: "acme/successor", parallel: 2, contextSize: 256, bodyLimitBytes: 8192 });
    url = runtime.url;
  });
  afterAll(() => runtime?.close());

  it("generates the exact continuation with usage and finish_reason", async () => {
    const response = await postJson(`${url}/generate`, { prompt: "Hello wor" });
    expect(response.status).toBe(200);
    const body = (await response.json()) as any;
    expect(body.response).toBe("stuvwxyz");
    expect(body.finish_reason).toBe("stop");
    expect(body.usage.completion_tokens).toBe(9); // eight letters and the end token
    expect(body.usage.total_tokens).toBe(body.usage.prompt_tokens + 9);
    expect(body.usage.prompt_tokens).toBeGreaterThanOrEqual(9);
  });

  it("streams the same text as SSE ending with [DONE]", async () => {
    const response = await postJson(`${url}/generate`, { prompt: "Hello wor", stream: true });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const { events, raw } = await readSse(response);
    expect(streamedText(events)).toBe("stuvwxyz");
    expect(events.at(-1)?.data).toBe("[DONE]");
    expect(raw.endsWith("data: [DONE]\n\n")).toBe(true);
  });

  it("stops at max_length with finish_reason length", async () => {
    const body = (await (await postJson(`${url}/generate`, { prompt: "Hello wor", max_length: 3, do_sample: false })).json()) as any;
    expect(body).toMatchObject({ response: "stu", finish_reason: "length", usage: { completion_tokens: 3 } });
  });

  it("clamps max_length to what the context leaves", async () => {
    // 256-token context, prompt of ~9 tokens: asking for 16384 is allowed and clamped.
    const body = (await (await postJson(`${url}/generate`, { prompt: "Hello wor", max_length: 16384 })).json()) as any;
    expect(body.response).toBe("stuvwxyz");
  });

  it("renders chat messages with the model's template", async () => {
    const response = await postJson(`${url}/chat`, {
      messages: [
        { role: "system", content: "You are a helpful assistant." },
        { role: "user", content: "Hello, how are you?" },
      ],
    });
    expect(response.status).toBe(200);
    const body = (await response.json()) as any;
    // The template ends with "<|im_start|>assistant\n": a non-letter, so the model starts at "a".
    expect(body.choices).toEqual([{ message: { role: "assistant", content: "abcdefghijklmnopqrstuvwxyz" }, finish_reason: "stop" }]);
    expect(body.usage.completion_tokens).toBe(27);
    const streamed = await readSse(await postJson(`${url}/chat`, { messages: [{ role: "user", content: "hi" }], stream: true }));
    expect(streamedText(streamed.events)).toBe("abcdefghijklmnopqrstuvwxyz");
  });

  it("answers a batch in prompt order", async () => {
    const response = await postJson(`${url}/generate/batch`, { prompts: ["Hello wor", "uvw", "xy", "Hello wor"] });
    expect(response.status).toBe(200);
    const body = (await response.json()) as any;
    expect(body.responses).toEqual(["stuvwxyz", "xyz", "z", "stuvwxyz"]);
    expect(body.usage.completion_tokens).toBe(9 + 4 + 2 + 9);
  });

  it("serves the OpenAI API to the official client, plain and streamed", async () => {
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused" });
    const completion = await client.completions.create({ model: "acme/successor", prompt: "Hello wor", max_tokens: 5 });
    expect(completion.object).toBe("text_completion");
    expect(completion.choices[0]).toMatchObject({ text: "stuvw", finish_reason: "length", index: 0 });
    expect(completion.usage).toMatchObject({ completion_tokens: 5 });
    expect(completion.model).toBe("acme/successor");

    const chat = await client.chat.completions.create({ model: "acme/successor", messages: [{ role: "user", content: "hi" }] });
    expect(chat.choices[0]?.message).toMatchObject({ role: "assistant", content: "abcdefghijklmnopqrstuvwxyz" });
    expect(chat.choices[0]?.finish_reason).toBe("stop");
    expect(chat.usage?.completion_tokens).toBe(27);

    const stream = await client.chat.completions.create({
      model: "acme/successor",
      messages: [{ role: "developer", content: "be brief" }, { role: "user", content: [{ type: "text", text: "hi" }] }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined | null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
      usage = chunk.usage ?? usage;
    }
    expect(text).toBe("abcdefghijklmnopqrstuvwxyz");
    expect(finish).toBe("stop");
    expect(usage?.completion_tokens).toBe(27);

    const streamedCompletion = await client.completions.create({ model: "x", prompt: "Hello wor", stream: true, max_tokens: 100 });
    let completionText = "";
    for await (const chunk of streamedCompletion) completionText += chunk.choices[0]?.text ?? "";
    expect(completionText).toBe("stuvwxyz");
  });

  it("honours OpenAI stop sequences", async () => {
    const body = (await (await postJson(`${url}/v1/completions`, { prompt: "Hello wor", max_tokens: 50, stop: ["vw"] })).json()) as any;
    expect(body.choices[0]).toMatchObject({ text: "stu", finish_reason: "stop" });
  });

  it("reports itself on /info, /readyz, /healthz and /metrics", async () => {
    const body = await info(url);
    expect(body).toMatchObject({
      model_id: "acme/successor",
      state: "ready",
      architecture: "llama",
      quantization: "F32",
      context_size: 256,
      parallel: 2,
      slots_busy: 0,
      queue_depth: 0,
      threads: 1,
      backend: "cpu",
      defaults: { max_length: 8192, temperature: 0.7, top_p: 0.9, top_k: 80, repetition_penalty: 1.15, do_sample: true },
    });
    expect(body.size_bytes).toBeGreaterThan(0);
    expect(["prebuilt", "localBuild"]).toContain(body.llama_build);
    // Null until the loop has run steps of different sizes (StepCost has its own tests).
    if (body.step_cost !== null) expect(body.step_cost).toEqual({ fixed_ms: expect.any(Number), per_token_ms: expect.any(Number) });
    expect((await fetch(`${url}/readyz`)).status).toBe(200);
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(/corral_runtime_requests_total\{endpoint="\/generate",status="200",model="acme\/successor"\} \d+/);
    expect(metrics).toMatch(/corral_runtime_completion_tokens_total\{model="acme\/successor"\} [1-9]/);
    expect(metrics).toContain("corral_runtime_time_to_first_token_seconds_bucket");
    expect(metrics).toContain("corral_runtime_slots_busy");
    expect(metrics).toContain("corral_runtime_queue_depth");
  });

  describe("bad input answers with a detail naming the problem", () => {
    const cases: [string, string, unknown, number, RegExp][] = [
      ["invalid JSON", "/generate", "{bad", 400, /not valid JSON/],
      ["a body that is not an object", "/generate", "[1]", 400, /JSON object/],
      ["missing prompt", "/generate", {}, 400, /prompt: field required/],
      ["empty prompt", "/generate", { prompt: "" }, 400, /prompt: must not be empty/],
      ["prompt of the wrong type", "/generate", { prompt: 5 }, 400, /prompt: must be string/],
      ["temperature as a string", "/generate", { prompt: "a", temperature: "hot" }, 400, /temperature: must be number/],
      ["negative temperature", "/generate", { prompt: "a", temperature: -0.1 }, 400, /temperature: must be >= 0/],
      ["top_p of 0", "/generate", { prompt: "a", top_p: 0 }, 400, /top_p: must be > 0/],
      ["top_p over 1", "/generate", { prompt: "a", top_p: 1.5 }, 400, /top_p: must be <= 1/],
      ["negative top_k", "/generate", { prompt: "a", top_k: -1 }, 400, /top_k: must be >= 0/],
      ["fractional top_k", "/generate", { prompt: "a", top_k: 1.5 }, 400, /top_k: must be integer/],
      ["max_length of 0", "/generate", { prompt: "a", max_length: 0 }, 400, /max_length: must be >= 1/],
      ["max_length over 16384", "/generate", { prompt: "a", max_length: 16385 }, 400, /max_length: must be <= 16384/],
      ["repetition_penalty of 0", "/generate", { prompt: "a", repetition_penalty: 0 }, 400, /repetition_penalty: must be > 0/],
      ["do_sample as a string", "/generate", { prompt: "a", do_sample: "yes" }, 400, /do_sample: must be boolean/],
      ["stream as a number", "/generate", { prompt: "a", stream: 1 }, 400, /stream: must be boolean/],
      ["empty messages", "/chat", { messages: [] }, 400, /messages: must not be empty/],
      ["an unknown role", "/chat", { messages: [{ role: "tool", content: "x" }] }, 400, /messages\/0\/role: must be one of system, user, assistant/],
      ["a message without content", "/chat", { messages: [{ role: "user" }] }, 400, /messages\/0\/content: field required/],
      ["a batch with no prompts", "/generate/batch", { prompts: [] }, 400, /prompts: must not be empty/],
      ["a batch with an empty prompt", "/generate/batch", { prompts: ["a", ""] }, 400, /prompts\/1: must not be empty/],
      ["a batch over the limit", "/generate/batch", { prompts: Array.from({ length: 65 }, () => "a") }, 413, /at most 64/],
      ["OpenAI n > 1", "/v1/completions", { prompt: "a", n: 2 }, 400, /n: must be <= 1/],
      ["OpenAI messages missing", "/v1/chat/completions", {}, 400, /messages: field required/],
      ["OpenAI unknown role", "/v1/chat/completions", { messages: [{ role: "tool", content: "x" }] }, 400, /messages\/0\/role/],
      ["OpenAI temperature over 2", "/v1/chat/completions", { messages: [{ role: "user", content: "x" }], temperature: 3 }, 400, /temperature/],
    ];
    it.each(cases)("%s", async (_name, path, body, status, detail) => {
      const response = await postJson(`${url}${path}`, body);
      expect(response.status).toBe(status);
      const json = (await response.json()) as any;
      expect(Object.keys(json)).toEqual(["detail"]);
      expect(json.detail).toMatch(detail);
    });

    it("a prompt longer than the context is 413", async () => {
      const response = await postJson(`${url}/generate`, { prompt: "ab ".repeat(200) });
      expect(response.status).toBe(413);
      expect(((await response.json()) as any).detail).toMatch(/prompt is \d+ tokens; the context holds 256/);
    });

    it("a body over the size limit is 413", async () => {
      const response = await postJson(`${url}/generate`, { prompt: "a".repeat(10_000) });
      expect(response.status).toBe(413);
      expect(((await response.json()) as any).detail).toMatch(/larger than the limit of 8192 bytes/);
    });

    it("a body that is not JSON is 415", async () => {
      const response = await fetch(`${url}/generate`, { method: "POST", body: "prompt=hi", headers: { "content-type": "application/x-www-form-urlencoded" } });
      expect(response.status).toBe(415);
      expect(((await response.json()) as any).detail).toMatch(/application\/json/);
    });

    it("an unknown route is 404 with a detail", async () => {
      const response = await fetch(`${url}/nope`);
      expect(response.status).toBe(404);
      expect(await response.json()).toEqual({ detail: "no route for GET /nope" });
    });
  });

  // An idle batch loop waits for requests still arriving (RuntimeState.arriving); one that was
  // never settled would make every idle start wait the full join window.
  it("every generation request stops counting as arriving, whatever its outcome", async () => {
    const aborted = new AbortController();
    const streamed = await postJson(`${url}/generate`, { prompt: "a", max_length: 200, stream: true }, { signal: aborted.signal });
    aborted.abort();
    await streamed.body?.cancel().catch(() => {});
    const outcomes = await Promise.all([
      postJson(`${url}/generate`, { prompt: "abc", max_length: 3 }),
      postJson(`${url}/v1/completions`, { prompt: "abc", max_tokens: 3, stream: true }).then(async (r) => (await r.text(), r)),
      postJson(`${url}/generate/batch`, { prompts: ["a", "b"], max_length: 2 }),
      postJson(`${url}/chat`, { messages: [] }),
      postJson(`${url}/generate`, { prompt: "a".repeat(10_000) }),
      postJson(`${url}/generate`, "{bad"),
      fetch(`${url}/generate`, { method: "POST", body: "prompt=hi", headers: { "content-type": "application/x-www-form-urlencoded" } }),
    ]);
    expect(outcomes.map((r) => r.status)).toEqual([200, 200, 200, 400, 413, 400, 415]);
    await waitFor(async () => {
      const body = (await info(url)) as any;
      return body.arriving === 0 && body.in_flight === 0;
    }, { message: "timed out waiting for no request left arriving or in flight", timeoutMs: 20_000 });
  });
});
