import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/** The router's Prometheus metrics, in a registry of their own (tests build several routers in one process). */
export function createRouterMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "corral_router_process_" });
  const registers = [registry];
  return {
    registry,
    requests: new Counter({
      name: "corral_router_requests_total",
      help: "Requests answered, by route, method, status code and model",
      labelNames: ["route", "method", "status", "model"] as const,
      registers,
    }),
    duration: new Histogram({
      name: "corral_router_request_duration_seconds",
      help: "Time from the request's arrival to the last byte of the answer",
      labelNames: ["route", "status", "model"] as const,
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    timeToFirstToken: new Histogram({
      name: "corral_router_time_to_first_token_seconds",
      help: "Streamed answers: time from the request's arrival to the first event sent to the client",
      labelNames: ["route", "model"] as const,
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    queueWait: new Histogram({
      name: "corral_router_queue_wait_seconds",
      help: "Time requests waited in the router's fair queue for a saturated model (only requests that waited)",
      labelNames: ["model"] as const,
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    queueRejections: new Counter({
      name: "corral_router_queue_rejections_total",
      help: "Requests refused (429) because their key already had --queue-per-key requests waiting for a saturated model",
      labelNames: ["model"] as const,
      registers,
    }),
    keyRequests: new Counter({
      name: "corral_router_key_requests_total",
      help: "Requests by key name (never the key; clients without a key are not counted here) and status code",
      labelNames: ["key", "status"] as const,
      registers,
    }),
    keyTokens: new Counter({
      name: "corral_router_key_tokens_total",
      help: "Tokens counted against each key's budgets, by kind (prompt, completion), streams included",
      labelNames: ["key", "kind"] as const,
      registers,
    }),
    budgetRejections: new Counter({
      name: "corral_router_token_budget_rejections_total",
      help: "Requests refused because a key's token budget was spent, by key and window (minute, day)",
      labelNames: ["key", "window"] as const,
      registers,
    }),
    keyReloads: new Counter({
      name: "corral_router_key_reloads_total",
      help: "Reloads of the key files after they changed, by result (success, failure: the keys in force stay)",
      labelNames: ["result"] as const,
      registers,
    }),
    tokens: new Counter({
      name: "corral_router_tokens_total",
      help: "Tokens reported in the usage of answers that carry one, by kind (prompt, completion)",
      labelNames: ["model", "kind"] as const,
      registers,
    }),
    streamEvents: new Counter({
      name: "corral_router_stream_events_total",
      help: "Server-sent events relayed to clients (about one per generated chunk)",
      labelNames: ["model"] as const,
      registers,
    }),
    inFlight: new Gauge({
      name: "corral_router_requests_in_flight",
      help: "Requests being proxied to a runtime now",
      labelNames: ["model"] as const,
      registers,
    }),
    prefixPicks: new Counter({
      name: "corral_router_prefix_picks_total",
      help: "Requests routed by prompt prefix (--routing prefix): outcome hit went to the prefix's own runtime, spill to the next one because it was at its load bound",
      labelNames: ["outcome"] as const,
      registers,
    }),
    upstreamRetries: new Counter({
      name: "corral_router_upstream_retries_total",
      help: "Requests retried on another endpoint after the first one failed before answering",
      labelNames: ["model"] as const,
      registers,
    }),
    upstreamErrors: new Counter({
      name: "corral_router_upstream_errors_total",
      help: "Upstream failures, by phase (connect: before the first byte; stream: after it)",
      labelNames: ["model", "phase"] as const,
      registers,
    }),
    rateLimitRejections: new Counter({
      name: "corral_router_ratelimit_rejections_total",
      help: "Requests refused with 429 by the rate limiter",
      registers,
    }),
    authFailures: new Counter({
      name: "corral_router_auth_failures_total",
      help: "Requests refused by authentication, by reason (missing_key, invalid_key, not_admin, locked_out: 429 after too many failures)",
      labelNames: ["reason"] as const,
      registers,
    }),
    redisFallbacks: new Counter({
      name: "corral_router_ratelimit_redis_fallbacks_total",
      help: "Rate-limit checks answered in memory because Redis was unreachable",
      registers,
    }),
    rateLimitStore: new Gauge({
      name: "corral_router_ratelimit_redis_up",
      help: "1 when rate limits are kept in Redis, 0 when in memory",
      registers,
    }),
  };
}

export type RouterMetrics = ReturnType<typeof createRouterMetrics>;
