import os from "node:os";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import Type, { type TSchema } from "typebox";
import {
  BatchRequest,
  BatchResponse,
  ChatRequest,
  ChatResponse,
  ErrorResponse,
  GenerateRequest,
  GenerateResponse,
  LoadModelRequest,
  OpenAiChatRequest,
  OpenAiCompletionRequest,
} from "../common/api.js";
import { badRequest, forbidden, gatewayTimeout, HttpError, notFound, payloadTooLarge, serviceUnavailable, tooManyRequests, unauthorized } from "../common/errors.js";
import { parseJsonBody } from "../common/http.js";
import type { AuthFailureLimiter } from "./auth-limiter.js";
import { ApiKeys } from "./auth.js";
import { ModelStartError, ModelsBusyError, type Backend, type Endpoint } from "./backends/types.js";
import { allowedHostNames, hostName, type RouterConfig } from "./config.js";
import type { RouterMetrics } from "./metrics.js";
import type { UpstreamProxy } from "./proxy.js";
import type { RateLimiter } from "./ratelimit.js";
import { AvailableModels, HealthResponse, ModelInfo, OpenAiModelList, SystemInfo, UnloadRequest, UnloadResponse } from "./schemas.js";

export interface RouterAppOptions {
  config: RouterConfig;
  backend: Backend;
  /** Undefined when rate limiting is off. */
  limiter: RateLimiter | undefined;
  apiKeys: ApiKeys;
  /** With any, admin routes (model management, system info) need one of these; they may generate too. */
  adminKeys?: ApiKeys;
  /** Locks a client out after repeated failed authentication; undefined: no limit. */
  authLimiter?: AuthFailureLimiter;
  metrics: RouterMetrics;
  proxy: UpstreamProxy;
  version: string;
  /**
   * Set by run() when the router starts shutting down: new requests get 503. `inFlight` counts
   * the requests being answered, so run() knows when the drain is done.
   */
  lifecycle: { closing: boolean; inFlight: number };
}

type App = FastifyInstance<any, any, any, any, TypeBoxTypeProvider>;

declare module "fastify" {
  interface FastifyContextConfig {
    /** Needs an admin key when admin keys are configured. */
    admin?: boolean;
  }
}

/** Per-request bookkeeping for logs and metrics. */
interface RequestContext {
  startedAt: number;
  /** A catalogued model id (never an arbitrary client string: it is a metric label). */
  model: string;
  rawBody: Buffer | undefined;
  clientGone: AbortController | undefined;
}

const contexts = new WeakMap<FastifyRequest, RequestContext>();
function contextOf(request: FastifyRequest): RequestContext {
  let context = contexts.get(request);
  if (!context) {
    context = { startedAt: performance.now(), model: "", rawBody: undefined, clientGone: undefined };
    contexts.set(request, context);
  }
  return context;
}

/** Routes without rate limits: probes, scraping, documentation. Only /health is also without auth. */
function isUnlimited(path: string): boolean {
  return path === "/health" || path === "/metrics" || path === "/docs" || path.startsWith("/docs/");
}

/** The Prometheus text of a router's registry (main port and --metrics-port). */
async function metricsText(metrics: RouterMetrics, limiter: RateLimiter | undefined, reply: FastifyReply): Promise<string> {
  metrics.rateLimitStore.set(limiter?.mode === "redis" ? 1 : 0);
  reply.header("content-type", metrics.registry.contentType);
  return await metrics.registry.metrics();
}

/** The --metrics-port listener: only /metrics, without auth (reachable inside the cluster only). */
export async function metricsApp(app: App, options: { metrics: RouterMetrics; limiter: RateLimiter | undefined }): Promise<void> {
  app.get("/metrics", { schema: { response: { 200: Type.String() } } }, async (_request, reply) => await metricsText(options.metrics, options.limiter, reply));
}

const QUIET_ROUTES = new Set(["/health", "/metrics"]);

const errors = (...codes: number[]) => Object.fromEntries(codes.map((code) => [code, ErrorResponse]));
const PROXY_ERRORS = errors(400, 401, 404, 413, 415, 429, 503);

function streamable(schema: TSchema, description: string) {
  return {
    description,
    content: {
      "application/json": { schema },
      "text/event-stream": { schema: Type.String({ description: "With stream: true: `data: <chunk>` events, then `data: [DONE]`; a failure after the first chunk is `event: error` with `data: {\"detail\"}`." }) },
    },
  };
}

/** Thrown when the client left while its request waited: nobody reads the answer (nginx's 499). */
const CLIENT_CLOSED = new HttpError(499, "client closed the request");

/** How long to wait before retrying while a model is coming up. */
const RETRY_AFTER_SECONDS = 5;

/**
 * The router's HTTP API as a fastify plugin (run.ts builds the server and listens): the seed's
 * endpoints and the OpenAI-compatible ones, proxied to the runtimes of the named model after
 * auth, rate limits and validation; model management; system info, health, metrics and docs.
 */
export async function routerApp(app: App, options: RouterAppOptions): Promise<void> {
  const { config, backend, limiter, apiKeys, metrics, proxy, lifecycle, authLimiter } = options;
  const adminKeys = options.adminKeys ?? new ApiKeys([]);
  const startedAt = new Date();
  const counts = { total: 0, rateLimited: 0, inFlight: 0, byStatus: new Map<string, number>() };
  const infoCache = new Map<string, { info: Record<string, unknown>; at: number }>();
  const allowedHosts = allowedHostNames(config);

  await app.register(swagger, {
    openapi: {
      openapi: "3.0.3",
      info: {
        title: "Corral",
        version: options.version,
        description:
          "Corral's public API: text generation with the seed's request shapes, OpenAI-compatible endpoints, and model management. " +
          "Errors answer {\"detail\": \"...\"}. Rate limit: a token bucket per client (see RateLimit-* headers).",
      },
      components: apiKeys.enabled || adminKeys.enabled ? { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } } : {},
      security: apiKeys.enabled ? [{ bearer: [] }] : [],
    },
  });
  await app.register(swaggerUi, { routePrefix: "/docs", staticCSP: true });

  // Keep the body's bytes: validated here, forwarded to the runtime exactly as sent.
  app.removeContentTypeParser("application/json");
  // Only JSON is accepted: anything else is a 415 rather than a string that fails validation.
  app.removeContentTypeParser("text/plain");
  app.addContentTypeParser("application/json", { parseAs: "buffer" }, (request, body, done) => {
    const raw = body as Buffer;
    contextOf(request).rawBody = raw;
    if (raw.length === 0) {
      done(null, undefined);
      return;
    }
    try {
      done(null, parseJsonBody(raw));
    } catch (error) {
      done(error as Error, undefined);
    }
  });

  app.addHook("onRequest", async (request, reply) => {
    const context = contextOf(request);
    counts.inFlight++;
    lifecycle.inFlight++;
    reply.raw.once("close", () => account(request, reply, context));
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
    if (isUnlimited(path)) return;
    if (limiter) {
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
    }
  });

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

  function account(request: FastifyRequest, reply: FastifyReply, context: RequestContext): void {
    counts.inFlight--;
    lifecycle.inFlight--;
    counts.total++;
    const finished = reply.raw.writableFinished;
    // 499: the client closed the connection before the answer was complete (nginx's convention).
    const status = finished ? String(reply.raw.statusCode) : "499";
    counts.byStatus.set(status, (counts.byStatus.get(status) ?? 0) + 1);
    const route = request.routeOptions.url ?? "not_found";
    const seconds = (performance.now() - context.startedAt) / 1000;
    metrics.requests.inc({ route, method: request.method, status, model: context.model });
    metrics.duration.observe({ route, status, model: context.model }, seconds);
    const entry = { route, method: request.method, model: context.model || undefined, status: Number(status), durationMs: Math.round(seconds * 10_000) / 10 };
    if (QUIET_ROUTES.has(route) || route.startsWith("/docs")) request.log.debug(entry, "request");
    else request.log.info(entry, "request");
  }

  /** The model a request names (or the current one), 404 for an id the backend does not know. */
  function resolveModel(requested: unknown): string {
    if (requested === undefined || requested === null) {
      const current = backend.current();
      if (current === null) throw badRequest("no model is loaded: load one with POST /models/load or name one in the request");
      return current;
    }
    const id = String(requested);
    if (!backend.lookup(id)) throw notFound(`model ${JSON.stringify(id)} is not available; GET /models/available lists the models`);
    return id;
  }

  /** An abort signal that fires when the client goes away before its answer. */
  function clientGoneSignal(request: FastifyRequest, reply: FastifyReply): AbortSignal {
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

  /** Ready endpoints of a model, starting it and waiting (bounded) when none is ready. */
  async function readyEndpoints(modelId: string, request: FastifyRequest, reply: FastifyReply): Promise<readonly Endpoint[]> {
    const ready = backend.readyEndpoints(modelId);
    if (ready.length > 0) return ready;
    const timeout = AbortSignal.timeout(config.readyWaitSeconds * 1000);
    const clientGone = clientGoneSignal(request, reply);
    try {
      await backend.ensureReady(modelId, AbortSignal.any([timeout, clientGone]));
    } catch (error) {
      if (error instanceof ModelStartError) throw serviceUnavailable(error.message, RETRY_AFTER_SECONDS);
      if (clientGone.aborted) throw CLIENT_CLOSED;
      if (!timeout.aborted) throw error;
      const status = backend.status(modelId);
      throw serviceUnavailable(
        `model ${modelId} is not ready after ${config.readyWaitSeconds} s (${status.state}${status.message ? `: ${status.message}` : ""}); try again shortly`,
        RETRY_AFTER_SECONDS,
      );
    }
    const endpoints = backend.readyEndpoints(modelId);
    if (endpoints.length === 0) throw serviceUnavailable(`model ${modelId} has no ready endpoint; try again shortly`, RETRY_AFTER_SECONDS);
    return endpoints;
  }

  interface ProxiedRoute {
    path: string;
    body: TSchema;
    response: TSchema;
    summary: string;
    /** The body field naming the model. */
    modelField: "model_id" | "model";
    tags: string[];
    batch?: boolean;
  }

  function proxied(route: ProxiedRoute): void {
    app.post(
      route.path,
      {
        schema: {
          summary: route.summary,
          tags: route.tags,
          body: route.body,
          response: { 200: streamable(route.response, "The answer (JSON), or a stream of events with stream: true."), ...PROXY_ERRORS },
        },
      },
      async (request, reply) => {
        const body = request.body as Record<string, unknown>;
        if (route.batch && (body.prompts as unknown[]).length > config.maxBatchPrompts) {
          throw payloadTooLarge(`prompts: at most ${config.maxBatchPrompts} prompts per batch, got ${(body.prompts as unknown[]).length}`);
        }
        const context = contextOf(request);
        const modelId = resolveModel(body[route.modelField]);
        context.model = modelId;
        await readyEndpoints(modelId, request, reply);
        if (reply.raw.destroyed) return reply;
        for (const [name, value] of Object.entries(reply.getHeaders())) if (value !== undefined) reply.raw.setHeader(name, value as string);
        reply.hijack();
        proxy.forward(request.raw, reply.raw, {
          modelId,
          route: route.path,
          requestId: request.id,
          rawBody: context.rawBody,
          startedAt: context.startedAt,
          log: request.log,
        });
        return reply;
      },
    );
  }

  proxied({ path: "/generate", body: GenerateRequest, response: GenerateResponse, summary: "Generate text", modelField: "model_id", tags: ["generation"] });
  proxied({ path: "/chat", body: ChatRequest, response: ChatResponse, summary: "Chat completion", modelField: "model_id", tags: ["generation"] });
  proxied({ path: "/generate/batch", body: BatchRequest, response: BatchResponse, summary: "Generate for several prompts in parallel", modelField: "model_id", tags: ["generation"], batch: true });
  proxied({ path: "/v1/completions", body: OpenAiCompletionRequest, response: Type.Unknown(), summary: "OpenAI-compatible completions", modelField: "model", tags: ["openai"] });
  proxied({ path: "/v1/chat/completions", body: OpenAiChatRequest, response: Type.Unknown(), summary: "OpenAI-compatible chat completions", modelField: "model", tags: ["openai"] });

  /** A runtime's /info, cached briefly (it is static apart from slots and memory). */
  async function runtimeInfo(endpoint: Endpoint, maxAgeMs: number): Promise<Record<string, unknown> | null> {
    const cached = infoCache.get(endpoint.id);
    if (cached && Date.now() - cached.at <= maxAgeMs) return cached.info;
    try {
      const response = await fetch(`${endpoint.url}/info`, { signal: AbortSignal.timeout(2000) });
      if (response.status !== 200) {
        await response.body?.cancel();
        return null;
      }
      const info = (await response.json()) as Record<string, unknown>;
      infoCache.set(endpoint.id, { info, at: Date.now() });
      return info;
    } catch {
      return null;
    }
  }

  async function modelInfo(modelId: string | null) {
    if (modelId === null) {
      return {
        model_id: null,
        state: "not_loaded" as const,
        current: false,
        progress: null,
        message: "no model is loaded",
        source: null,
        description: null,
        size_bytes: null,
        context_size: null,
        parallel: null,
        defaults: null,
        endpoints: 0,
      };
    }
    const entry = backend.lookup(modelId);
    const status = backend.status(modelId);
    const endpoint = status.endpoints[0];
    const info = endpoint ? await runtimeInfo(endpoint, 60_000) : null;
    const number = (value: unknown) => (typeof value === "number" ? value : null);
    return {
      model_id: modelId,
      state: status.state,
      current: backend.current() === modelId,
      progress: status.progress,
      message: status.message,
      source: entry?.source ?? null,
      description: entry?.description ?? null,
      size_bytes: number(info?.size_bytes) ?? entry?.size_bytes ?? null,
      context_size: number(info?.context_size),
      parallel: number(info?.parallel),
      defaults: (info?.defaults as Record<string, unknown> | undefined) ?? null,
      endpoints: status.endpoints.length,
    };
  }

  app.post(
    "/models/load",
    {
      schema: {
        summary: "Load a model and make it the current one; answers when it is ready",
        tags: ["models"],
        body: LoadModelRequest,
        response: { 200: ModelInfo, ...errors(400, 401, 403, 404, 413, 415, 429, 503, 504) },
      },
      config: { admin: true },
    },
    async (request, reply) => {
      const modelId = request.body.model_id;
      if (!backend.lookup(modelId)) throw notFound(`model ${JSON.stringify(modelId)} is not available; GET /models/available lists the models`);
      contextOf(request).model = modelId;
      const timeout = AbortSignal.timeout(config.loadTimeoutSeconds * 1000);
      const clientGone = clientGoneSignal(request, reply);
      try {
        await backend.load(modelId, AbortSignal.any([timeout, clientGone]));
      } catch (error) {
        if (error instanceof ModelStartError) throw serviceUnavailable(error.message, error instanceof ModelsBusyError ? RETRY_AFTER_SECONDS : undefined);
        if (clientGone.aborted) throw CLIENT_CLOSED;
        if (!timeout.aborted) throw error;
        throw gatewayTimeout(`model ${modelId} is not ready after ${config.loadTimeoutSeconds} s; it is still loading: GET /models/available shows its state`);
      }
      return await modelInfo(modelId);
    },
  );

  app.get(
    "/models/current",
    { schema: { summary: "The current model: state (with progress while loading), context size, defaults", tags: ["models"], response: { 200: ModelInfo, ...errors(401, 429) } } },
    async () => await modelInfo(backend.current()),
  );

  app.get(
    "/models/available",
    { schema: { summary: "Models that can be loaded, with state, source and size", tags: ["models"], response: { 200: AvailableModels, ...errors(401, 429) } } },
    async () => {
      const current = backend.current();
      return {
        current,
        models: backend.list().map((entry) => {
          const status = backend.status(entry.model_id);
          const cached = status.endpoints[0] ? infoCache.get(status.endpoints[0].id)?.info.size_bytes : undefined;
          return {
            model_id: entry.model_id,
            source: entry.source,
            description: entry.description,
            size_bytes: typeof cached === "number" ? cached : entry.size_bytes,
            state: status.state,
            current: entry.model_id === current,
          };
        }),
      };
    },
  );

  app.post(
    "/models/unload",
    {
      schema: {
        summary: "Unload the current model (or the one named) and stop its runtimes",
        description: "The body is optional; without one the current model is unloaded. 400 when no model is loaded.",
        tags: ["models"],
        response: { 200: UnloadResponse, ...errors(400, 401, 403, 404, 415, 429) },
      },
      config: { admin: true },
    },
    async (request) => {
      const body = request.body as unknown;
      if (body !== undefined && body !== null && (typeof body !== "object" || Array.isArray(body))) throw badRequest("request body must be a JSON object");
      const named = (body as { model_id?: unknown } | undefined)?.model_id;
      if (named !== undefined && named !== null && (typeof named !== "string" || named.length === 0)) throw badRequest("model_id: must be a non-empty string");
      const modelId = (named as string | null | undefined) ?? backend.current();
      if (modelId === null) throw badRequest("no model is loaded");
      if (!backend.lookup(modelId)) throw notFound(`model ${JSON.stringify(modelId)} is not available; GET /models/available lists the models`);
      contextOf(request).model = modelId;
      await backend.unload(modelId);
      return { model_id: modelId, state: backend.status(modelId).state, detail: `model ${modelId} unloaded` };
    },
  );

  app.get(
    "/v1/models",
    { schema: { summary: "OpenAI-compatible list of models", tags: ["openai"], response: { 200: OpenAiModelList, ...errors(401, 429) } } },
    async () => ({
      object: "list" as const,
      data: backend.list().map((entry) => ({ id: entry.model_id, object: "model" as const, created: Math.floor(startedAt.getTime() / 1000), owned_by: "corral" })),
    }),
  );

  app.get(
    "/system/info",
    { schema: { summary: "Router, host and runtime information", tags: ["system"], response: { 200: SystemInfo, ...errors(401, 403, 429) } }, config: { admin: true } },
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
              status.endpoints.map(async (endpoint) => ({ id: endpoint.id, in_flight: proxy.inFlightTo(endpoint), info: await runtimeInfo(endpoint, 0) })),
            ),
          };
        }),
      );
      const cpus = os.cpus();
      return {
        router: {
          version: options.version,
          uptime_seconds: Math.round((Date.now() - startedAt.getTime()) / 100) / 10,
          started_at: startedAt.toISOString(),
          node_version: process.version,
          pid: process.pid,
          backend: backend.kind,
          auth: apiKeys.enabled,
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
          in_flight: Math.max(0, counts.inFlight - 1),
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
    { schema: { summary: "Health of the router and its components; 503 when it cannot serve", tags: ["system"], response: { 200: HealthResponse, 503: HealthResponse } } },
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
        version: options.version,
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
    { schema: { summary: "Prometheus metrics (with API keys: needs one, unless scraped on --metrics-port)", tags: ["system"], response: { 200: Type.String(), ...errors(401, 429) } } },
    async (_request, reply) => await metricsText(metrics, limiter, reply),
  );
}
