import fp from "fastify-plugin";
import type { App } from "../app.js";
import type { RuntimeMetrics } from "../metrics.js";
import type { RuntimeState } from "../state.js";

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

    app.addHook("onResponse", async (request, reply) => {
      state.settle(request);
      const endpoint = request.routeOptions.url;
      if (endpoint && request.method === "POST") metrics.requests.inc({ endpoint, status: String(reply.statusCode) });
    });
  },
  { name: "corral-runtime-accounting" },
);
