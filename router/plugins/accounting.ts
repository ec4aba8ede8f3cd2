import type { FastifyReply, FastifyRequest } from "fastify";
import fp from "fastify-plugin";
import type { App } from "../app.js";
import type { RouterMetrics } from "../metrics.js";
import { contextOf, type RequestContext } from "../request-context.js";

/** The router's request counters, shown by /system/info. */
export class RequestCounts {
  total = 0;
  rateLimited = 0;
  readonly byStatus = new Map<string, number>();
}

/** The requests being answered, and a promise for the moment there are none (the drain on shutdown waits on it). */
export class InFlight {
  private count = 0;
  private waiters: (() => void)[] = [];

  get size(): number {
    return this.count;
  }

  enter(): void {
    this.count++;
  }

  leave(): void {
    this.count = Math.max(0, this.count - 1);
    if (this.count === 0) for (const resolve of this.waiters.splice(0)) resolve();
  }

  /** Resolves once no request is in flight (at once if none is). */
  idle(): Promise<void> {
    if (this.count === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}

/** Probes and scrapes are logged at debug: they would drown the requests people look for. */
const QUIET_ROUTES = new Set(["/health", "/metrics"]);

/**
 * Counts every request while it is in flight (for /system/info and the drain on shutdown), and
 * when its answer ends records it: the request metrics and one log line (never the prompt text).
 */
export const accounting = fp(
  async function accounting(app: App, options: { metrics: RouterMetrics; counts: RequestCounts; lifecycle: { inFlight: InFlight } }): Promise<void> {
    const { metrics, counts, lifecycle } = options;

    function account(request: FastifyRequest, reply: FastifyReply, context: RequestContext): void {
      lifecycle.inFlight.leave();
      counts.total++;
      const finished = reply.raw.writableFinished;
      // 499: the client closed the connection before the answer was complete (nginx's convention).
      const status = finished ? String(reply.raw.statusCode) : "499";
      counts.byStatus.set(status, (counts.byStatus.get(status) ?? 0) + 1);
      const route = request.routeOptions.url ?? "not_found";
      const seconds = (performance.now() - context.startedAt) / 1000;
      metrics.requests.inc({ route, method: request.method, status, model: context.model });
      const tenant = context.tenant;
      // Keys only: an anonymous client's address would make a label per client.
      if (tenant && !tenant.anonymous) metrics.keyRequests.inc({ key: tenant.name, status });
      metrics.duration.observe({ route, status, model: context.model }, seconds);
      const entry = {
        route,
        method: request.method,
        model: context.model || undefined,
        key: tenant && !tenant.anonymous ? tenant.name : undefined,
        status: Number(status),
        durationMs: Math.round(seconds * 10_000) / 10,
      };
      if (QUIET_ROUTES.has(route) || route.startsWith("/docs")) request.log.debug(entry, "request");
      else request.log.info(entry, "request");
    }

    app.addHook("onRequest", async (request, reply) => {
      const context = contextOf(request);
      lifecycle.inFlight.enter();
      reply.raw.once("close", () => account(request, reply, context));
    });
  },
  { name: "corral-accounting" },
);
