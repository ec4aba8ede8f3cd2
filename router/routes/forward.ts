import type { ServerResponse } from "node:http";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { TSchema } from "typebox";
import { HttpError, badRequest, payloadTooLarge, serviceUnavailable, tooManyRequests } from "../../common/errors.js";
import { SSE_HEADERS } from "../../common/sse.js";
import type { App } from "../app.js";
import { ModelStartError, type Backend, type ModelStatus } from "../backends/types.js";
import { NoEndpointError, QueueFullError, RETRY_AFTER_SECONDS, type Balancer, type ClientHint, type Lease, type PickHints } from "../balancer.js";
import type { RouterConfig } from "../config.js";
import { endStreamWithError, type UpstreamProxy } from "../proxy.js";
import { CLIENT_CLOSED, clientGoneSignal, contextOf } from "../request-context.js";
import { routingKey as routingKeyOf } from "../routing-key.js";
import { PROXY_ERRORS, streamable, unknownModel } from "./responses.js";
import { admit, type QuotaOptions } from "./quota.js";

export interface ForwardOptions extends QuotaOptions {
  config: RouterConfig;
  backend: Backend;
  balancer: Balancer;
  proxy: UpstreamProxy;
}

/** A route whose validated body goes to a runtime of the model it names. */
export interface ProxiedRoute {
  path: string;
  body: TSchema;
  response: TSchema;
  summary: string;
  /** The body field naming the model. */
  modelField: "model_id" | "model";
  tags: string[];
  /** Bounded by --max-batch-prompts. */
  batch?: boolean;
}

/** The model a request names (or the current one), 404 for an id the backend does not know. */
export function resolveModel(backend: Backend, requested: unknown): string {
  if (requested === undefined || requested === null) {
    const current = backend.current();
    if (current === null) throw badRequest("no model is loaded: load one with POST /models/load or name one in the request");
    return current;
  }
  const id = String(requested);
  if (!backend.lookup(id)) throw unknownModel(id);
  return id;
}

/** Whose request it is, for the balancer's fair queue. */
function clientOf(request: FastifyRequest): ClientHint | undefined {
  const tenant = contextOf(request).tenant;
  return tenant ? { name: tenant.name, weight: tenant.weight, maxQueued: tenant.maxQueued } : undefined;
}

/**
 * An endpoint of the model for this request, starting the model and waiting (bounded by
 * --ready-wait-seconds, and by the client staying) when none is ready, or for a turn while it is
 * saturated. Rejects with the HttpError the client gets (503, or 429 for a full queue).
 */
async function acquireWithin(options: ForwardOptions, modelId: string, hints: PickHints, request: FastifyRequest, reply: FastifyReply): Promise<Lease> {
  const { config, backend, balancer } = options;
  const timeout = AbortSignal.timeout(config.readyWaitSeconds * 1000);
  const clientGone = clientGoneSignal(request, reply);
  try {
    return await balancer.acquire(modelId, AbortSignal.any([timeout, clientGone]), hints);
  } catch (error) {
    if (error instanceof QueueFullError) throw tooManyRequests(error.message, error.retryAfterSeconds);
    if (error instanceof ModelStartError || error instanceof NoEndpointError) throw serviceUnavailable(error.message, RETRY_AFTER_SECONDS);
    if (clientGone.aborted) throw CLIENT_CLOSED;
    if (!timeout.aborted) throw error;
    const status = backend.status(modelId);
    if (status.state === "ready") {
      throw serviceUnavailable(`model ${modelId} had no free runtime within ${config.readyWaitSeconds} s (every one is busy); try again shortly`, RETRY_AFTER_SECONDS);
    }
    throw serviceUnavailable(
      `model ${modelId} is not ready after ${config.readyWaitSeconds} s (${status.state}${status.message ? `: ${status.message}` : ""}); try again shortly`,
      RETRY_AFTER_SECONDS,
    );
  }
}

/** How often a held stream asks the backend how far its model is. */
export const WAIT_POLL_MS = 300;
/** A held stream writes at least this often, so that proxies and ingresses keep it open. */
export const WAIT_HEARTBEAT_MS = 5000;

/**
 * What a held request waits for, the text of its SSE comment: `queued 3` (its place in the
 * router's queue), `scheduling` (a runtime is being started or placed), `downloading 42%` (or
 * `downloading 120.5 MiB` without a known size), `loading 80%` (or `loading`), `restarting`.
 */
export function waitStage(status: ModelStatus, queuePosition: number | undefined): string {
  switch (status.state) {
    case "ready":
      return queuePosition === undefined ? "queued" : `queued ${queuePosition}`;
    case "downloading":
    case "loading":
      return `${status.state}${amountOf(status.progress)}`;
    case "restarting":
      return "restarting";
    default:
      return "scheduling";
  }
}

function amountOf(progress: ModelStatus["progress"]): string {
  if (!progress) return "";
  if (progress.fraction !== null) return ` ${Math.min(100, Math.floor(progress.fraction * 100))}%`;
  return progress.bytes_done > 0 && progress.bytes_total === null ? ` ${(progress.bytes_done / 1024 / 1024).toFixed(1)} MiB` : "";
}

/**
 * A streaming request that must wait: its SSE head is out, and SSE comment lines (which
 * compliant parsers ignore) say what it waits for whenever that changes, and at least every
 * WAIT_HEARTBEAT_MS. The runtime's stream continues the same response (UpstreamProxy).
 */
class HeldStream {
  private line = "";
  private writtenAt = 0;
  private queuePosition: number | undefined;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly res: ServerResponse,
    private readonly backend: Backend,
    private readonly modelId: string,
  ) {
    this.timer = setInterval(() => this.report(), WAIT_POLL_MS);
    this.timer.unref();
  }

  queued(position: number): void {
    this.queuePosition = position;
    this.report();
  }

  report(): void {
    const res = this.res;
    if (res.writableEnded || res.destroyed) return this.stop();
    const line = waitStage(this.backend.status(this.modelId), this.queuePosition);
    const now = Date.now();
    // The poll's period is taken off the heartbeat so that the gap never exceeds it.
    if (line === this.line && now - this.writtenAt < WAIT_HEARTBEAT_MS - WAIT_POLL_MS) return;
    this.line = line;
    this.writtenAt = now;
    res.write(`: ${line}\n\n`);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/**
 * Waits for an endpoint for a streaming request. A wait that ends at once (a failed model, a full
 * queue) still answers with its status code; a longer one sends the SSE head and reports progress,
 * and its failure then ends the stream with the SSE error event. Undefined when the stream was
 * ended here (failed, or the client left).
 */
async function leaseHeld(options: ForwardOptions, modelId: string, hints: PickHints, request: FastifyRequest, reply: FastifyReply): Promise<Lease | undefined> {
  let held: HeldStream | undefined;
  let queuePosition: number | undefined;
  const onQueued = (position: number) => {
    queuePosition = position;
    held?.queued(position);
  };
  const waiting = acquireWithin(options, modelId, { ...hints, onQueued }, request, reply);
  if (await settlesAtOnce(waiting)) return await waiting;

  const res = reply.raw;
  openStream(request, reply);
  held = new HeldStream(res, options.backend, modelId);
  if (queuePosition === undefined) held.report();
  else held.queued(queuePosition);
  try {
    return await waiting;
  } catch (error) {
    if (error === CLIENT_CLOSED || res.destroyed) return undefined;
    if (error instanceof HttpError) endStreamWithError(res, error.statusCode, error.message);
    else {
      request.log.error({ err: error }, "waiting for an endpoint failed");
      endStreamWithError(res, 500, "internal server error");
    }
    return undefined;
  } finally {
    held.stop();
  }
}

/** True when the promise settles before any I/O: a wait that needs none (an immediate refusal). */
function settlesAtOnce(promise: Promise<unknown>): Promise<boolean> {
  const settled = promise.then(
    () => true,
    () => true,
  );
  return Promise.race([settled, new Promise<boolean>((resolve) => setImmediate(resolve, false))]);
}

/** Sends the SSE head of a held stream, with the headers the hooks set (x-request-id, rate limits). */
function openStream(request: FastifyRequest, reply: FastifyReply): void {
  const res = reply.raw;
  reply.hijack();
  for (const [name, value] of Object.entries(reply.getHeaders())) if (value !== undefined) res.setHeader(name, value as string);
  res.writeHead(200, { ...SSE_HEADERS, "x-request-id": String(request.id) });
  res.socket?.setNoDelay(true);
}

/** Registers a proxied route: validate, resolve the model, lease an endpoint, relay the answer. */
export function proxiedRoute(app: App, options: ForwardOptions, route: ProxiedRoute): void {
  const { config, backend, balancer, proxy } = options;
  app.post(
    route.path,
    {
      schema: {
        summary: route.summary,
        tags: route.tags,
        body: route.body,
        response: { 200: streamable(route.response, "The answer (JSON), or a stream of events with stream: true."), ...PROXY_ERRORS },
      },
      config: { scope: "generate" },
    },
    async (request, reply) => {
      const body = request.body as Record<string, unknown>;
      if (route.batch && (body.prompts as unknown[]).length > config.maxBatchPrompts) {
        throw payloadTooLarge(`prompts: at most ${config.maxBatchPrompts} prompts per batch, got ${(body.prompts as unknown[]).length}`);
      }
      const context = contextOf(request);
      const modelId = resolveModel(backend, body[route.modelField]);
      context.model = modelId;
      // Only prefix routing reads the prompt; least-load does not pay for the key.
      const routingKey = balancer.strategyFor(modelId) === "prefix" ? routingKeyOf(body) : undefined;
      const hints: PickHints = { key: routingKey, client: clientOf(request) };
      // The key may use the model and has budget left (403, 429); what it used is settled at the end.
      const admission = await admit(options, request, body, modelId);
      let lease: Lease | undefined;
      try {
        lease =
          balancer.tryAcquire(modelId, hints) ??
          (body.stream === true ? await leaseHeld(options, modelId, hints, request, reply) : await acquireWithin(options, modelId, hints, request, reply));
      } catch (error) {
        admission.settle(undefined);
        throw error;
      }
      // A held stream that ended while waiting (an error event went out, or the client left).
      if (!lease) {
        admission.settle(undefined);
        return reply;
      }
      if (reply.raw.destroyed) {
        lease.release();
        admission.settle(undefined);
        return reply;
      }
      if (!reply.raw.headersSent) {
        for (const [name, value] of Object.entries(reply.getHeaders())) if (value !== undefined) reply.raw.setHeader(name, value as string);
        reply.hijack();
      }
      proxy.forward(
        request.raw,
        reply.raw,
        {
          modelId,
          route: route.path,
          requestId: request.id,
          rawBody: context.rawBody,
          startedAt: context.startedAt,
          log: request.log,
          routingKey,
          onUpstreamEnd: (end) => admission.settle(end),
        },
        lease,
      );
      return reply;
    },
  );
}
