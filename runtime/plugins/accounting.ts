import type { FastifyRequest } from "fastify";
import fp from "fastify-plugin";
import type { App } from "../app.js";
import type { RuntimeMetrics } from "../metrics.js";
import type { RuntimeState } from "../state.js";

/**
 * The status a streamed answer really ended with, where it differs from the 200 its headers
 * carried (a failure after the first byte is sent as an error event, not a status code).
 */
const streamedStatus = new WeakMap<FastifyRequest, number>();

/** Records how a hijacked (streamed) answer ended, for its one count in the request metrics. */
export function setStreamedStatus(request: FastifyRequest, status: number): void {
  streamedStatus.set(request, status);
}

/** Tracks arriving generation requests (every POST route generates) and counts their answers. */
export const accounting = fp(
  async function accounting(app: App, options: { state: RuntimeState; metrics: RuntimeMetrics }): Promise<void> {
    const { state, metrics } = options;

    // Arrivals: see RuntimeState.arriving. Settled when the request reaches the engine, or when
    // it ends first (a validation error, a client that went away).
    app.addHook("preParsing", async (request) => {
      if (request.method === "POST") state.arrive(request);
    });
    app.addHook("onRequestAbort", async (request) => state.settle(request));
    app.addHook("onResponse", async (request) => state.settle(request));

    // Each answer is counted once, here, when its connection is done with it: onResponse would
    // miss a client that went away (no "finish") and fires for hijacked streams too.
    app.addHook("onRequest", async (request, reply) => {
      const endpoint = request.routeOptions.url;
      if (!endpoint || request.method !== "POST") return;
      reply.raw.once("close", () => {
        // 499: the client closed the connection before the answer was complete (nginx's convention).
        const status = reply.raw.writableFinished ? (streamedStatus.get(request) ?? reply.raw.statusCode) : 499;
        metrics.requests.inc({ endpoint, status: String(status) });
      });
    });
  },
  { name: "corral-runtime-accounting" },
);
