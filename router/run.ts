import { Redis } from "ioredis";
import { createHttpServer, type CorralApp } from "../common/http.js";
import { ConfigError } from "../common/errors.js";
import { createLogger, type Logger } from "../common/logger.js";
import { VERSION } from "../common/version.js";
import { routerApp } from "./app.js";
import { AuthFailureLimiter } from "./auth-limiter.js";
import { KeyStore } from "./tenants.js";
import { TokenBudgets } from "./token-budget.js";
import { KubeClient, loadKubeConfig, podNamespace } from "../common/kube/client.js";
import { KubernetesBackend } from "./backends/kubernetes.js";
import { LocalBackend, type LocalTiming } from "./backends/local.js";
import { StaticBackend } from "./backends/static.js";
import type { Backend } from "./backends/types.js";
import { Balancer } from "./balancer.js";
import { loadCatalog } from "./catalog.js";
import { connectionsPerClient, parseUpstream, type RouterConfig } from "./config.js";
import { createRouterMetrics, type RouterMetrics } from "./metrics.js";
import { UpstreamProxy } from "./proxy.js";
import { RateLimiter } from "./ratelimit.js";
import { metricsApp } from "./routes/system.js";
import { InFlight } from "./plugins/accounting.js";

export interface RouterHandle {
  /** Base URL the router listens on, e.g. http://127.0.0.1:8000. */
  url: string;
  port: number;
  /** With --metrics-port: the URL of the listener that serves only /metrics. */
  metricsUrl: string | undefined;
  app: CorralApp;
  backend: Backend;
  limiter: RateLimiter | undefined;
  metrics: RouterMetrics;
  logger: Logger;
  /** Graceful stop: 503 to new requests, in-flight ones finish within drainSeconds, runtimes stop. */
  close(): Promise<void>;
}

export interface RunOptions {
  logger?: Logger;
  /** A backend built by the caller (tests, the Kubernetes backend); otherwise from `config.backend`. */
  backend?: Backend;
  /** Local backend: timings (tests shorten them) and where runtime logs go (null drops them). */
  localTiming?: Partial<LocalTiming>;
  runtimeLogSink?: NodeJS.WritableStream | null;
}

function createBackend(config: RouterConfig, logger: Logger, options: RunOptions): Backend {
  switch (config.backend) {
    case "local": {
      const catalog = loadCatalog(config.catalog);
      const initialModel = config.initialModel === undefined ? catalog.defaultModel : config.initialModel || null;
      if (initialModel !== null && !catalog.models.some((model) => model.id === initialModel)) {
        throw new ConfigError(`invalid configuration: --initial-model (CORRAL_INITIAL_MODEL): "${initialModel}" is not in the catalog ${config.catalog}`);
      }
      return new LocalBackend({
        catalog,
        initialModel,
        maxModels: config.maxModels,
        runtimeEntry: config.runtimeEntry,
        runtime: {
          threads: config.threads,
          parallel: config.parallel,
          contextSize: config.contextSize,
          modelDir: config.modelDir,
          logLevel: config.runtimeLogLevel ?? config.logLevel,
          bodyLimitBytes: config.bodyLimitBytes,
          maxBatchPrompts: config.maxBatchPrompts,
          drainSeconds: config.drainSeconds,
        },
        logger: logger.child({ component: "local-backend" }),
        logSink: options.runtimeLogSink,
        timing: options.localTiming,
      });
    }
    case "static":
      if (config.upstream.length === 0) throw new ConfigError("invalid configuration: the static backend needs --upstream (CORRAL_UPSTREAMS)");
      return StaticBackend.fromUpstreams(config.upstream.map(parseUpstream));
    case "kubernetes": {
      const client = new KubeClient(loadKubeConfig(config.kubeconfig));
      return new KubernetesBackend({
        client,
        namespace: config.namespace ?? podNamespace() ?? client.contextNamespace,
        stateConfigMap: config.stateConfigMap,
        logger,
      });
    }
  }
}

/** Connects to Redis without queueing: while it is down, every command fails at once (the limiter falls back to memory). */
async function connectRedis(url: string, logger: Logger): Promise<Redis> {
  const redis = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: 500,
    connectTimeout: 2000,
    retryStrategy: (times) => Math.min(100 * times, 2000),
    lazyConnect: true,
  });
  let lastError = "";
  redis.on("error", (error: Error) => {
    // ioredis repeats this on every reconnection attempt; the limiter logs the outage once.
    if (error.message !== lastError) logger.debug({ reason: error.message }, "Redis connection error");
    lastError = error.message;
  });
  redis.on("ready", () => (lastError = ""));
  try {
    await redis.connect();
    logger.info({ redis: redactUrl(url) }, "rate limits are kept in Redis");
  } catch (error) {
    logger.warn({ redis: redactUrl(url), reason: (error as Error).message }, "Redis is unreachable at start-up: rate limits are kept in memory until it answers");
  }
  return redis;
}

function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(unparsable URL)";
  }
}

/** Whether an address only this machine can reach. */
export function isLoopback(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, "").toLowerCase();
  return bare === "localhost" || bare === "::1" || /^127\.\d+\.\d+\.\d+$/.test(bare) || bare === "::ffff:127.0.0.1";
}

/**
 * The rate limiter, the failed-authentication limiter and the token budgets, kept in Redis when
 * one is configured (in memory while it is down).
 */
async function createLimiters(config: RouterConfig, keysRequired: boolean, metrics: RouterMetrics, logger: Logger) {
  const redis = config.redisUrl ? await connectRedis(config.redisUrl, logger) : undefined;
  const limiter =
    config.rateLimitPoints > 0
      ? new RateLimiter({ points: config.rateLimitPoints, duration: config.rateLimitDuration, burst: config.rateLimitBurst }, redis, {
          logger,
          onFallback: () => metrics.redisFallbacks.inc(),
        })
      : undefined;
  const authLimiter =
    keysRequired && config.authFailureLimit > 0
      ? new AuthFailureLimiter({ failures: config.authFailureLimit, windowSeconds: config.authFailureWindowSeconds }, redis, () => limiter?.mode === "redis")
      : undefined;
  // Without a rate limiter there is no breaker: budgets use Redis while its connection is up.
  const redisUp = () => (limiter ? limiter.redisUp : redis?.status === "ready");
  const budgets = new TokenBudgets(redis, redisUp, logger.child({ component: "token-budgets" }));
  return { redis, limiter, authLimiter, budgets };
}

/** What the close sequence stops, in order. */
interface Closing {
  config: RouterConfig;
  logger: Logger;
  lifecycle: { closing: boolean; inFlight: InFlight };
  app: CorralApp;
  metricsServer: CorralApp | undefined;
  proxy: UpstreamProxy;
  backend: Backend;
  redis: Redis | undefined;
}

/** Graceful stop: 503 to new requests, in-flight ones finish within drainSeconds, then everything closes. */
async function drainAndClose({ config, logger, lifecycle, app, metricsServer, proxy, backend, redis }: Closing): Promise<void> {
  lifecycle.closing = true;
  logger.info({ drainSeconds: config.drainSeconds }, "router stopping");
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, config.drainSeconds * 1000)));
  // Still listening while requests are in flight: one that arrives during the drain (before
  // the load balancer has taken this replica out) gets 503 with Retry-After and Connection:
  // close, which clients retry elsewhere, rather than a refused connection.
  await Promise.race([lifecycle.inFlight.idle(), deadline]);
  const closed = app.close();
  // Connections whose last answer ends during the drain are closed as soon as they are idle,
  // rather than when the client's keep-alive timer runs out.
  const sweep = setInterval(() => app.server.closeIdleConnections(), 50);
  await Promise.race([closed, deadline]);
  clearTimeout(timer);
  clearInterval(sweep);
  // What is left past the bound (long streams) is cut; their upstream requests are aborted.
  app.server.closeAllConnections();
  await closed;
  await metricsServer?.close();
  proxy.close();
  await backend.close();
  if (redis) await redis.quit().catch(() => redis.disconnect());
  logger.info("router stopped");
}

/** Wires the router: config -> backend, limiter, proxy, app -> listening. */
export async function run(config: RouterConfig, options: RunOptions = {}): Promise<RouterHandle> {
  const logger = options.logger ?? createLogger({ name: "corral-router", level: config.logLevel });
  const metrics = createRouterMetrics();
  const keys = new KeyStore(
    { keysFile: config.keysFile, apiKeysFile: config.apiKeysFile, apiKeys: config.apiKeys, adminKeysFile: config.adminApiKeysFile, adminKeys: config.adminApiKeys },
    { logger: logger.child({ component: "keys" }), onReload: (result) => metrics.keyReloads.inc({ result }) },
  );
  const backend = options.backend ?? createBackend(config, logger, options);
  const { redis, limiter, authLimiter, budgets } = await createLimiters(config, keys.current.enabled, metrics, logger);
  const balancer = new Balancer(backend, {
    strategy: config.routing,
    loadFactor: config.routingLoadFactor,
    onPrefixPick: (outcome) => metrics.prefixPicks.inc({ outcome }),
    endpointQueue: config.endpointQueue,
    queuePerKey: config.queuePerKey,
    onQueueWait: (model, seconds) => metrics.queueWait.observe({ model }, seconds),
    onQueueReject: (model) => metrics.queueRejections.inc({ model }),
  });
  const proxy = new UpstreamProxy(balancer, metrics, config.readyWaitSeconds * 1000);
  const lifecycle = { closing: false, inFlight: new InFlight() };

  const app = createHttpServer(
    { logger, bodyLimitBytes: config.bodyLimitBytes, requestTimeoutSeconds: config.requestTimeoutSeconds, maxConnectionsPerClient: connectionsPerClient(config) },
    {
      trustProxy: config.trustedProxies.length > 0 ? config.trustedProxies : false,
      return503OnClosing: false,
      forceCloseConnections: "idle",
    },
  );
  await app.register(routerApp, { config, backend, balancer, limiter, keys, budgets, authLimiter, metrics, proxy, version: VERSION, lifecycle });
  const metricsServer =
    config.metricsPort > 0 ? createHttpServer({ logger, bodyLimitBytes: 1024, requestTimeoutSeconds: config.requestTimeoutSeconds }, { return503OnClosing: false, forceCloseConnections: true }) : undefined;
  await metricsServer?.register(metricsApp, { metrics, limiter });

  keys.watch();
  await backend.start();
  try {
    await app.listen({ host: config.host, port: config.port });
    await metricsServer?.listen({ host: config.host, port: config.metricsPort });
  } catch (error) {
    await app.close();
    await backend.close();
    keys.close();
    redis?.disconnect();
    throw error;
  }
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : config.port;
  const host = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}`;
  const metricsUrl = metricsServer ? `http://${host.includes(":") ? `[${host}]` : host}:${config.metricsPort}` : undefined;
  if (config.backend === "local" && !isLoopback(config.host) && (!keys.current.enabled || keys.current.adminOnly)) {
    logger.warn(
      { host: config.host },
      `listening on ${config.host} without API keys: other machines can use this server; set --api-keys-file (CORRAL_API_KEYS_FILE) or --host 127.0.0.1`,
    );
  }
  logger.info(
    { url, metricsUrl, backend: backend.kind, keys: keys.current.count, rateLimit: limiter ? `${config.rateLimitPoints}/${config.rateLimitDuration}s burst ${config.rateLimitBurst} (${limiter.mode})` : "off" },
    "router listening",
  );

  const stop = () => {
    keys.close();
    return drainAndClose({ config, logger, lifecycle, app, metricsServer, proxy, backend, redis });
  };
  let closing: Promise<void> | undefined;
  return { url, port, metricsUrl, app, backend, limiter, metrics, logger, close: () => (closing ??= stop()) };
}
