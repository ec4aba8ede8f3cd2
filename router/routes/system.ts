import os from "node:os";
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import type { FastifyReply } from "fastify";
import Type from "typebox";
import type { RouterAppOptions } from "../app.js";
import type { Tenant } from "../tenants.js";
import type { TokenBudgets } from "../token-budget.js";
import type { RouterMetrics } from "../metrics.js";
import type { RequestCounts } from "../plugins/accounting.js";
import type { RateLimiter } from "../ratelimit.js";
import type { RuntimeInfoCache } from "../runtime-info.js";
import { HealthResponse, SystemInfo } from "../schemas.js";
import { errors } from "./responses.js";

export interface SystemRouteOptions extends Pick<RouterAppOptions, "config" | "backend" | "balancer" | "limiter" | "keys" | "budgets" | "metrics" | "lifecycle" | "version"> {
  counts: RequestCounts;
  runtimeInfo: RuntimeInfoCache;
  startedAt: Date;
}

/** The Prometheus text of a router's registry (main port and --metrics-port). */
async function metricsText(metrics: RouterMetrics, limiter: RateLimiter | undefined, reply: FastifyReply): Promise<string> {
  metrics.rateLimitStore.set(limiter?.mode === "redis" ? 1 : 0);
  reply.header("content-type", metrics.registry.contentType);
  return await metrics.registry.metrics();
}

/** The --metrics-port listener: only /metrics, without auth (reachable inside the cluster only). */
export const metricsApp: FastifyPluginAsyncTypebox<{ metrics: RouterMetrics; limiter: RateLimiter | undefined }> = async (app, options) => {
  app.get("/metrics", { schema: { response: { 200: Type.String() } } }, async (_request, reply) => await metricsText(options.metrics, options.limiter, reply));
};

/** Router, host and runtime information, health, and metrics. */
export const systemRoutes: FastifyPluginAsyncTypebox<SystemRouteOptions> = async (app, options) => {
  const { config, backend, balancer, limiter, keys, budgets, metrics, counts, runtimeInfo, lifecycle, version, startedAt } = options;
  const tags = ["system"];

  app.get(
    "/system/info",
    { schema: { summary: "Router, host and runtime information", tags, response: { 200: SystemInfo, ...errors(401, 403, 429) } }, config: { scope: "admin" } },
    async () => {
      const current = backend.current();
      const running = backend.list().filter((entry) => {
        const state = backend.status(entry.model_id).state;
        return state !== "not_loaded" || entry.model_id === current;
      });
      const models = await Promise.all(
        running.map(async (entry) => {
          const status = backend.status(entry.model_id);
          return {
            model_id: entry.model_id,
            state: status.state,
            current: entry.model_id === current,
            message: status.message,
            endpoints: await Promise.all(
              status.endpoints.map(async (endpoint) => ({ id: endpoint.id, in_flight: balancer.inFlightTo(endpoint), info: await runtimeInfo.get(endpoint, 0) })),
            ),
          };
        }),
      );
      const cpus = os.cpus();
      return {
        router: {
          version,
          uptime_seconds: Math.round((Date.now() - startedAt.getTime()) / 100) / 10,
          started_at: startedAt.toISOString(),
          node_version: process.version,
          pid: process.pid,
          backend: backend.kind,
          auth: keys.current.enabled,
          rate_limit: {
            store: limiter ? limiter.mode : "off",
            points: config.rateLimitPoints,
            duration_seconds: config.rateLimitDuration,
            burst: config.rateLimitBurst,
            algorithm: "token bucket (GCRA): capacity burst, refilled at points/duration per second",
          },
        },
        requests: {
          total: counts.total,
          // This request is in flight too; report the others.
          in_flight: Math.max(0, lifecycle.inFlight.size - 1),
          rate_limited: counts.rateLimited,
          by_status: Object.fromEntries(counts.byStatus),
        },
        host: {
          hostname: os.hostname(),
          platform: os.platform(),
          arch: os.arch(),
          cpu_count: os.availableParallelism(),
          cpu_model: cpus[0]?.model ?? "unknown",
          load_average: os.loadavg(),
          memory_total_bytes: os.totalmem(),
          memory_free_bytes: os.freemem(),
          router_rss_bytes: process.memoryUsage.rss(),
        },
        models,
      };
    },
  );

  app.get(
    "/health",
    { schema: { summary: "Health of the router and its components; 503 when it cannot serve", tags, response: { 200: HealthResponse, 503: HealthResponse } } },
    async (_request, reply) => {
      const current = backend.current();
      const backendOk = backend.healthy();
      const rateLimiter = limiter ? limiter.mode : "off";
      const currentState = current === null ? "not_loaded" : backend.status(current).state;
      const serving = backendOk && !lifecycle.closing;
      const degraded = rateLimiter === "memory-fallback" || (current !== null && currentState !== "ready");
      reply.code(serving ? 200 : 503);
      return {
        status: serving ? (degraded ? "degraded" : "ok") : "unavailable",
        version,
        components: {
          router: lifecycle.closing ? "closing" : "ok",
          backend: { kind: backend.kind, state: backendOk ? "ok" : "unavailable" },
          rate_limiter: rateLimiter,
          current_model: { model_id: current, state: currentState },
        },
      } as const;
    },
  );

  app.get(
    "/metrics",
    {
      schema: { summary: "Prometheus metrics (with API keys: needs a key with the admin scope, unless scraped on --metrics-port)", tags, response: { 200: Type.String(), ...errors(401, 403, 429) } },
      config: { scope: "admin" },
    },
    async (_request, reply) => await metricsText(metrics, limiter, reply),
  );

  app.get(
    "/usage",
    {
      schema: {
        summary: "Each key's limits and use: tokens this minute and today (shared by the router replicas through Redis), and this replica's request and token counts",
        tags,
        response: { 200: UsageResponse, ...errors(401, 403, 429) },
      },
      config: { scope: "admin" },
    },
    async () => ({ keys: await Promise.all(keys.current.list().map((tenant) => keyUsage(tenant, budgets, metrics))) }),
  );
};

const WindowUsageSchema = Type.Object({
  used: Type.Integer(),
  reserved: Type.Integer({ description: "Tokens held by requests in flight (an upper bound of what they may use)." }),
  limit: Type.Union([Type.Integer(), Type.Null()]),
  reset_seconds: Type.Integer(),
});

const UsageResponse = Type.Object({
  keys: Type.Array(
    Type.Object({
      name: Type.String(),
      scopes: Type.Array(Type.String()),
      models: Type.Union([Type.Array(Type.String()), Type.Null()]),
      weight: Type.Number(),
      requests_per_minute: Type.Union([Type.Number(), Type.Null()], { description: "The key's own rate; null: the router's." }),
      tokens: Type.Object({ minute: WindowUsageSchema, day: WindowUsageSchema }),
      this_router: Type.Object({ requests: Type.Integer(), prompt_tokens: Type.Integer(), completion_tokens: Type.Integer() }),
    }),
  ),
});

async function keyUsage(tenant: Tenant, budgets: TokenBudgets, metrics: RouterMetrics) {
  const usage = await budgets.usage(tenant);
  const window = (w: (typeof usage)["minute"]) => ({ used: w.used, reserved: w.reserved, limit: w.limit, reset_seconds: w.resetSeconds });
  const sum = async (counter: { get(): Promise<{ values: { labels: Record<string, string | number | undefined>; value: number }[] }> }, match: Record<string, string>) =>
    (await counter.get()).values.filter((v) => Object.entries(match).every(([k, value]) => v.labels[k] === value)).reduce((total, v) => total + v.value, 0);
  return {
    name: tenant.name,
    scopes: [...tenant.scopes],
    models: tenant.models ? [...tenant.models] : null,
    weight: tenant.weight,
    requests_per_minute: tenant.requests?.perMinute ?? null,
    tokens: { minute: window(usage.minute), day: window(usage.day) },
    this_router: {
      requests: await sum(metrics.keyRequests, { key: tenant.name }),
      prompt_tokens: await sum(metrics.keyTokens, { key: tenant.name, kind: "prompt" }),
      completion_tokens: await sum(metrics.keyTokens, { key: tenant.name, kind: "completion" }),
    },
  };
}
