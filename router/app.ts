import type { FastifyInstance } from "fastify";
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { AuthFailureLimiter } from "./auth-limiter.js";
import type { Backend } from "./backends/types.js";
import type { Balancer } from "./balancer.js";
import type { RouterConfig } from "./config.js";
import type { RouterMetrics } from "./metrics.js";
import { accounting, RequestCounts, type InFlight } from "./plugins/accounting.js";
import { docs } from "./plugins/docs.js";
import { guard } from "./plugins/guard.js";
import { jsonBody } from "./plugins/json-body.js";
import type { UpstreamProxy } from "./proxy.js";
import type { KeyStore } from "./tenants.js";
import type { TokenBudgets } from "./token-budget.js";
import type { RateLimiter } from "./ratelimit.js";
import { generationRoutes } from "./routes/generation.js";
import { modelRoutes } from "./routes/models.js";
import { openAiRoutes } from "./routes/openai.js";
import { systemRoutes } from "./routes/system.js";
import { RuntimeInfoCache } from "./runtime-info.js";

export type App = FastifyInstance<any, any, any, any, TypeBoxTypeProvider>;

export interface RouterAppOptions {
  config: RouterConfig;
  backend: Backend;
  balancer: Balancer;
  /** Undefined when rate limiting is off. */
  limiter: RateLimiter | undefined;
  /** The keys in force (reloaded when their files change); without any, no route needs a key. */
  keys: KeyStore;
  /** Token budgets per key (Redis-shared where the router has Redis). */
  budgets: TokenBudgets;
  /** Locks a client out after repeated failed authentication; undefined: no limit. */
  authLimiter?: AuthFailureLimiter;
  metrics: RouterMetrics;
  proxy: UpstreamProxy;
  version: string;
  /**
   * Set by run() when the router starts shutting down: new requests get 503. `inFlight` counts
   * the requests being answered, so run() knows when the drain is done.
   */
  lifecycle: { closing: boolean; inFlight: InFlight };
}

/**
 * The router's HTTP API as a fastify plugin (run.ts builds the server and listens): the seed's
 * endpoints and the OpenAI-compatible ones, proxied to the runtimes of the named model after
 * auth, rate limits and validation; model management; system info, health, metrics and docs.
 *
 * Plugins load in order: the docs (they see every route registered after them), the JSON body
 * parser, the hooks every request passes (accounting, then the guard: host, closing, auth, rate
 * limit), then one route module per area.
 */
export async function routerApp(app: App, options: RouterAppOptions): Promise<void> {
  const shared = {
    ...options,
    authLimiter: options.authLimiter,
    counts: new RequestCounts(),
    runtimeInfo: new RuntimeInfoCache(),
    startedAt: new Date(),
  };
  await app.register(docs, shared);
  await app.register(jsonBody);
  await app.register(accounting, shared);
  await app.register(guard, shared);
  await app.register(generationRoutes, shared);
  await app.register(openAiRoutes, shared);
  await app.register(modelRoutes, shared);
  await app.register(systemRoutes, shared);
}
