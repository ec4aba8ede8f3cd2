import type { FastifyRequest } from "fastify";
import fp from "fastify-plugin";
import { forbidden, serviceUnavailable, tooManyRequests, unauthorized } from "../../common/errors.js";
import type { App } from "../app.js";
import type { AuthFailureLimiter } from "../auth-limiter.js";
import type { ApiKeys } from "../auth.js";
import { RETRY_AFTER_SECONDS } from "../balancer.js";
import { allowedHostNames, hostName, type RouterConfig } from "../config.js";
import type { RouterMetrics } from "../metrics.js";
import type { RateLimiter } from "../ratelimit.js";
import type { RequestCounts } from "./accounting.js";

declare module "fastify" {
  interface FastifyContextConfig {
    /** Needs an admin key when admin keys are configured. */
    admin?: boolean;
  }
}

export interface GuardOptions {
  config: RouterConfig;
  apiKeys: ApiKeys;
  adminKeys: ApiKeys;
  /** Undefined: no lockout after failed authentication. */
  authLimiter: AuthFailureLimiter | undefined;
  /** Undefined when rate limiting is off. */
  limiter: RateLimiter | undefined;
  metrics: RouterMetrics;
  counts: RequestCounts;
  lifecycle: { closing: boolean };
}

/** Routes without rate limits: probes, scraping, documentation. Only /health is also without auth. */
function isUnlimited(path: string): boolean {
  return path === "/health" || path === "/metrics" || path === "/docs" || path.startsWith("/docs/");
}

/**
 * What every request passes before its route runs, in this order: the Host check (DNS
 * rebinding), 503 while the router shuts down, authentication (admin routes need an admin key
 * when there are any) and the client's rate limit.
 */
export const guard = fp(
  async function guard(app: App, options: GuardOptions): Promise<void> {
    const { config, apiKeys, adminKeys, authLimiter, limiter, metrics, counts, lifecycle } = options;
    const allowedHosts = allowedHostNames(config);

    /**
     * The client id of a request's key (401 without a valid one, 403 for an ordinary key on an admin
     * route). A client address that failed too often is refused (429) before its key is looked at.
     */
    async function authenticate(request: FastifyRequest, admin: boolean): Promise<string> {
      const address = `ip:${request.ip}`;
      const lockedFor = authLimiter ? await authLimiter.lockedFor(address) : 0;
      if (lockedFor > 0) {
        metrics.authFailures.inc({ reason: "locked_out" });
        throw tooManyRequests(`too many failed authentication attempts; retry in ${lockedFor} s`, lockedFor);
      }
      const header = request.headers.authorization;
      // Both sets are checked whatever the first answers: the time taken says nothing about the key.
      const adminId = adminKeys.verify(header);
      const id = apiKeys.verify(header);
      if (adminId) return adminId;
      if (!id) {
        metrics.authFailures.inc({ reason: header ? "invalid_key" : "missing_key" });
        // Only presented keys count towards the lockout: a request without one guesses nothing.
        if (header) await authLimiter?.fail(address);
        throw unauthorized(header ? "invalid API key" : "missing API key: send Authorization: Bearer <key>");
      }
      if (admin) {
        metrics.authFailures.inc({ reason: "not_admin" });
        throw forbidden(`${request.routeOptions.url} needs an admin key`);
      }
      return id;
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
      const admin = adminKeys.enabled && request.routeOptions.config?.admin === true;
      const client = apiKeys.enabled || admin ? await authenticate(request, admin) : `ip:${request.ip}`;
      if (isUnlimited(path) || !limiter) return;
      const decision = await limiter.check(client);
      reply.headers(limiter.headers(decision));
      if (!decision.allowed) {
        metrics.rateLimitRejections.inc();
        counts.rateLimited++;
        throw tooManyRequests(
          `rate limit exceeded: ${config.rateLimitPoints} requests per ${config.rateLimitDuration} s with bursts of ${config.rateLimitBurst}; retry in ${decision.resetSeconds} s`,
          decision.resetSeconds,
        );
      }
    });
  },
  { name: "corral-guard" },
);
