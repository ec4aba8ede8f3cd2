import Type from "typebox";
import type { CorralApp } from "../common/http.js";
import type { OperatorMetrics } from "./metrics.js";

export interface HealthAppOptions {
  metrics: OperatorMetrics;
  /** Undefined when ready; otherwise what it is waiting for. */
  notReadyReason: () => string | undefined;
  leader: () => { leading: boolean; identity: string; leader: string | null };
  /** Refreshes gauges computed on demand (queue depth, models by phase) before a scrape. */
  refreshGauges: () => void;
}

const Detail = Type.Object({ detail: Type.String() });

/** /healthz, /readyz and /metrics of the operator: a plugin that never listens (run.ts does). */
export async function healthApp(app: CorralApp, options: HealthAppOptions): Promise<void> {
  app.get(
    "/healthz",
    { schema: { response: { 200: Type.Object({ status: Type.Literal("alive"), leading: Type.Boolean(), identity: Type.String(), leader: Type.Union([Type.String(), Type.Null()]) }) } } },
    async () => ({ status: "alive" as const, ...options.leader() }),
  );

  app.get("/readyz", { schema: { response: { 200: Type.Object({ status: Type.Literal("ready") }), 503: Detail } } }, async (_request, reply) => {
    const reason = options.notReadyReason();
    if (reason === undefined) return { status: "ready" as const };
    return reply.code(503).send({ detail: reason });
  });

  app.get("/metrics", async (_request, reply) => {
    options.refreshGauges();
    reply.header("content-type", options.metrics.registry.contentType);
    return options.metrics.registry.metrics();
  });
}
