import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import type { Stream } from "node:stream";
import { parse as parseUrl, type Url } from "node:url";
import httpProxy from "http-proxy";
import type { Logger } from "../common/logger.js";
import { SSE_DONE, sseError } from "../common/sse.js";
import { USAGE_HEADER } from "../common/usage.js";
import { RETRY_AFTER_SECONDS, type Balancer, type Lease } from "./balancer.js";
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
  /** The request's routing key (prefix routing), for a retry's pick. */
  routingKey?: number;
  log: Logger;
  /** Told once per request when the upstream answer ends or closes (token accounting reads the usage trailer here). */
  onUpstreamEnd?: (end: UpstreamEnd) => void;
}

/** How a request's upstream answer ended. */
export interface UpstreamEnd {
  /** The runtime's status code; 0 when no answer was ever received (the client left, every attempt failed). */
  status: number;
  /** The runtime's headers, `x-corral-usage` included (the client never gets it). */
  headers: IncomingHttpHeaders;
  /** The runtime's trailers (a stream's `x-corral-usage`); empty when none came. */
  trailers: NodeJS.Dict<string>;
  /** SSE events relayed (0 for a JSON answer). */
  events: number;
  /** Whether the runtime's answer arrived in full. */
  complete: boolean;
}

/** One client request through every attempt: whether a runtime answered, and the one report of how it ended. */
interface Exchange {
  /** The router sent the SSE head itself while the request waited: the runtime's answer continues that stream. */
  held: boolean;
  responded: boolean;
  reported: boolean;
}

/** Per-request proxy state, kept on the IncomingMessage (http-proxy's events carry `req`). */
interface Attempt {
  request: ProxyRequest;
  exchange: Exchange;
  lease: Lease;
  proxyReq: http.ClientRequest | undefined;
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

/** Answered when a model has no endpoint to retry on. */
const RETRY_AFTER = { "retry-after": String(RETRY_AFTER_SECONDS) };

/** Read of a runtime's error answer that must become an SSE error event (its `detail`). */
const ERROR_BODY_LIMIT = 64 * 1024;

const NO_ANSWER: UpstreamEnd = { status: 0, headers: {}, trailers: {}, events: 0, complete: false };

/** The `detail` of a runtime's `{"detail": ...}` error answer, or a description of the answer. */
export function errorDetailOf(status: number, body: Buffer): string {
  try {
    const detail = (JSON.parse(body.toString("utf8")) as { detail?: unknown }).detail;
    if (typeof detail === "string" && detail.length > 0) return detail;
  } catch {
    // not JSON: described below
  }
  return `the runtime answered ${status} ${http.STATUS_CODES[status] ?? ""}`.trimEnd();
}

/**
 * Relays requests to runtimes through http-proxy over keep-alive connections, streaming answers
 * as they come (never buffered), retrying once (on an endpoint the balancer picks) when an
 * endpoint fails before its first byte, ending streams with the documented SSE error event when
 * it fails after, and aborting the upstream request when the client goes away (the runtime then
 * frees the slot).
 *
 * A stream whose SSE head the router sent itself while the request waited (router/routes/forward.ts)
 * is "held": the runtime's events continue it without a second status line, and a runtime answer
 * other than a 200 stream becomes the documented SSE error event, since the status code is gone.
 * The usage header and the `trailer` header are the router's business and never reach the client.
 */
export class UpstreamProxy {
  readonly agent = new http.Agent({ keepAlive: true, keepAliveMsecs: 1000, maxSockets: Infinity, maxFreeSockets: 1024, timeout: 30_000, scheduling: "lifo" });
  private readonly proxy = httpProxy.createProxyServer({ agent: this.agent, xfwd: false, ws: false });
  /** http-proxy parses a string target on every request; endpoints are few, parse each once. */
  private readonly targets = new Map<string, Url>();

  constructor(
    private readonly balancer: Balancer,
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
    this.proxy.on("econnreset", (_error, req) => (req as TrackedRequest)[ATTEMPT]?.lease.release());
  }

  /**
   * Relays one request to the leased endpoint; the reply must be hijacked already. When its
   * headers were sent already (a held stream), the runtime's answer continues that stream. Releases
   * the lease when the answer ends, fails or the client goes away. Never throws.
   */
  forward(req: IncomingMessage, res: ServerResponse, request: ProxyRequest, lease: Lease): void {
    const tracked = req as TrackedRequest;
    const model = request.modelId;
    const exchange: Exchange = { held: res.headersSent, responded: false, reported: false };
    // The router's API key is not the runtime's business.
    delete req.headers.authorization;
    this.metrics.inFlight.inc({ model });
    res.once("close", () => {
      this.metrics.inFlight.dec({ model });
      // No runtime answered: the client left first, or every attempt failed.
      if (!exchange.responded) this.reportEnd(request, exchange, NO_ANSWER);
      if (!res.writableFinished) {
        // The client went away: abort the upstream request so the runtime frees the slot.
        tracked[CLIENT_GONE] = true;
        tracked[ATTEMPT]?.proxyReq?.destroy();
        tracked[ATTEMPT]?.lease.release();
      }
    });
    let retried = false;
    const clientGone = () => tracked[CLIENT_GONE] === true || res.destroyed;

    const send = (current: Lease) => {
      const attempt: Attempt = { request, exchange, lease: current, proxyReq: undefined };
      tracked[ATTEMPT] = attempt;
      const { endpoint } = current;
      this.proxy.web(
        req,
        res,
        {
          target: this.target(endpoint.url),
          buffer: request.rawBody ? bodySource(request.rawBody) : undefined,
          headers: { connection: "keep-alive", "x-request-id": request.requestId },
          // A held stream's head is out: onProxyRes relays (or translates) the answer itself.
          selfHandleResponse: exchange.held,
        },
        (error: Error & { code?: string }) => {
          current.release();
          if (clientGone()) return;
          if (exchange.responded || (res.headersSent && !exchange.held)) {
            res.destroy();
            return;
          }
          this.metrics.upstreamErrors.inc({ model, phase: "connect" });
          this.balancer.reportFailure(model, endpoint, error);
          const reason = { endpoint: endpoint.id, code: error.code, reason: error.message };
          if (retried) {
            request.log.warn(reason, "upstream failed before answering");
            this.answerError(res, exchange, 503, `model ${model}: the runtime failed before answering (${error.code ?? error.message}); try again shortly`, RETRY_AFTER);
            return;
          }
          retried = true;
          this.metrics.upstreamRetries.inc({ model });
          request.log.warn(reason, "upstream failed before answering; retrying");
          // Another endpoint when there is one; a single one again, on a fresh connection (a
          // reused keep-alive connection may have been closed by the runtime).
          const next = this.balancer.tryAcquire(model, { avoid: endpoint, key: request.routingKey });
          if (next) send(next);
          else if (error.code === "ECONNREFUSED") this.awaitRestart(request, exchange, res, clientGone, send);
          else this.answerError(res, exchange, 503, `model ${model} has no ready endpoint; try again shortly`, RETRY_AFTER);
        },
      );
    };
    send(lease);
  }

  /**
   * Nothing was listening: a runtime that crashed before the backend saw it exit, now out of
   * rotation. No runtime saw the request, so it waits (bounded) for the restart, as a request that
   * found no endpoint ready would.
   */
  private awaitRestart(request: ProxyRequest, exchange: Exchange, res: ServerResponse, clientGone: () => boolean, send: (lease: Lease) => void): void {
    const model = request.modelId;
    this.balancer.acquire(model, AbortSignal.timeout(this.readyWaitMs), { key: request.routingKey }).then(
      (lease) => {
        if (clientGone()) lease.release();
        else send(lease);
      },
      () => {
        if (!clientGone()) this.answerError(res, exchange, 503, `model ${model} has no ready endpoint; try again shortly`, RETRY_AFTER);
      },
    );
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
    const { request, exchange } = current;
    exchange.responded = true;
    // The hook sees the usage header; the client does not, nor a `trailer` header announcing
    // trailers it will not get (piping drops them).
    const headers = { ...proxyRes.headers };
    delete proxyRes.headers[USAGE_HEADER];
    delete proxyRes.headers.trailer;
    const model = request.modelId;
    const contentType = proxyRes.headers["content-type"] ?? "";
    const streamed = contentType.startsWith("text/event-stream");
    if (exchange.held) {
      if (streamed && proxyRes.statusCode === 200) proxyRes.pipe(res);
      else this.endHeldStream(proxyRes, res);
    }
    const scanUsage =
      !exchange.held &&
      !streamed &&
      proxyRes.statusCode === 200 &&
      contentType.startsWith("application/json") &&
      Number(proxyRes.headers["content-length"] ?? 0) <= USAGE_SCAN_LIMIT;
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
      current.lease.release();
      this.reportEnd(request, exchange, { status: proxyRes.statusCode ?? 0, headers, trailers: proxyRes.trailers ?? {}, events, complete: proxyRes.complete });
      if (proxyRes.complete || req[CLIENT_GONE] || res.writableEnded) return;
      // The runtime went away after its first byte: end a stream with the documented error event.
      this.metrics.upstreamErrors.inc({ model, phase: "stream" });
      request.log.warn({ endpoint: current.lease.endpoint.id }, "upstream failed while answering");
      if ((streamed || exchange.held) && !res.destroyed) {
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

  /**
   * A held stream's runtime answered something other than a 200 stream (a 400, 429 or 503 JSON
   * answer): its detail goes out as the SSE error event, then [DONE].
   */
  private endHeldStream(proxyRes: IncomingMessage, res: ServerResponse): void {
    const status = proxyRes.statusCode ?? 502;
    const chunks: Buffer[] = [];
    let size = 0;
    proxyRes.on("data", (chunk: Buffer) => {
      if (size < ERROR_BODY_LIMIT) chunks.push(chunk);
      size += chunk.length;
    });
    proxyRes.on("end", () => {
      if (res.writableEnded || res.destroyed) return;
      const detail = status === 200 ? `the runtime answered ${proxyRes.headers["content-type"] ?? "without a content type"} instead of a stream` : errorDetailOf(status, Buffer.concat(chunks));
      endStreamWithError(res, status === 200 ? 502 : status, detail);
    });
  }

  /** Tells the request's hook how the upstream answer ended, once; a failing hook is logged, never thrown. */
  private reportEnd(request: ProxyRequest, exchange: Exchange, end: UpstreamEnd): void {
    if (exchange.reported) return;
    exchange.reported = true;
    try {
      request.onUpstreamEnd?.(end);
    } catch (error) {
      request.log.error({ err: error }, "onUpstreamEnd failed");
    }
  }

  private answerError(res: ServerResponse, exchange: Exchange, status: number, detail: string, headers: Record<string, string> = {}): void {
    if (exchange.held && !res.writableEnded && !res.destroyed) {
      endStreamWithError(res, status, detail);
      return;
    }
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

/**
 * Ends a stream whose head is out with the documented error event and [DONE]. The status code is
 * recorded on the response (not sent: the status line is gone) so the request is counted as what
 * a plain request would have got.
 */
export function endStreamWithError(res: ServerResponse, status: number, detail: string): void {
  res.statusCode = status;
  res.end(sseError(detail) + SSE_DONE);
}
