import { copyFile, mkdtemp, readFile, rm, truncate, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureTestModel } from "../helpers/test-models.js";
import { postJson, readSse, spawnRuntime } from "../helpers/runtime.js";
import { waitFor } from "../helpers/wait.js";

describe("runtime process lifecycle", () => {
  let dir: string;
  let successor: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "corral-lifecycle-"));
    successor = await ensureTestModel("successor");
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  async function brokenCopy(name: string, mutate: (file: string) => Promise<void>): Promise<string> {
    const file = path.join(dir, name);
    await copyFile(successor, file);
    await mutate(file);
    return file;
  }

  it.each([
    ["a missing file", async () => path.join(dir, "nope.gguf"), /nope\.gguf/],
    ["a truncated file", () => brokenCopy("truncated.gguf", async (f) => truncate(f, 200_000)), /truncated/i],
    ["a file that is not GGUF", async () => {
      const f = path.join(dir, "text.gguf");
      await writeFile(f, "this is not a model\n".repeat(100));
      return f;
    }, /not a GGUF|magic/i],
    ["a file without required metadata", () => brokenCopy("no-ffn.gguf", async (f) => {
      // Rename the key in place (same length): the file stays parseable but lacks the key that
      // would make llama.cpp abort the whole process.
      const bytes = await readFile(f);
      const key = Buffer.from("llama.feed_forward_length");
      const at = bytes.indexOf(key);
      expect(at).toBeGreaterThan(0);
      bytes.write("llama.feed_forward_lengtX", at);
      await writeFile(f, bytes);
    }), /feed_forward_length/],
  ])("%s ends the process with one clear message", async (_name, makeFile, message) => {
    const file = await makeFile();
    const runtime = await spawnRuntime(["--model", file]);
    expect(await runtime.exit).toBe(1);
    const stderr = runtime.stderr().trim();
    expect(stderr.split("\n")).toHaveLength(1);
    expect(stderr).toMatch(/^corral: /);
    expect(stderr).toMatch(message);
    expect(runtime.stdout()).not.toMatch(/listening/);
  });

  it("SIGTERM: readiness fails at once, new requests get 503, a stream in flight finishes whole, exit 0", async () => {
    const bench = await ensureTestModel("bench", "q8_0");
    const runtime = await spawnRuntime(["--model", bench, "--parallel", "2", "--context-size", "512", "--drain-seconds", "30"]);
    try {
      await waitFor(async () => (await fetch(`${runtime.url}/readyz`)).status === 200, { message: "timed out waiting for runtime ready", timeoutMs: 60_000 });
      const response = await postJson(`${runtime.url}/v1/completions`, {
        prompt: "Once upon a time",
        max_tokens: 120,
        stream: true,
        stream_options: { include_usage: true },
        stop: [],
      });
      expect(response.status).toBe(200);
      const reading = readSse(response);
      runtime.child.kill("SIGTERM");
      await waitFor(async () => (await fetch(`${runtime.url}/readyz`)).status === 503, { message: "timed out waiting for readiness failing", timeoutMs: 20_000 });
      const refused = await postJson(`${runtime.url}/generate`, { prompt: "late" });
      expect(refused.status).toBe(503);
      expect(((await refused.json()) as any).detail).toMatch(/shutting down/);

      const { events } = await reading;
      expect(events.at(-1)?.data).toBe("[DONE]");
      expect(events.some((e) => e.event === "error")).toBe(false);
      const chunks = events.slice(0, -1).map((e) => JSON.parse(e.data));
      const usage = chunks.find((c) => c.usage)?.usage;
      const finish = chunks.map((c) => c.choices[0]?.finish_reason).find(Boolean);
      expect(["length", "stop"]).toContain(finish);
      if (finish === "length") expect(usage.completion_tokens).toBe(120);
      expect(await runtime.exit).toBe(0);
    } finally {
      runtime.child.kill("SIGKILL");
    }
  }, 120_000);

  it("a stream cut short after its first chunk ends with the documented error event, then [DONE]", async () => {
    const bench = await ensureTestModel("bench", "q8_0");
    const runtime = await spawnRuntime(["--model", bench, "--parallel", "1", "--context-size", "1024", "--drain-seconds", "0.5"]);
    try {
      await waitFor(async () => (await fetch(`${runtime.url}/readyz`)).status === 200, { message: "timed out waiting for runtime ready", timeoutMs: 60_000 });
      const response = await postJson(`${runtime.url}/generate`, { prompt: "Once upon a time", max_length: 900, stream: true });
      expect(response.status).toBe(200);
      const reading = readSse(response);
      runtime.child.kill("SIGTERM");
      const { events } = await reading;
      const error = events.find((e) => e.event === "error");
      expect(error).toBeDefined();
      expect(JSON.parse(error!.data)).toEqual({ detail: "generation stopped: runtime is shutting down" });
      expect(events.at(-1)?.data).toBe("[DONE]");
      expect(events.at(-2)).toBe(error);
      expect(await runtime.exit).toBe(0);
    } finally {
      runtime.child.kill("SIGKILL");
    }
  }, 120_000);
});
