import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LocalBackend } from "../../router/backends/local.js";
import type { RouterConfig } from "../../router/config.js";
import { run, type RouterHandle } from "../../router/run.js";
import { postJson, readSse, streamedText } from "../helpers/runtime.js";
import { waitFor } from "../helpers/wait.js";
import { testServeConfig } from "../helpers/config.js";
import { ensureTestModel } from "../helpers/test-models.js";

// Model switching under `corral serve` with real runtime children: a catalog with the
// deterministic successor model and models whose files are not GGUF at all.
let dir: string;
const routers: RouterHandle[] = [];

beforeAll(async () => {
  const slowModel = await ensureTestModel("bench", "q8_0");
  dir = mkdtempSync(path.join(os.tmpdir(), "corral-serve-models-"));
  for (const name of ["broken-1", "broken-2", "broken-3"]) writeFileSync(path.join(dir, `${name}.gguf`), "this is not a GGUF file\n".repeat(64));
  writeFileSync(
    path.join(dir, "models.yaml"),
    [
      "default: tiny",
      "models:",
      "  - id: tiny",
      "    source: builtin:successor",
      "  - id: other",
      "    source: builtin:successor",
      "  - id: slow",
      `    source: ${JSON.stringify(slowModel)}`,
      "    context_size: 512",
      ...["broken-1", "broken-2", "broken-3"].flatMap((name) => [`  - id: ${name}`, `    source: ${JSON.stringify(path.join(dir, `${name}.gguf`))}`]),
      "",
    ].join("\n"),
  );
}, 300_000);

afterAll(async () => {
  await Promise.all(routers.splice(0).map((router) => router.close()));
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

async function serve(overrides: Partial<RouterConfig> = {}): Promise<RouterHandle> {
  const router = await run(
    testServeConfig(path.join(dir, "models.yaml"), { maxModels: 2, ...overrides }),
    { runtimeLogSink: null },
  );
  routers.push(router);
  await waitFor(async () => ((await (await fetch(`${router.url}/models/current`)).json()) as { state: string }).state === "ready", { message: "timed out waiting for tiny ready", timeoutMs: 120_000 });
  return router;
}

describe("concurrent /models/load", () => {
  it("loads of models that cannot load never take the current role nor stop the model that serves", async () => {
    const router = await serve();
    const backend = router.backend as LocalBackend;
    const pid = backend.runtimePid("tiny");

    // Requests for the current model keep being answered while the loads run.
    let loading = true;
    const answers: number[] = [];
    const traffic = (async () => {
      while (loading) {
        const response = await postJson(`${router.url}/generate`, { prompt: "Hello wor" });
        answers.push(response.status);
        expect(await response.json()).toMatchObject({ response: "stuvwxyz" });
      }
    })();

    const started = Date.now();
    const loads = await Promise.all(
      ["broken-1", "broken-2", "broken-3", "broken-1", "broken-2"].map(async (id) => {
        const response = await postJson(`${router.url}/models/load`, { model_id: id });
        return { id, status: response.status, body: (await response.json()) as { detail: string } };
      }),
    );
    const elapsed = Date.now() - started;
    loading = false;
    await traffic;

    for (const load of loads) {
      expect(load.status).toBe(503);
      expect(load.body.detail).toMatch(new RegExp(`^model ${load.id} could not be started: `));
    }
    expect(elapsed).toBeLessThan(30_000);
    expect(answers.length).toBeGreaterThan(0);
    expect(answers.every((status) => status === 200)).toBe(true);

    const current = (await (await fetch(`${router.url}/models/current`)).json()) as Record<string, unknown>;
    expect(current).toMatchObject({ model_id: "tiny", state: "ready", current: true });
    expect(backend.runtimePid("tiny")).toBe(pid);
    const available = (await (await fetch(`${router.url}/models/available`)).json()) as { current: string; models: { model_id: string; state: string }[] };
    expect(available.current).toBe("tiny");
    for (const name of ["broken-1", "broken-2", "broken-3"]) {
      expect(available.models.find((model) => model.model_id === name)?.state).toBe("failed");
      expect(backend.status(name).message).toMatch(/could not be started/);
    }

    // A request naming a failed model fails fast with the reason, without starting it again.
    const asked = Date.now();
    const refused = await postJson(`${router.url}/generate`, { prompt: "Hi", model_id: "broken-1" });
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as { detail: string }).detail).toMatch(/^model broken-1 could not be started: /);
    expect(Date.now() - asked).toBeLessThan(1000);
    expect(backend.runtimePid("broken-1")).toBeUndefined();

    // The default model still answers at once.
    const answer = await postJson(`${router.url}/generate`, { prompt: "Hello wor" });
    expect(answer.status).toBe(200);
  }, 180_000);
});

describe("--max-models reached", () => {
  it("a request for another model never cuts a stream: 503 with Retry-After while every loaded model is busy, served once one is idle", async () => {
    const router = await serve({ maxModels: 1 });
    const backend = router.backend as LocalBackend;
    expect((await postJson(`${router.url}/models/load`, { model_id: "slow" })).status).toBe(200);
    const pid = backend.runtimePid("slow");

    const response = await postJson(`${router.url}/generate`, { prompt: "a long story", model_id: "slow", max_length: 400, stream: true });
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let raw = "";
    let finished = false;
    const first = await reader.read();
    raw += decoder.decode(first.value, { stream: true });
    const rest = (async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        raw += decoder.decode(value, { stream: true });
      }
      finished = true;
    })();

    const refused = await postJson(`${router.url}/generate`, { prompt: "Hello wor", model_id: "tiny" });
    expect(finished).toBe(false);
    expect(refused.status).toBe(503);
    expect(refused.headers.get("retry-after")).toBe("5");
    expect(((await refused.json()) as { detail: string }).detail).toBe(
      "model tiny cannot start now: all loaded models are busy and --max-models 1 is reached; try again shortly",
    );
    expect(backend.runtimePid("slow")).toBe(pid);

    await rest;
    expect(raw).not.toContain("event: error");
    expect(raw.endsWith("data: [DONE]\n\n")).toBe(true);
    const { events } = await readSse(await postJson(`${router.url}/generate`, { prompt: "Hello wor", model_id: "tiny", stream: true }));
    expect(streamedText(events)).toBe("stuvwxyz");
    expect(backend.status("slow").state).toBe("not_loaded");
  }, 180_000);
});
