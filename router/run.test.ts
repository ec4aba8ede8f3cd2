import http from "node:http";
import { Writable } from "node:stream";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { FakeRuntime } from "../test/router/fake-runtime.js";
import { StaticBackend } from "./backends/static.js";
import { testRouterConfig, type RouterConfig } from "./config.js";
import { run, type RouterHandle } from "./run.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** GET through node:http, which sends the Host header it is given (fetch sets its own). */
function get(url: string, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { headers, agent: false }, (response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => (body += chunk));
      response.on("end", () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body }));
    });
    request.on("error", reject);
  });
}

/** A logger whose lines the test reads. */
function capturedLogger() {
  const lines: { level: number; msg: string }[] = [];
  const sink = new Writable({
    write(chunk, _encoding, callback) {
      for (const line of String(chunk).split("\n")) if (line) lines.push(JSON.parse(line));
      callback();
    },
  });
  return { logger: pino({ level: "info" }, sink), lines };
}

async function startRouter(overrides: Partial<RouterConfig> = {}, logger = capturedLogger().logger): Promise<RouterHandle> {
  const fake = await new FakeRuntime("tiny").start();
  cleanups.push(() => fake.close());
  const backend = new StaticBackend([{ modelId: "tiny", endpoints: [{ id: "tiny", url: fake.url }] }]);
  const handle = await run(testRouterConfig({ rateLimitPoints: 0, ...overrides }), { backend, logger });
  cleanups.push(() => handle.close());
  return handle;
}

describe("listen address (local mode)", () => {
  it("warns when corral serve listens beyond loopback without API keys", async () => {
    const open = capturedLogger();
    await startRouter({ host: "0.0.0.0" }, open.logger);
    expect(open.lines.filter((line) => line.level === 40).map((line) => line.msg)).toEqual([
      expect.stringMatching(/listening on 0\.0\.0\.0 without API keys.*--api-keys-file/),
    ]);

    const keyed = capturedLogger();
    await startRouter({ host: "0.0.0.0", apiKeys: ["sk-test"] }, keyed.logger);
    const loopback = capturedLogger();
    await startRouter({ host: "127.0.0.1" }, loopback.logger);
    const cluster = capturedLogger();
    await startRouter({ host: "0.0.0.0", backend: "static", upstream: ["tiny=http://127.0.0.1:1"] }, cluster.logger);
    for (const quiet of [keyed, loopback, cluster]) expect(quiet.lines.filter((line) => line.level === 40)).toEqual([]);
  });
});

describe("Host header check (DNS rebinding)", () => {
  it("local mode answers localhost, 127.0.0.1 and [::1] and refuses other names with 403", async () => {
    const router = await startRouter();
    for (const host of ["localhost", `localhost:${router.port}`, `127.0.0.1:${router.port}`, "[::1]:8000", "LOCALHOST"]) {
      expect((await get(`${router.url}/models/current`, { host })).status, host).toBe(200);
    }
    const refused = await get(`${router.url}/models/current`, { host: `evil.example:${router.port}` });
    expect(refused.status).toBe(403);
    expect(JSON.parse(refused.body)).toEqual({ detail: "host evil.example is not allowed: add it to --allowed-hosts (CORRAL_ALLOWED_HOSTS), or '*' to allow any" });
    expect((await get(`${router.url}/health`, { host: "127.0.0.1.evil.example" })).status).toBe(403);
  });

  it("--allowed-hosts adds names, '*' turns the check off, and the cluster router does not check unless told", async () => {
    const added = await startRouter({ allowedHosts: ["llm.lan"] });
    expect((await get(`${added.url}/models/current`, { host: "llm.lan:8000" })).status).toBe(200);
    expect((await get(`${added.url}/models/current`, { host: "other.lan" })).status).toBe(403);
    const any = await startRouter({ allowedHosts: ["*"] });
    expect((await get(`${any.url}/models/current`, { host: "other.lan" })).status).toBe(200);
    const cluster = await startRouter({ backend: "static", upstream: ["tiny=http://127.0.0.1:1"] });
    expect((await get(`${cluster.url}/models/current`, { host: "corral.example.com" })).status).toBe(200);
    const clusterChecked = await startRouter({ backend: "static", upstream: ["tiny=http://127.0.0.1:1"], allowedHosts: ["corral.example.com"] });
    expect((await get(`${clusterChecked.url}/models/current`, { host: "corral.example.com" })).status).toBe(200);
    expect((await get(`${clusterChecked.url}/models/current`, { host: "evil.example" })).status).toBe(403);
  });
});
