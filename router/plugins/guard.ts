import type { FastifyRequest } from "fastify";
import fp from "fastify-plugin";
import { forbidden, serviceUnavailable, tooManyRequests, unauthorized } from "../../common/errors.js";
import type { App } from "../app.js";
import type { AuthFailureLimiter } from "../auth-limiter.js";
import { anonymousTenant, GENERATE_ONLY, type KeyStore, type Scope, type Tenant } from "../tenants.js";
import { contextOf } from "../request-context.js";
import { RETRY_AFTER_SECONDS } from "../balancer.js";
import { allowedHostNames, hostName, type RouterConfig } from "../config.js";
import type { RouterMetrics } from "../metrics.js";
import type { RateLimiter, RateLimitSettings } from "../ratelimit.js";
import type { RequestCounts } from "./accounting.js";

declare module "fastify" {
  interface FastifyContextConfig {
    /** The scope a key needs for this route (none: any valid key, or none where keys are off). */
    scope?: Scope;
  }
}

export interface GuardOptions {
  config: RouterConfig;
  keys: KeyStore;
  /** Undefined: no lockout after failed authentication. */
  authLimiter: AuthFailureLimiter | undefined;
  /** Undefined when rate limiting is off. */
  limiter: RateLimiter | undefined;
  metrics: RouterMetrics;
  counts: RequestCounts;
  lifecycle: { closing: boolean };
}

/** The rate limit a key has: its own (0 per minute: none), or the router's. */
function rateSettings(tenant: Tenant, limiter: RateLimiter): RateLimitSettings | undefined {
  if (!tenant.requests) return limiter.settings;
  if (tenant.requests.perMinute <= 0) return undefined;
  return { points: tenant.requests.perMinute, duration: 60, burst: tenant.requests.burst };
}

/** Routes without rate limits: probes, scraping, documentation. Only /health is also without auth. */
function isUnlimited(path: string): boolean {
  return path === "/health" || path === "/metrics" || path === "/docs" || path.startsWith("/docs/");
}

/**
 * What every request passes before its route runs, in this order: the Host check (DNS
 * rebinding), 503 while the router shuts down, authentication (the key's scope must cover the
 * route's) and the key's rate limit. The request's tenant goes into its context for the routes
 * (allowed models, token budgets, fair queueing).
 */
export const guard = fp(
  async function guard(app: App, options: GuardOptions): Promise<void> {
    const { config, keys, authLimiter, limiter, metrics, counts, lifecycle } = options;
    const allowedHosts = allowedHostNames(config);

    /**
     * The tenant of a request's key (401 without a valid one). A client address that failed too
     * often is refused (429) before its key is looked at.
     */
    async function authenticate(request: FastifyRequest): Promise<Tenant> {
      const address = `ip:${request.ip}`;
      const lockedFor = authLimiter ? await authLimiter.lockedFor(address) : 0;
      if (lockedFor > 0) {
        metrics.authFailures.inc({ reason: "locked_out" });
        throw tooManyRequests(`too many failed authentication attempts; retry in ${lockedFor} s`, lockedFor);
      }
      const header = request.headers.authorization;
      const tenant = keys.current.verify(header);
      if (!tenant) {
        metrics.authFailures.inc({ reason: header ? "invalid_key" : "missing_key" });
        // Only presented keys count towards the lockout: a request without one guesses nothing.
        if (header) await authLimiter?.fail(address);
        throw unauthorized(header ? "invalid API key" : "missing API key: send Authorization: Bearer <key>");
      }
      return tenant;
    }

    /** Who is asking: a key's tenant, or an anonymous one where the route needs no key. */
    async function identify(request: FastifyRequest, scope: Scope | undefined): Promise<Tenant> {
      const tenants = keys.current;
      if (!tenants.enabled) return anonymousTenant(request.ip);
      // With only admin keys, what needs no more than generate stays open (a key is still checked when sent).
      const open = tenants.adminOnly && (scope === undefined || scope === "generate") && request.headers.authorization === undefined;
      return open ? anonymousTenant(request.ip, GENERATE_ONLY) : await authenticate(request);
    }

    app.addHook("onRequest", async (request, reply) => {
      // A web page whose name an attacker re-points at 127.0.0.1 sends its own name as Host.
      const host = request.headers.host;
      if (allowedHosts && host !== undefined && !allowedHosts.has(hostName(host))) {
        throw forbidden(`host ${hostName(host)} is not allowed: add it to --allowed-hosts (CORRAL_ALLOWED_HOSTS), or '*' to allow any`);
      }
      if (lifecycle.closing) {
        reply.header("connection", "close");
        throw serviceUnavailable("the router is shutting down", RETRY_AFTER_SECONDS);
      }
      const path = request.url.split("?", 1)[0]!;
      if (path === "/health") return;
      const scope = request.routeOptions.config?.scope;
      const tenant = await identify(request, scope);
      if (scope && !tenant.scopes.has(scope)) {
        metrics.authFailures.inc({ reason: "scope" });
        throw forbidden(`key "${tenant.name}" may not call ${request.routeOptions.url}: it needs the ${scope} scope`);
      }
      contextOf(request).tenant = tenant;
      if (isUnlimited(path) || !limiter) return;
      const settings = rateSettings(tenant, limiter);
      if (!settings) return;
      const decision = await limiter.check(tenant.name, settings);
      reply.headers(limiter.headers(decision));
      if (!decision.allowed) {
        metrics.rateLimitRejections.inc();
        counts.rateLimited++;
        throw tooManyRequests(
          `rate limit exceeded: ${settings.points} requests per ${settings.duration} s with bursts of ${settings.burst}; retry in ${decision.resetSeconds} s`,
          decision.resetSeconds,
        );
      }
    });
  },
  { name: "corral-guard" },
);
