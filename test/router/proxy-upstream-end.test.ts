// UpstreamProxy's onUpstreamEnd hook (token accounting reads the runtime's usage there) and the
// headers the client never gets, with the proxy alone in front of small scripted runtimes.

import http from "node:http";
import type { AddressInfo } from "node:net";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { SSE_HEADERS } from "../../common/sse.js";
import { USAGE_HEADER } from "../../common/usage.js";
import { StaticBackend } from "../../router/backends/static.js";
import { Balancer } from "../../router/balancer.js";
import { createRouterMetrics } from "../../router/metrics.js";
import { UpstreamProxy, errorDetailOf, type UpstreamEnd } from "../../router/proxy.js";
import { waitFor } from "../helpers/wait.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function listen(handler: http.RequestListener): Promise<string> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** A runtime that streams two events and sends its usage as a trailer, as `corral runtime` does. */
const streamingRuntime: http.RequestListener = (req, res) => {
  req.resume();
  req.on("end", () => {
    res.writeHead(200, { ...SSE_HEADERS, trailer: USAGE_HEADER });
    res.write("data: a\n\n");
    res.write("data: b\n\n");
    res.addTrailers({ [USAGE_HEADER]: "prompt=3, completion=2" });
    res.end("data: [DONE]\n\n");
  });
};

/** A runtime that answers JSON with its usage in a header. */
const jsonRuntime: http.RequestListener = (req, res) => {
  req.resume();
  req.on("end", () => {
    const body = JSON.stringify({ response: "x" });
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body), [USAGE_HEADER]: "prompt=1, completion=1" });
    res.end(body);
  });
};

/**
 * A front server relaying every request through an UpstreamProxy to `upstream`, recording each
 * onUpstreamEnd call. With `holdStream`, it sends the SSE head itself first, as the router does for
 * a stream that waited.
 */
async function front(upstream: string, options: { holdStream?: boolean } = {}) {
  const backend = new StaticBackend([{ modelId: "m", endpoints: [{ id: "m-1", url: upstream }] }]);
  const balancer = new Balancer(backend);
  const proxy = new UpstreamProxy(balancer, createRouterMetrics(), 200);
  cleanups.push(async () => proxy.close());
  const ends: UpstreamEnd[] = [];
  const url = await listen((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      if (options.holdStream) res.writeHead(200, SSE_HEADERS).write(": scheduling\n\n");
      const lease = balancer.tryAcquire("m")!;
      proxy.forward(
        req,
        res,
        { modelId: "m", route: "/generate", requestId: "r-1", rawBody: Buffer.concat(chunks), startedAt: performance.now(), log: pino({ level: "silent" }), onUpstreamEnd: (end) => ends.push(end) },
        lease,
      );
    });
  });
  return { url, ends, balancer };
}

async function post(url: string, body: unknown): Promise<Response> {
  return await fetch(`${url}/generate`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
}

describe("UpstreamProxy's onUpstreamEnd", () => {
  it("is called once when a stream ends, with the status and the usage trailer; the client gets neither usage nor trailer header", async () => {
    const { url, ends } = await front(await listen(streamingRuntime));
    const response = await post(url, { prompt: "x", stream: true });
    expect(response.status).toBe(200);
    expect(response.headers.get(USAGE_HEADER)).toBeNull();
    expect(response.headers.get("trailer")).toBeNull();
    expect(await response.text()).toBe("data: a\n\ndata: b\n\ndata: [DONE]\n\n");
    await waitFor(() => ends.length === 1, { message: "the hook" });
    expect(ends[0]).toMatchObject({ status: 200, trailers: { [USAGE_HEADER]: "prompt=3, completion=2" }, events: 3, complete: true });
    expect(ends[0]!.headers.trailer).toBe(USAGE_HEADER);
    // Exactly once: nothing more comes after the response closed.
    await new Promise((resolve) => setImmediate(resolve));
    expect(ends).toHaveLength(1);
  });

  it("gives a JSON answer's usage header to the hook, not to the client", async () => {
    const { url, ends } = await front(await listen(jsonRuntime));
    const response = await post(url, { prompt: "x" });
    expect(response.status).toBe(200);
    expect(response.headers.get(USAGE_HEADER)).toBeNull();
    expect(await response.json()).toEqual({ response: "x" });
    await waitFor(() => ends.length === 1, { message: "the hook" });
    expect(ends[0]).toMatchObject({ status: 200, events: 0, complete: true, trailers: {} });
    expect(ends[0]!.headers[USAGE_HEADER]).toBe("prompt=1, completion=1");
  });

  it("reports status 0 once when no runtime ever answered", async () => {
    const dead = await listen(() => undefined);
    // Nothing listens there any more: both attempts are refused.
    await cleanups.pop()!();
    const { url, ends } = await front(dead);
    const response = await post(url, { prompt: "x" });
    expect(response.status).toBe(503);
    await waitFor(() => ends.length === 1, { message: "the hook" });
    expect(ends).toEqual([{ status: 0, headers: {}, trailers: {}, events: 0, complete: false }]);
  });

  it("reports an incomplete answer when the client leaves mid-stream", async () => {
    let release: () => void = () => undefined;
    const slow = await listen((req, res) => {
      req.resume();
      res.writeHead(200, SSE_HEADERS);
      res.write("data: a\n\n");
      release = () => res.end("data: [DONE]\n\n");
    });
    cleanups.push(async () => release());
    const { url, ends } = await front(slow);
    const controller = new AbortController();
    const response = await fetch(`${url}/generate`, { method: "POST", body: JSON.stringify({ prompt: "x", stream: true }), headers: { "content-type": "application/json" }, signal: controller.signal });
    const reader = response.body!.getReader();
    await reader.read();
    controller.abort();
    await waitFor(() => ends.length === 1, { message: "the hook" });
    expect(ends[0]).toMatchObject({ status: 200, complete: false });
  });
});

describe("a held stream (the SSE head already sent)", () => {
  it("continues with the runtime's events, without a second head", async () => {
    const { url, ends } = await front(await listen(streamingRuntime), { holdStream: true });
    const response = await post(url, { prompt: "x", stream: true });
    expect(response.status).toBe(200);
    expect(await response.text()).toBe(": scheduling\n\ndata: a\n\ndata: b\n\ndata: [DONE]\n\n");
    await waitFor(() => ends.length === 1);
    expect(ends[0]).toMatchObject({ status: 200, trailers: { [USAGE_HEADER]: "prompt=3, completion=2" }, complete: true });
  });

  it("turns a runtime's JSON error into the SSE error event and [DONE]", async () => {
    const refusing = await listen((req, res) => {
      req.resume();
      req.on("end", () => {
        res.writeHead(400, { "content-type": "application/json" });
        res.end(JSON.stringify({ detail: "max_length: must be at most 16384" }));
      });
    });
    const { url, ends } = await front(refusing, { holdStream: true });
    const response = await post(url, { prompt: "x", stream: true });
    expect(response.status).toBe(200);
    expect(await response.text()).toBe(`: scheduling\n\nevent: error\ndata: ${JSON.stringify({ detail: "max_length: must be at most 16384" })}\n\ndata: [DONE]\n\n`);
    await waitFor(() => ends.length === 1);
    expect(ends[0]).toMatchObject({ status: 400, complete: true });
  });

  it("ends with the SSE error event when every attempt fails before an answer", async () => {
    const dead = await listen(() => undefined);
    await cleanups.pop()!();
    const { url } = await front(dead, { holdStream: true });
    const response = await post(url, { prompt: "x", stream: true });
    const text = await response.text();
    expect(text.startsWith(": scheduling\n\nevent: error\ndata: ")).toBe(true);
    expect(text.endsWith("data: [DONE]\n\n")).toBe(true);
  });
});

describe("errorDetailOf", () => {
  it("takes a runtime's detail, or describes the answer", () => {
    expect(errorDetailOf(429, Buffer.from('{"detail": "busy"}'))).toBe("busy");
    expect(errorDetailOf(502, Buffer.from("<html>bad gateway</html>"))).toBe("the runtime answered 502 Bad Gateway");
  });
});
