import http from "node:http";
import net from "node:net";
import { Writable } from "node:stream";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { FakeRuntime } from "../test/router/fake-runtime.js";
import { StaticBackend } from "./backends/static.js";
import { type RouterConfig } from "./config.js";
import { run, type RouterHandle } from "./run.js";
import { parseAnswer, rawExchange } from "../test/helpers/raw-http.js";
import { waitFor } from "../test/helpers/wait.js";
import { testRouterConfig } from "../test/helpers/config.js";

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

describe("slow clients and connection bounds", () => {
  it("a body that trickles past --request-timeout-seconds gets 408 and the connection closes", async () => {
    const router = await startRouter({ requestTimeoutSeconds: 0.5 });
    const socket = net.connect(router.port, "127.0.0.1");
    let answer = "";
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => (answer += chunk));
    socket.on("error", () => undefined);
    const closed = new Promise<void>((resolve) => socket.on("close", () => resolve()));
    socket.write("POST /generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{");
    const trickle = setInterval(() => socket.writable && socket.write(" "), 100);
    const started = Date.now();
    await closed;
    clearInterval(trickle);
    expect(Date.now() - started).toBeLessThan(3000);
    const parsed = parseAnswer(answer);
    expect(parsed.status).toBe(408);
    expect(JSON.parse(parsed.body)).toEqual({ detail: "the request took too long to arrive" });
  });

  it("headers that never finish get 408 too", async () => {
    const router = await startRouter({ requestTimeoutSeconds: 0.5 });
    const answer = parseAnswer(await rawExchange(router.port, "GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ", 4000));
    expect(answer.status).toBe(408);
    expect(Object.keys(JSON.parse(answer.body))).toEqual(["detail"]);
  });

  it("beyond --max-connections-per-client open connections from one address, a new one gets 429 and is closed", async () => {
    const router = await startRouter({ maxConnectionsPerClient: 2 });
    const held = await Promise.all([0, 1].map(() => new Promise<net.Socket>((resolve) => {
      const socket = net.connect(router.port, "127.0.0.1", () => resolve(socket));
    })));
    const refused = parseAnswer(await rawExchange(router.port, "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"));
    expect(refused.status).toBe(429);
    expect(JSON.parse(refused.body)).toEqual({ detail: "too many connections from 127.0.0.1: at most 2 at once" });
    held[0]!.destroy();
    await new Promise((resolve) => setTimeout(resolve, 100));
    const allowed = parseAnswer(await rawExchange(router.port, "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"));
    expect(allowed.status).toBe(200);
    held[1]!.destroy();
  });

  it("defaults: 30 s to send a request; 64 connections per client in local mode, no bound in cluster mode", async () => {
    const { connectionsPerClient, routerConfig } = await import("./config.js");
    expect(routerConfig({}).requestTimeoutSeconds).toBe(30);
    expect(connectionsPerClient(routerConfig({ backend: "local" }))).toBe(64);
    expect(connectionsPerClient(routerConfig({ backend: "kubernetes" }))).toBe(0);
    expect(connectionsPerClient(routerConfig({ backend: "kubernetes", maxConnectionsPerClient: "200" }))).toBe(200);
  });
});

describe("shutting down", () => {
  it("keeps listening while a stream finishes: a new request gets 503 with Retry-After and Connection: close, the stream ends intact", async () => {
    const fake = await new FakeRuntime("tiny").start();
    cleanups.push(() => fake.close());
    fake.eventDelayMs = 300;
    const backend = new StaticBackend([{ modelId: "tiny", endpoints: [{ id: "tiny", url: fake.url }] }]);
    const router = await run(testRouterConfig({ rateLimitPoints: 0, drainSeconds: 10 }), { backend, logger: capturedLogger().logger });
    cleanups.push(() => router.close());
    const stream = fetch(`${router.url}/generate`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: "hi", stream: true }),
    }).then((response) => response.text());
    await waitFor(() => fake.active > 0, { intervalMs: 10, message: "timed out waiting for the stream to reach the runtime" });
    expect(fake.active).toBe(1);

    const closing = router.close();
    const body = '{"prompt":"hi"}';
    const answer = parseAnswer(
      await rawExchange(router.port, `POST /generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`),
    );
    expect(answer.status).toBe(503);
    expect(answer.headers["retry-after"]).toMatch(/^\d+$/);
    expect(answer.headers.connection).toBe("close");
    expect(JSON.parse(answer.body)).toEqual({ detail: "the router is shutting down" });

    const streamed = await stream;
    expect(streamed).toContain("data: [DONE]");
    expect(streamed).not.toContain("event: error");
    await closing;
  });
});
