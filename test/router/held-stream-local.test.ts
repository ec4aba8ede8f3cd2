// `corral serve` (real runtime children) streaming to a model that is not running yet: the request
// is held while the local backend starts it, with SSE comment lines that the seed's parsing and
// OpenAI's client skip.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { run, type RouterHandle } from "../../router/run.js";
import { testServeConfig } from "../helpers/config.js";
import { postJson, readSse, streamedText } from "../helpers/runtime.js";
import { waitFor } from "../helpers/wait.js";

let serve: RouterHandle;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "corral-held-"));
  const catalog = path.join(dir, "models.yaml");
  writeFileSync(
    catalog,
    ["default: tiny", "models:", "  - id: tiny", "    source: builtin:successor", "  - id: cold", "    source: builtin:successor", "  - id: colder", "    source: builtin:successor", ""].join("\n"),
  );
  serve = await run(testServeConfig(catalog, { readyWaitSeconds: 120 }), { runtimeLogSink: null });
  await waitFor(() => serve.backend.status("tiny").state === "ready", { message: "tiny ready", timeoutMs: 120_000 });
}, 300_000);

afterAll(async () => {
  await serve?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

describe("a stream to a model that is not running", () => {
  it("gets comment lines while the runtime starts, then the model's stream", async () => {
    expect(serve.backend.status("cold").state).toBe("not_loaded");
    const response = await postJson(`${serve.url}/generate`, { prompt: "Hello wor", model_id: "cold", stream: true });
    expect(response.status).toBe(200);
    const { events, raw } = await readSse(response);
    expect(raw.startsWith(": ")).toBe(true);
    const comments = [...raw.matchAll(/^: (.*)$/gm)].map((match) => match[1]!);
    expect(comments.length).toBeGreaterThan(0);
    for (const comment of comments) expect(comment).toMatch(/^(scheduling|downloading( \d+%| [\d.]+ MiB)?|loading( \d+%)?|queued( \d+)?)$/);
    expect(raw.lastIndexOf("\n: ")).toBeLessThan(raw.indexOf("data:"));
    // The parser sees only the runtime's events.
    expect(events.every((event) => event.data.length > 0)).toBe(true);
    expect(streamedText(events)).toBe("stuvwxyz");
    expect(serve.backend.status("cold").state).toBe("ready");
  }, 120_000);

  it("leaves OpenAI's client unaffected", async () => {
    const client = new OpenAI({ baseURL: `${serve.url}/v1`, apiKey: "unused", maxRetries: 0 });
    let text = "";
    const stream = await client.chat.completions.create({ model: "colder", messages: [{ role: "user", content: "Hi" }], stream: true });
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
    expect(text).toBe("abcdefghijklmnopqrstuvwxyz");
  }, 120_000);
});
