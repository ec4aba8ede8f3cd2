import type { FastifyReply, FastifyRequest } from "fastify";
import type { TSchema } from "typebox";
import { badRequest, payloadTooLarge, serviceUnavailable } from "../../common/errors.js";
import type { App } from "../app.js";
import { ModelStartError, type Backend } from "../backends/types.js";
import { NoEndpointError, RETRY_AFTER_SECONDS, type Balancer, type Lease } from "../balancer.js";
import type { RouterConfig } from "../config.js";
import type { UpstreamProxy } from "../proxy.js";
import { CLIENT_CLOSED, clientGoneSignal, contextOf } from "../request-context.js";
import { routingKey as routingKeyOf } from "../routing-key.js";
import { PROXY_ERRORS, streamable, unknownModel } from "./responses.js";

export interface ForwardOptions {
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

/**
 * An endpoint of the model for this request, starting the model and waiting (bounded by
 * --ready-wait-seconds, and by the client staying) when none is ready.
 */
async function leaseFor(options: ForwardOptions, modelId: string, key: number | undefined, request: FastifyRequest, reply: FastifyReply): Promise<Lease> {
  const { config, backend, balancer } = options;
  const now = balancer.tryAcquire(modelId, { key });
  if (now) return now;
  const timeout = AbortSignal.timeout(config.readyWaitSeconds * 1000);
  const clientGone = clientGoneSignal(request, reply);
  try {
    return await balancer.acquire(modelId, AbortSignal.any([timeout, clientGone]), { key });
  } catch (error) {
    if (error instanceof ModelStartError || error instanceof NoEndpointError) throw serviceUnavailable(error.message, RETRY_AFTER_SECONDS);
    if (clientGone.aborted) throw CLIENT_CLOSED;
    if (!timeout.aborted) throw error;
    const status = backend.status(modelId);
    throw serviceUnavailable(
      `model ${modelId} is not ready after ${config.readyWaitSeconds} s (${status.state}${status.message ? `: ${status.message}` : ""}); try again shortly`,
      RETRY_AFTER_SECONDS,
    );
  }
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
      const routingKey = balancer.strategy === "prefix" ? routingKeyOf(body) : undefined;
      const lease = await leaseFor(options, modelId, routingKey, request, reply);
      if (reply.raw.destroyed) {
        lease.release();
        return reply;
      }
      for (const [name, value] of Object.entries(reply.getHeaders())) if (value !== undefined) reply.raw.setHeader(name, value as string);
      reply.hijack();
      proxy.forward(
        request.raw,
        reply.raw,
        { modelId, route: route.path, requestId: request.id, rawBody: context.rawBody, startedAt: context.startedAt, log: request.log, routingKey },
        lease,
      );
      return reply;
    },
  );
}
