import type { FastifyReply, FastifyRequest } from "fastify";
import { HttpError } from "../common/errors.js";
import type { Tenant } from "./tenants.js";

/** Per-request bookkeeping shared by the hooks and the routes (logs, metrics, forwarding). */
export interface RequestContext {
  /** `performance.now()` when the request arrived. */
  startedAt: number;
  /** A catalogued model id (never an arbitrary client string: it is a metric label); "" for none. */
  model: string;
  /** The body's bytes as sent: validated here, forwarded to the runtime unchanged. */
  rawBody: Buffer | undefined;
  clientGone: AbortController | undefined;
  /** Who asked (set by the guard): the key's tenant, or an anonymous one named by the address. */
  tenant?: Tenant;
}

const contexts = new WeakMap<FastifyRequest, RequestContext>();

export function contextOf(request: FastifyRequest): RequestContext {
  let context = contexts.get(request);
  if (!context) {
    context = { startedAt: performance.now(), model: "", rawBody: undefined, clientGone: undefined };
    contexts.set(request, context);
  }
  return context;
}

/** An abort signal that fires when the client goes away before its answer. */
export function clientGoneSignal(request: FastifyRequest, reply: FastifyReply): AbortSignal {
  const context = contextOf(request);
  if (!context.clientGone) {
    const controller = new AbortController();
    context.clientGone = controller;
    reply.raw.once("close", () => {
      if (!reply.raw.writableFinished) controller.abort(new Error("client went away"));
    });
  }
  return context.clientGone.signal;
}

/** Thrown when the client left while its request waited: nobody reads the answer (nginx's 499). */
export const CLIENT_CLOSED = new HttpError(499, "client closed the request");
