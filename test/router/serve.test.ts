import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { successorCompletion } from "../../common/testmodels/make.js";
import { LocalBackend } from "../../router/backends/local.js";
import { StaticBackend } from "../../router/backends/static.js";
import { run, type RouterHandle } from "../../router/run.js";
import { info, postJson, readSse, streamedText } from "../helpers/runtime.js";
import { waitFor } from "../helpers/wait.js";
import { ensureTestModel } from "../helpers/test-models.js";
import { testRouterConfig, testServeConfig } from "../helpers/config.js";

const exec = promisify(execFile);
const ALPHABET = "abcdefghijklmnopqrstuvwxyz";

// `corral serve` as `npm start` runs it (router + local backend, real runtime children), with a
// catalog of generated models: the deterministic successor model (also under the seed's example id
// microsoft/phi-2) and the slow benchmark-shaped model for disconnects and crashes.
let serve: RouterHandle;
let dir: string;

beforeAll(async () => {
  const slowModel = await ensureTestModel("bench", "q8_0");
  dir = mkdtempSync(path.join(os.tmpdir(), "corral-serve-"));
  const catalog = path.join(dir, "models.yaml");
  writeFileSync(
    catalog,
    [
      "default: tiny",
      "models:",
      "  - id: tiny",
      "    source: builtin:successor",
      "  - id: microsoft/phi-2",
      "    source: builtin:successor",
      "  - id: slow",
      `    source: ${JSON.stringify(slowModel)}`,
      "    context_size: 512",
      "",
    ].join("\n"),
  );
  serve = await run(
    testServeConfig(catalog, { readyWaitSeconds: 120 }),
    { runtimeLogSink: null },
  );
  await waitFor(async () => (await (await fetch(`${serve.url}/models/current`)).json() as { state: string }).state === "ready", { message: "timed out waiting for tiny ready", timeoutMs: 120_000 });
}, 300_000);

afterAll(async () => {
  await serve?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

/** Runs a command from the seed document with bash, BASE_URL pointing at the router. */
async function seedExample(command: string): Promise<string> {
  const { stdout } = await exec("bash", ["-c", command], { env: { ...process.env, BASE_URL: serve.url }, maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

/** The data of an SSE body (as curl prints it) before [DONE], joined. */
function sseText(body: string): string {
  const out: string[] = [];
  for (const line of body.split("\n")) {
    if (!line.startsWith("data: ")) continue;
    const data = line.slice(6);
    if (data === "[DONE]") break;
    out.push(data);
  }
  return out.join("");
}

const QUANTUM = "Explain quantum computing in simple terms";

describe("every curl example of the seed, against corral serve", () => {
  it("POST /generate: minimal, all parameters, streaming", async () => {
    const minimal = JSON.parse(
      await seedExample(`curl -X POST "\${BASE_URL}/generate" \\
-H "Content-Type: application/json" \\
-d '{
"prompt": "Explain quantum computing in simple terms"
}'`),
    );
    expect(minimal).toEqual({ response: successorCompletion(QUANTUM), finish_reason: "stop", usage: expect.objectContaining({ prompt_tokens: expect.any(Number) }) });
    expect(minimal.response).toBe("tuvwxyz");

    const all = JSON.parse(
      await seedExample(`curl -X POST "\${BASE_URL}/generate" \\
-H "Content-Type: application/json" \\
-d '{
"prompt": "Explain quantum computing in simple terms",
"model_id": null,
"stream": false,
"max_length": 8192,
"temperature": 0.7,
"top_p": 0.9,
"top_k": 80,
"repetition_penalty": 1.15,
"do_sample": true
}'`),
    );
    expect(all.response).toBe("tuvwxyz");
    expect(all.usage.total_tokens).toBe(all.usage.prompt_tokens + all.usage.completion_tokens);

    const streamed = await seedExample(`curl -X POST "\${BASE_URL}/generate" \\
-H "Content-Type: application/json" \\
-d '{
"prompt": "Explain quantum computing in simple terms",
"stream": true
}'`);
    expect(streamed.endsWith("data: [DONE]\n\n")).toBe(true);
    expect(sseText(streamed)).toBe("tuvwxyz");
  });

  it("POST /chat: minimal, all parameters, streaming", async () => {
    const messages = `"messages": [
{"role": "system", "content": "You are a helpful assistant."},
{"role": "user", "content": "Hello, how are you?"}
]`;
    const minimal = JSON.parse(
      await seedExample(`curl -X POST "\${BASE_URL}/chat" \\
-H "Content-Type: application/json" \\
-d '{
${messages}
}'`),
    );
    expect(minimal).toMatchObject({ choices: [{ message: { role: "assistant", content: ALPHABET }, finish_reason: "stop" }] });

    const all = JSON.parse(
      await seedExample(`curl -X POST "\${BASE_URL}/chat" \\
-H "Content-Type: application/json" \\
-d '{
${messages},
"model_id": null,
"stream": false,
"max_length": 8192,
"temperature": 0.7,
"top_p": 0.9,
"top_k": 80,
"repetition_penalty": 1.15,
"do_sample": true
}'`),
    );
    expect(all.choices[0].message.content).toBe(ALPHABET);

    const streamed = await seedExample(`curl -X POST "\${BASE_URL}/chat" \\
-H "Content-Type: application/json" \\
-d '{
${messages},
"stream": true
}'`);
    expect(sseText(streamed)).toBe(ALPHABET);
  });

  it("POST /generate/batch: minimal and all parameters", async () => {
    const prompts = ["Write a haiku about nature", "Tell a short joke", "Give a fun fact about space"];
    const list = `"prompts": [
"Write a haiku about nature",
"Tell a short joke",
"Give a fun fact about space"
]`;
    const minimal = JSON.parse(
      await seedExample(`curl -X POST "\${BASE_URL}/generate/batch" \\
-H "Content-Type: application/json" \\
-d '{
${list}
}'`),
    );
    expect(minimal.responses).toEqual(prompts.map(successorCompletion));
    const all = JSON.parse(
      await seedExample(`curl -X POST "\${BASE_URL}/generate/batch" \\
-H "Content-Type: application/json" \\
-d '{
${list},
"model_id": null,
"max_length": 8192,
"temperature": 0.7,
"top_p": 0.9,
"top_k": 80,
"repetition_penalty": 1.15,
"do_sample": true
}'`),
    );
    expect(all.responses).toEqual(prompts.map(successorCompletion));
    expect(all.usage.completion_tokens).toBeGreaterThan(0);
  });

  it("model management: load, current, available, unload", async () => {
    const loaded = JSON.parse(
      await seedExample(`curl -X POST "\${BASE_URL}/models/load" \\
-H "Content-Type: application/json" \\
-d '{
"model_id": "microsoft/phi-2"
}'`),
    );
    expect(loaded).toMatchObject({ model_id: "microsoft/phi-2", state: "ready", current: true, context_size: expect.any(Number), defaults: { max_length: 8192, temperature: 0.7 } });

    const current = JSON.parse(await seedExample(`curl -X GET "\${BASE_URL}/models/current"`));
    expect(current).toMatchObject({ model_id: "microsoft/phi-2", state: "ready", source: "builtin:successor", context_size: expect.any(Number) });
    // Requests without model_id now go to the new current model.
    const answer = (await (await postJson(`${serve.url}/generate`, { prompt: "Hello wor" })).json()) as { response: string };
    expect(answer.response).toBe("stuvwxyz");

    const available = JSON.parse(await seedExample(`curl -X GET "\${BASE_URL}/models/available"`));
    expect(available.current).toBe("microsoft/phi-2");
    expect(available.models.map((model: { model_id: string }) => model.model_id)).toEqual(["tiny", "microsoft/phi-2", "slow"]);
    expect(available.models[1]).toMatchObject({ state: "ready", source: "builtin:successor", size_bytes: expect.any(Number), current: true });

    const unloaded = JSON.parse(await seedExample(`curl -X POST "\${BASE_URL}/models/unload"`));
    expect(unloaded).toMatchObject({ model_id: "microsoft/phi-2", state: "not_loaded" });
    const none = JSON.parse(await seedExample(`curl -s -w '%{http_code}' -o /dev/null -X POST "\${BASE_URL}/models/unload"`));
    expect(none).toBe(400);

    // Back to the default model for the tests that follow.
    const back = await postJson(`${serve.url}/models/load`, { model_id: "tiny" });
    expect(back.status).toBe(200);
  });

  it("GET /system/info and GET /health", async () => {
    const system = JSON.parse(await seedExample(`curl -X GET "\${BASE_URL}/system/info"`));
    expect(system.router).toMatchObject({ version: expect.any(String), backend: "local", uptime_seconds: expect.any(Number) });
    expect(system.host).toMatchObject({ cpu_count: expect.any(Number), memory_total_bytes: expect.any(Number) });
    const tiny = system.models.find((model: { model_id: string }) => model.model_id === "tiny");
    expect(tiny.endpoints[0].info).toMatchObject({ model_id: "tiny", state: "ready", parallel: 2, slots_busy: 0, threads: 1, devices: expect.any(Array), memory: expect.any(Object) });

    const health = JSON.parse(await seedExample(`curl -X GET "\${BASE_URL}/health"`));
    expect(health).toMatchObject({ status: "ok", components: { router: "ok", backend: { kind: "local", state: "ok" }, current_model: { model_id: "tiny", state: "ready" } } });
  });

  it("the bash loop that prints a stream", async () => {
    const output = await seedExample(`curl -X POST "\${BASE_URL}/generate" \\
-H "Content-Type: application/json" \\
-d '{"prompt": "Hello", "stream": true}' | while read -r line; do
if [[ $line == data:* ]]; then
content=\${line#data: }
if [[ $content != "[DONE]" ]]; then
echo -n "$content"
fi
fi
done`);
    expect(output).toBe(successorCompletion("Hello"));
  });
});

describe("the official openai client", () => {
  let keyed: RouterHandle;
  beforeAll(async () => {
    // A second router with API keys on, in front of the same runtime.
    keyed = await run(testRouterConfig({ apiKeys: ["sk-corral-test"], rateLimitPoints: 0 }), {
      backend: new StaticBackend([{ modelId: "tiny", endpoints: serve.backend.readyEndpoints("tiny") }]),
    });
  });
  afterAll(() => keyed?.close());

  for (const flavour of ["corral serve", "a router with API keys"] as const) {
    it(`works unchanged, streamed and not (${flavour})`, async () => {
      const client = new OpenAI({ baseURL: `${flavour === "corral serve" ? serve.url : keyed.url}/v1`, apiKey: "sk-corral-test", maxRetries: 0 });
      const models = await client.models.list();
      expect(models.data.map((model) => model.id)).toContain("tiny");

      const chat = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Hi" }] });
      expect(chat.choices[0]!.message.content).toBe(ALPHABET);
      expect(chat.choices[0]!.finish_reason).toBe("stop");

      const completion = await client.completions.create({ model: "tiny", prompt: "Hello wor", max_tokens: 32 });
      expect(completion.choices[0]!.text).toBe("stuvwxyz");

      let text = "";
      const stream = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "Hi" }], stream: true });
      for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
      expect(text).toBe(ALPHABET);

      let completionText = "";
      const completionStream = await client.completions.create({ model: "tiny", prompt: "Hello wor", stream: true });
      for await (const chunk of completionStream) completionText += chunk.choices[0]?.text ?? "";
      expect(completionText).toBe("stuvwxyz");
    });
  }

  it("gets a 401 without the key and a 404 for an unknown model", async () => {
    const anonymous = new OpenAI({ baseURL: `${keyed.url}/v1`, apiKey: "wrong", maxRetries: 0 });
    await expect(anonymous.models.list()).rejects.toMatchObject({ status: 401 });
    const client = new OpenAI({ baseURL: `${serve.url}/v1`, apiKey: "unused", maxRetries: 0 });
    await expect(client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "Hi" }] })).rejects.toMatchObject({ status: 404 });
  });
});

describe("streaming through the router", () => {
  it("is byte-identical to the runtime's own stream", async () => {
    const runtime = serve.backend.readyEndpoints("tiny")[0]!;
    for (const [route, body] of [
      ["/generate", { prompt: "Hello wor", stream: true }],
      ["/chat", { messages: [{ role: "user", content: "Hello, how are you?" }], stream: true }],
    ] as const) {
      const direct = await (await postJson(`${runtime.url}${route}`, body)).text();
      const routed = await postJson(`${serve.url}${route}`, body);
      expect(routed.headers.get("content-type")).toMatch(/^text\/event-stream/);
      expect(await routed.text()).toBe(direct);
    }
    const { events } = await readSse(await postJson(`${serve.url}/generate`, { prompt: "Hello wor", stream: true }));
    expect(streamedText(events)).toBe("stuvwxyz");
  });

  it("a client that disconnects frees the runtime's slot", async () => {
    await postJson(`${serve.url}/models/load`, { model_id: "slow" });
    const runtime = serve.backend.readyEndpoints("slow")[0]!;
    const controller = new AbortController();
    const response = await postJson(`${serve.url}/generate`, { prompt: "a long story", model_id: "slow", max_length: 400, stream: true }, { signal: controller.signal });
    const reader = response.body!.getReader();
    expect((await reader.read()).done).toBe(false);
    expect((await info(runtime.url)).slots_busy).toBe(1);
    controller.abort();
    await waitFor(async () => (await info(runtime.url)).slots_busy === 0, { message: "timed out waiting for the slot freed after the client left", timeoutMs: 5000 });
    const metrics = await (await fetch(`${runtime.url}/metrics`)).text();
    const generated = Number(/^corral_runtime_completion_tokens_total\{[^}]*\} (\d+)/m.exec(metrics)?.[1]);
    expect(generated).toBeLessThan(100);
  });

  it("a killed runtime gives 503, then the model comes back", async () => {
    const backend = serve.backend as LocalBackend;
    await postJson(`${serve.url}/models/load`, { model_id: "slow" });
    const runtime = backend.readyEndpoints("slow")[0]!;
    const pending = postJson(`${serve.url}/generate`, { prompt: "a long story", model_id: "slow", max_length: 400 });
    await waitFor(async () => (await info(runtime.url)).slots_busy === 1, { message: "timed out waiting for the request running", timeoutMs: 20_000 });
    process.kill(backend.runtimePid("slow")!, "SIGKILL");
    const failed = await pending;
    expect(failed.status).toBe(503);
    expect(failed.headers.get("retry-after")).toBe("5");
    expect(((await failed.json()) as { detail: string }).detail).toMatch(/slow/);
    // A new request waits (bounded) while the runtime restarts, then is served.
    const recovered = await postJson(`${serve.url}/generate`, { prompt: "again", model_id: "slow", max_length: 2 });
    expect(recovered.status).toBe(200);
    expect(backend.readyEndpoints("slow")[0]!.id).not.toBe(runtime.id);
  });
});
