import http, { type IncomingMessage, type ServerResponse } from "node:http";
import type { Stream } from "node:stream";
import { parse as parseUrl, type Url } from "node:url";
import httpProxy from "http-proxy";
import type { Logger } from "../common/logger.js";
import { SSE_DONE, sseError } from "../common/sse.js";
import type { Backend, Endpoint } from "./backends/types.js";
import type { RouterMetrics } from "./metrics.js";

/** What the proxy needs to know about one client request. */
export interface ProxyRequest {
  modelId: string;
  /** Route label for metrics, e.g. `/generate`. */
  route: string;
  requestId: string;
  /** The request body exactly as the client sent it (forwarded without re-encoding). */
  rawBody: Buffer | undefined;
  /** `performance.now()` when the request arrived. */
  startedAt: number;
  log: Logger;
}

/** Per-request proxy state, kept on the IncomingMessage (http-proxy's events carry `req`). */
interface Attempt {
  request: ProxyRequest;
  endpoint: Endpoint;
  proxyReq: http.ClientRequest | undefined;
  release: () => void;
}

const ATTEMPT = Symbol("corral.proxyAttempt");
const CLIENT_GONE = Symbol("corral.clientGone");
type TrackedRequest = IncomingMessage & { [ATTEMPT]?: Attempt; [CLIENT_GONE]?: boolean };

/** JSON bodies larger than this are relayed without reading their token usage. */
const USAGE_SCAN_LIMIT = 256 * 1024;

/**
 * http-proxy pipes `options.buffer` into the upstream request instead of the (already consumed)
 * client request; all it calls is `pipe`. Writing the stored bytes in one `end` is the cheapest
 * such source.
 */
function bodySource(body: Buffer): Stream {
  return { pipe: (destination: NodeJS.WritableStream) => (destination.end(body), destination) } as unknown as Stream;
}

/**
 * Relays requests to runtimes through http-proxy over keep-alive connections, streaming answers
 * as they come (never buffered), choosing the endpoint with the fewest requests in flight,
 * retrying once when an endpoint fails before its first byte, ending streams with the
 * documented SSE error event when it fails after, and aborting the upstream request when the
 * client goes away (the runtime then frees the slot).
 */
export class UpstreamProxy {
  readonly agent = new http.Agent({ keepAlive: true, keepAliveMsecs: 1000, maxSockets: Infinity, maxFreeSockets: 1024, timeout: 30_000, scheduling: "lifo" });
  private readonly proxy = httpProxy.createProxyServer({ agent: this.agent, xfwd: false, ws: false });
  private readonly inFlight = new Map<string, number>();
  /** http-proxy parses a string target on every request; endpoints are few, parse each once. */
  private readonly targets = new Map<string, Url>();
  private roundRobin = 0;

  constructor(
    private readonly backend: Backend,
    private readonly metrics: RouterMetrics,
    /** How long a retry waits for the model to be ready again (the router's --ready-wait-seconds). */
    private readonly readyWaitMs: number,
  ) {
    this.proxy.on("proxyReq", (proxyReq, req) => {
      const tracked = req as TrackedRequest;
      const attempt = tracked[ATTEMPT];
      if (attempt) attempt.proxyReq = proxyReq;
      if (tracked[CLIENT_GONE]) proxyReq.destroy();
    });
    this.proxy.on("proxyRes", (proxyRes, req, res) => this.onProxyRes(proxyRes, req as TrackedRequest, res as ServerResponse));
    // A client that reset its connection while the upstream request was being sent: nothing to answer.
    this.proxy.on("econnreset", (_error, req) => (req as TrackedRequest)[ATTEMPT]?.release());
  }

  /** Requests in flight to an endpoint (for tests and /system/info). */
  inFlightTo(endpoint: Endpoint): number {
    return this.inFlight.get(endpoint.url) ?? 0;
  }

  /** The endpoint with the fewest requests in flight; ties go round-robin. */
  pick(endpoints: readonly Endpoint[]): Endpoint | undefined {
    if (endpoints.length <= 1) return endpoints[0];
    const start = this.roundRobin++ % endpoints.length;
    let best: Endpoint | undefined;
    let bestCount = Infinity;
    for (let i = 0; i < endpoints.length; i++) {
      const endpoint = endpoints[(start + i) % endpoints.length]!;
      const count = this.inFlightTo(endpoint);
      if (count < bestCount) {
        best = endpoint;
        bestCount = count;
      }
    }
    return best;
  }

  /** Relays one request; the reply must be hijacked already. Never throws. */
  forward(req: IncomingMessage, res: ServerResponse, request: ProxyRequest): void {
    const tracked = req as TrackedRequest;
    const model = request.modelId;
    // The router's API key is not the runtime's business.
    delete req.headers.authorization;
    this.metrics.inFlight.inc({ model });
    res.once("close", () => {
      this.metrics.inFlight.dec({ model });
      if (!res.writableFinished) {
        // The client went away: abort the upstream request so the runtime frees the slot.
        tracked[CLIENT_GONE] = true;
        tracked[ATTEMPT]?.proxyReq?.destroy();
        tracked[ATTEMPT]?.release();
      }
    });
    let retried = false;
    let waited = false;
    let failed: Endpoint | undefined;
    /** The last attempt found nothing listening (ECONNREFUSED), so no runtime saw the request. */
    let neverReached = false;

    const attempt = () => {
      const ready = this.backend.readyEndpoints(model);
      // Retry on another endpoint when there is one; a single endpoint is tried again on a fresh
      // connection (a reused keep-alive connection may have been closed by the runtime).
      const others = failed ? ready.filter((endpoint) => endpoint.id !== failed!.id) : ready;
      const endpoint = this.pick(others.length > 0 ? others : ready);
      if (!endpoint) {
        if (neverReached && !waited) {
          // Nothing was listening: a runtime that crashed before the router saw it exit, now
          // out of rotation. The request never reached it, so it waits for the restart as a
          // request that found no endpoint ready would.
          waited = true;
          this.backend.ensureReady(model, AbortSignal.timeout(this.readyWaitMs)).then(
            () => {
              if (!tracked[CLIENT_GONE] && !res.destroyed) attempt();
            },
            () => {
              if (!tracked[CLIENT_GONE] && !res.destroyed) this.answerError(res, 503, `model ${model} has no ready endpoint; try again shortly`, { "retry-after": "5" });
            },
          );
          return;
        }
        this.answerError(res, 503, `model ${model} has no ready endpoint; try again shortly`, { "retry-after": "5" });
        return;
      }
      this.inFlight.set(endpoint.url, this.inFlightTo(endpoint) + 1);
      let released = false;
      const current: Attempt = {
        request,
        endpoint,
        proxyReq: undefined,
        release: () => {
          if (released) return;
          released = true;
          const left = this.inFlightTo(endpoint) - 1;
          if (left > 0) this.inFlight.set(endpoint.url, left);
          else this.inFlight.delete(endpoint.url);
        },
      };
      tracked[ATTEMPT] = current;
      this.proxy.web(
        req,
        res,
        {
          target: this.target(endpoint.url),
          buffer: request.rawBody ? bodySource(request.rawBody) : undefined,
          headers: { connection: "keep-alive", "x-request-id": request.requestId },
        },
        (error: Error & { code?: string }) => {
          current.release();
          if (tracked[CLIENT_GONE] || res.destroyed) return;
          if (res.headersSent) {
            res.destroy();
            return;
          }
          this.metrics.upstreamErrors.inc({ model, phase: "connect" });
          this.backend.reportFailure(model, endpoint, error);
          neverReached = error.code === "ECONNREFUSED";
          if (!retried) {
            retried = true;
            failed = endpoint;
            this.metrics.upstreamRetries.inc({ model });
            request.log.warn({ endpoint: endpoint.id, code: error.code, reason: error.message }, "upstream failed before answering; retrying");
            attempt();
            return;
          }
          request.log.warn({ endpoint: endpoint.id, code: error.code, reason: error.message }, "upstream failed before answering");
          this.answerError(res, 503, `model ${model}: the runtime failed before answering (${error.code ?? error.message}); try again shortly`, {
            "retry-after": "5",
          });
        },
      );
    };
    attempt();
  }

  private target(url: string): Url {
    let target = this.targets.get(url);
    if (!target) {
      if (this.targets.size > 1000) this.targets.clear();
      target = parseUrl(url);
      this.targets.set(url, target);
    }
    return target;
  }

  private onProxyRes(proxyRes: IncomingMessage, req: TrackedRequest, res: ServerResponse): void {
    // Connection is hop-by-hop: the client's connection follows the client's wish, not the
    // runtime's keep-alive (http-proxy would copy it, and node would then keep the socket open).
    proxyRes.headers.connection = /(^|,)\s*close\s*(,|$)/i.test(req.headers.connection ?? "") ? "close" : "keep-alive";
    delete proxyRes.headers["keep-alive"];
    const current = req[ATTEMPT];
    if (!current) return;
    const { request } = current;
    const model = request.modelId;
    const contentType = proxyRes.headers["content-type"] ?? "";
    const streamed = contentType.startsWith("text/event-stream");
    const scanUsage =
      !streamed && proxyRes.statusCode === 200 && contentType.startsWith("application/json") && Number(proxyRes.headers["content-length"] ?? 0) <= USAGE_SCAN_LIMIT;
    if (streamed) res.socket?.setNoDelay(true);
    let firstChunk = true;
    let events = 0;
    let endsOnEventBoundary = true;
    const chunks: Buffer[] = [];
    let size = 0;

    proxyRes.on("data", (chunk: Buffer) => {
      if (streamed) {
        if (firstChunk) {
          firstChunk = false;
          this.metrics.timeToFirstToken.observe({ route: request.route, model }, (performance.now() - request.startedAt) / 1000);
        }
        let at = chunk.indexOf("\n\n");
        while (at !== -1) {
          events++;
          at = chunk.indexOf("\n\n", at + 2);
        }
        endsOnEventBoundary = chunk.length >= 2 && chunk[chunk.length - 1] === 0x0a && chunk[chunk.length - 2] === 0x0a;
      } else if (scanUsage && size <= USAGE_SCAN_LIMIT) {
        chunks.push(chunk);
        size += chunk.length;
      }
    });
    proxyRes.on("error", () => undefined);
    proxyRes.on("end", () => {
      if (streamed && events > 0) this.metrics.streamEvents.inc({ model }, events);
      if (scanUsage && size <= USAGE_SCAN_LIMIT) this.countUsage(model, chunks);
    });
    proxyRes.on("close", () => {
      current.release();
      if (proxyRes.complete || req[CLIENT_GONE] || res.writableEnded) return;
      // The runtime went away after its first byte: end a stream with the documented error event.
      this.metrics.upstreamErrors.inc({ model, phase: "stream" });
      request.log.warn({ endpoint: current.endpoint.id }, "upstream failed while answering");
      if (streamed && !res.destroyed) {
        const separator = endsOnEventBoundary ? "" : "\n\n";
        res.end(`${separator}${sseError(`model ${model}: the runtime failed while streaming`)}${SSE_DONE}`);
      } else {
        res.destroy();
      }
    });
  }

  private countUsage(model: string, chunks: Buffer[]): void {
    try {
      const usage = (JSON.parse(Buffer.concat(chunks).toString("utf8")) as { usage?: { prompt_tokens?: unknown; completion_tokens?: unknown } }).usage;
      if (typeof usage?.prompt_tokens === "number") this.metrics.tokens.inc({ model, kind: "prompt" }, usage.prompt_tokens);
      if (typeof usage?.completion_tokens === "number") this.metrics.tokens.inc({ model, kind: "completion" }, usage.completion_tokens);
    } catch {
      // not ours to judge: the client got the bytes as they were
    }
  }

  private answerError(res: ServerResponse, status: number, detail: string, headers: Record<string, string> = {}): void {
    if (res.headersSent || res.destroyed) return;
    const body = JSON.stringify({ detail });
    res.writeHead(status, { ...headers, "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(body) });
    res.end(body);
  }

  close(): void {
    this.proxy.close();
    this.agent.destroy();
  }
}
