import { createServer, type Server } from "node:http";
import { once } from "node:events";
import { mkdtemp, readFile, rm, stat, writeFile, readdir } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pino } from "pino";
import { ensureTestModel } from "../helpers/test-models.js";
import { parseModelSource, resolveModel } from "../../runtime/model-source.js";
import { info, postJson, startRuntime } from "../helpers/runtime.js";

/** A tiny model host: serves the successor model under any path, honouring Range requests. */
async function startModelHost(model: Buffer) {
  const requests: { url: string; range?: string; auth?: string }[] = [];
  let mode: "ok" | "truncate" | "garbage" = "ok";
  const server: Server = createServer((req, res) => {
    requests.push({ url: req.url!, range: req.headers.range, auth: req.headers.authorization });
    if (req.url!.includes("missing")) return void res.writeHead(404).end();
    if (req.url!.includes("gated") && req.headers.authorization !== "Bearer sekret") return void res.writeHead(401).end();
    const body = mode === "garbage" ? Buffer.alloc(model.length, 7) : model;
    const range = /bytes=(\d+)-/.exec(req.headers.range ?? "");
    const start = range ? Number(range[1]) : 0;
    if (start >= body.length) return void res.writeHead(416).end();
    res.writeHead(range ? 206 : 200, { "content-length": String(body.length - start) });
    if (mode === "truncate") {
      // Send part of the body, then drop the connection as a flaky network would.
      res.write(body.subarray(start, start + 1000), () => setTimeout(() => res.destroy(), 50));
      return;
    }
    res.end(body.subarray(start));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    setMode: (next: typeof mode) => (mode = next),
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

describe("model sources and downloads", () => {
  let host: Awaited<ReturnType<typeof startModelHost>>;
  let modelDir: string;
  let model: Buffer;
  const logger = pino({ level: "silent" });

  beforeAll(async () => {
    model = await readFile(await ensureTestModel("successor"));
    host = await startModelHost(model);
    modelDir = await mkdtemp(path.join(os.tmpdir(), "corral-models-"));
  });
  afterAll(async () => {
    await host.close();
    await rm(modelDir, { recursive: true, force: true });
  });

  it("parses hf:, URLs, built-ins and paths", () => {
    expect(parseModelSource("hf:TheBloke/phi-2-GGUF/phi-2.Q4_K_M.gguf", { HF_ENDPOINT: "https://mirror.example" })).toEqual({
      kind: "url",
      url: "https://mirror.example/TheBloke/phi-2-GGUF/resolve/main/phi-2.Q4_K_M.gguf",
      cacheName: path.join("hf", "TheBloke", "phi-2-GGUF", "phi-2.Q4_K_M.gguf"),
    });
    expect(parseModelSource("builtin:tiny")).toMatchObject({ kind: "builtin", name: "tiny" });
    expect(parseModelSource("/models/x.gguf")).toEqual({ kind: "file", path: "/models/x.gguf" });
    expect(() => parseModelSource("hf:owner/file.gguf")).toThrow(/expected hf:owner\/repo\/file\.gguf/);
    expect(() => parseModelSource("hf:owner/repo/../x.gguf")).toThrow(/expected/);
    expect(() => parseModelSource("builtin:huge")).toThrow(/unknown built-in model "huge"/);
  });

  it("downloads a URL with progress, serves it, and reuses the cached file", async () => {
    const runtime = await startRuntime({ model: `${host.url}/models/succ.gguf`, modelDir, parallel: 1 });
    try {
      const body = await info(runtime.url);
      expect(body).toMatchObject({ state: "ready", progress: { bytes_done: model.length, bytes_total: model.length } });
      expect(((await (await postJson(`${runtime.url}/generate`, { prompt: "Hello wor" })).json()) as any).response).toBe("stuvwxyz");
    } finally {
      await runtime.close();
    }
    const before = host.requests.length;
    const again = await startRuntime({ model: `${host.url}/models/succ.gguf`, modelDir, parallel: 1 });
    await again.close();
    expect(host.requests.length).toBe(before);
  });

  it("resolves hf: sources through HF_ENDPOINT with the token, and names gated failures", async () => {
    const env = { ...process.env, HF_ENDPOINT: host.url };
    const summary = await resolveModel(parseModelSource("hf:acme/gated/succ.gguf", env), { modelDir, logger, hfToken: "sekret" });
    expect(summary.architecture).toBe("llama");
    expect(host.requests.at(-1)).toMatchObject({ url: "/acme/gated/resolve/main/succ.gguf", auth: "Bearer sekret" });
    await expect(resolveModel(parseModelSource("hf:acme/gated/other.gguf", env), { modelDir, logger })).rejects.toThrow(/HTTP 401.*HF_TOKEN/);
    await expect(resolveModel(parseModelSource("hf:acme/missing/x.gguf", env), { modelDir, logger })).rejects.toThrow(/HTTP 404/);
  });

  it("never keeps a partial download under the final name, and resumes it", async () => {
    const source = parseModelSource(`${host.url}/partial/succ.gguf`);
    host.setMode("truncate");
    await expect(resolveModel(source, { modelDir, logger })).rejects.toThrow();
    host.setMode("ok");
    const final = path.join(modelDir, source.kind === "url" ? source.cacheName : "");
    await expect(stat(final)).rejects.toThrow();
    expect((await stat(`${final}.part`)).size).toBeGreaterThan(0);
    await resolveModel(source, { modelDir, logger });
    expect(host.requests.at(-1)?.range).toMatch(/^bytes=\d+-$/);
    expect((await stat(final)).size).toBe(model.length);
    expect((await readdir(path.dirname(final))).filter((f) => f.endsWith(".part") || f.endsWith(".lock"))).toEqual([]);
  });

  it("refuses a download that is not a GGUF model, and re-fetches a corrupt cached file", async () => {
    host.setMode("garbage");
    const source = parseModelSource(`${host.url}/garbage/succ.gguf`);
    await expect(resolveModel(source, { modelDir, logger })).rejects.toThrow(/not a valid GGUF/);
    host.setMode("ok");
    const summary = await resolveModel(source, { modelDir, logger });
    // Corrupt the cached copy: the next start notices and downloads it again.
    await writeFile(summary.path, Buffer.alloc(5000, 1));
    const before = host.requests.length;
    await resolveModel(source, { modelDir, logger });
    expect(host.requests.length).toBe(before + 1);
    expect((await stat(summary.path)).size).toBe(model.length);
  });
});
