import Type, { type Static } from "typebox";
import { buildConfig, type SettingSpec } from "../common/config.js";
import { ConfigError } from "../common/errors.js";
import { packagePath } from "../common/package-root.js";
import { DEFAULT_ENDPOINT_QUEUE, DEFAULT_LOAD_FACTOR, DEFAULT_QUEUE_PER_KEY } from "./balancer.js";
import { ROUTING_STRATEGIES } from "../common/routing.js";

export const BACKEND_KINDS = ["local", "static", "kubernetes"] as const;
export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;

export const RouterConfigSchema = Type.Object(
  {
    // No schema default: routerConfig() picks loopback for the local backend, 0.0.0.0 otherwise.
    host: Type.String({ minLength: 1 }),
    port: Type.Integer({ minimum: 0, maximum: 65535, default: 8000 }),
    backend: Type.Enum([...BACKEND_KINDS], { default: "local" }),
    logLevel: Type.Enum([...LOG_LEVELS], { default: "info" }),

    // Limits and bad input.
    bodyLimitBytes: Type.Integer({ minimum: 1024, default: 1_048_576 }),
    requestTimeoutSeconds: Type.Number({ minimum: 0, default: 30 }),
    // No schema default: 64 with the local backend; behind an Ingress every client shares its address.
    maxConnectionsPerClient: Type.Optional(Type.Integer({ minimum: 0 })),
    maxBatchPrompts: Type.Integer({ minimum: 1, default: 64 }),
    readyWaitSeconds: Type.Number({ minimum: 0, default: 60 }),
    loadTimeoutSeconds: Type.Number({ minimum: 1, default: 600 }),
    drainSeconds: Type.Number({ minimum: 0, default: 30 }),

    // Which endpoint of a model takes a request (router/balancer.ts).
    routing: Type.Enum([...ROUTING_STRATEGIES], { default: "prefix" }),
    routingLoadFactor: Type.Number({ exclusiveMinimum: 1, maximum: 10, default: DEFAULT_LOAD_FACTOR }),
    // Fair queueing of a saturated model's requests by client key (router/fair-queue.ts).
    endpointQueue: Type.Integer({ minimum: 0, maximum: 1024, default: DEFAULT_ENDPOINT_QUEUE }),
    queuePerKey: Type.Integer({ minimum: 0, maximum: 100_000, default: DEFAULT_QUEUE_PER_KEY }),

    // Rate limits: a token bucket of `rateLimitBurst` tokens refilled at points/duration per second.
    rateLimitPoints: Type.Integer({ minimum: 0, default: 60 }),
    rateLimitDuration: Type.Number({ exclusiveMinimum: 0, default: 60 }),
    rateLimitBurst: Type.Integer({ minimum: 1, default: 10 }),
    redisUrl: Type.Optional(Type.String({ minLength: 1 })),
    trustedProxies: Type.Array(Type.String({ minLength: 1 }), { default: [] }),
    // Host header check against DNS rebinding: on in local mode; off in a cluster unless set.
    allowedHosts: Type.Optional(Type.Array(Type.String({ minLength: 1 }))),

    // API keys.
    keysFile: Type.Optional(Type.String({ minLength: 1 })),
    apiKeysFile: Type.Optional(Type.String({ minLength: 1 })),
    apiKeys: Type.Array(Type.String({ minLength: 1 }), { default: [] }),
    // Admin keys: with any, /models/load, /models/unload and /system/info need one.
    adminApiKeysFile: Type.Optional(Type.String({ minLength: 1 })),
    adminApiKeys: Type.Array(Type.String({ minLength: 1 }), { default: [] }),
    // Failed authentication per client: after this many in the window, 429 until the window ends.
    authFailureLimit: Type.Integer({ minimum: 0, default: 10 }),
    authFailureWindowSeconds: Type.Integer({ minimum: 1, default: 60 }),
    // A second listener serving only /metrics, without auth (0: /metrics on the main port only).
    metricsPort: Type.Integer({ minimum: 0, maximum: 65535, default: 0 }),

    // Static backend (`corral router --upstream id=url`).
    upstream: Type.Array(Type.String({ minLength: 1 }), { default: [] }),

    // Local backend (`corral serve`).
    catalog: Type.String({ minLength: 1, default: packagePath("catalog", "models.yaml") }),
    initialModel: Type.Optional(Type.String()),
    maxModels: Type.Integer({ minimum: 1, default: 2 }),
    runtimeEntry: Type.String({ minLength: 1, default: packagePath("dist", "bin", "corral.js") }),
    threads: Type.Optional(Type.Integer({ minimum: 1, maximum: 1024 })),
    parallel: Type.Optional(Type.Integer({ minimum: 1, maximum: 256 })),
    contextSize: Type.Optional(Type.Integer({ minimum: 64 })),
    modelDir: Type.Optional(Type.String({ minLength: 1 })),
    runtimeLogLevel: Type.Optional(Type.Enum([...LOG_LEVELS])),

    // Kubernetes backend (`corral router --backend kubernetes`).
    kubeconfig: Type.Optional(Type.String({ minLength: 1 })),
    namespace: Type.Optional(Type.String({ minLength: 1, pattern: "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" })),
    stateConfigMap: Type.String({ minLength: 1, default: "corral-router" }),
  },
  { additionalProperties: false },
);

export type RouterConfig = Static<typeof RouterConfigSchema>;

/** `corral serve`: a laptop's server answers only this machine unless told otherwise. */
export const SERVE_HOST_SETTING: SettingSpec = {
  key: "host",
  flag: "--host",
  value: "<host>",
  env: "CORRAL_HOST",
  description: "address to listen on (0.0.0.0 answers other machines too: set API keys then)",
  defaultText: "127.0.0.1",
};

/** `corral router`: in a pod, the Service and the probes reach it on the pod's address. */
export const ROUTER_HOST_SETTING: SettingSpec = { key: "host", flag: "--host", value: "<host>", env: "CORRAL_HOST", description: "address to listen on", defaultText: "0.0.0.0" };

/** The default listen address of a backend: loopback for the local one (`corral serve`). */
export function defaultHost(backend: unknown): string {
  return backend === undefined || backend === "local" ? "127.0.0.1" : "0.0.0.0";
}

/** Settings shared by `corral router` and `corral serve` (each adds its own --host first). */
export const ROUTER_SETTINGS: readonly SettingSpec[] = [
  { key: "port", flag: "--port", value: "<port>", env: "CORRAL_PORT", description: "port to listen on (0 picks a free one)", defaultText: "8000" },
  { key: "logLevel", flag: "--log-level", value: "<level>", env: "LOG_LEVEL", description: "log level", defaultText: "info" },
  { key: "bodyLimitBytes", flag: "--body-limit-bytes", value: "<bytes>", env: "CORRAL_BODY_LIMIT_BYTES", description: "largest request body; beyond it: 413", defaultText: "1048576" },
  { key: "requestTimeoutSeconds", flag: "--request-timeout-seconds", value: "<s>", env: "CORRAL_REQUEST_TIMEOUT_SECONDS", description: "time a client has to send a whole request (headers and body; 0: no bound); beyond it: 408 and the connection closes", defaultText: "30" },
  { key: "maxConnectionsPerClient", flag: "--max-connections-per-client", value: "<n>", env: "CORRAL_MAX_CONNECTIONS_PER_CLIENT", description: "open connections allowed from one client address (0: no bound); beyond it: 429 and the connection closes", defaultText: "64; corral router: no bound (an Ingress's connections share its address)" },
  { key: "maxBatchPrompts", flag: "--max-batch-prompts", value: "<n>", env: "CORRAL_MAX_BATCH_PROMPTS", description: "prompts allowed in one /generate/batch request; beyond it: 413", defaultText: "64" },
  { key: "readyWaitSeconds", flag: "--ready-wait-seconds", value: "<s>", env: "CORRAL_READY_WAIT_SECONDS", description: "how long a request waits for its model to become ready; beyond it: 503 with Retry-After", defaultText: "60" },
  { key: "loadTimeoutSeconds", flag: "--load-timeout-seconds", value: "<s>", env: "CORRAL_LOAD_TIMEOUT_SECONDS", description: "how long POST /models/load waits for the model; beyond it: 504 (loading goes on)", defaultText: "600" },
  { key: "drainSeconds", flag: "--drain-seconds", value: "<s>", env: "CORRAL_DRAIN_SECONDS", description: "on SIGTERM, how long in-flight requests and streams may finish", defaultText: "30" },
  {
    key: "routing",
    flag: "--routing",
    value: "<strategy>",
    env: "CORRAL_ROUTING",
    description: "how a model's runtime is chosen: least-load (fewest requests in flight) or prefix (requests whose prompts start alike go to the same runtime, whose cache holds that start, within --routing-load-factor)",
    defaultText: "prefix",
    choices: ROUTING_STRATEGIES,
  },
  { key: "routingLoadFactor", flag: "--routing-load-factor", value: "<x>", env: "CORRAL_ROUTING_LOAD_FACTOR", description: "with --routing prefix: the most requests a runtime may have in flight, as a multiple of the model's average (> 1)", defaultText: String(DEFAULT_LOAD_FACTOR) },
  {
    key: "endpointQueue",
    flag: "--endpoint-queue",
    value: "<n>",
    env: "CORRAL_ENDPOINT_QUEUE",
    description:
      "requests sent to a runtime beyond its parallel sequences, so a freed one is refilled at once; when all of a model's runtimes have that many, requests wait in the router, served fairly by key (--queue-per-key)",
    defaultText: String(DEFAULT_ENDPOINT_QUEUE),
  },
  {
    key: "queuePerKey",
    flag: "--queue-per-key",
    value: "<n>",
    env: "CORRAL_QUEUE_PER_KEY",
    description: "requests of one API key (or client address without keys) that may wait for a busy model, unless its keys-file entry sets its own; beyond it: 429 with Retry-After",
    defaultText: String(DEFAULT_QUEUE_PER_KEY),
  },
  { key: "rateLimitPoints", flag: "--rate-limit-points", value: "<n>", env: "CORRAL_RATE_LIMIT_POINTS", description: "sustained requests per client per --rate-limit-duration (0 turns rate limiting off)", defaultText: "60" },
  { key: "rateLimitDuration", flag: "--rate-limit-duration", value: "<s>", env: "CORRAL_RATE_LIMIT_DURATION", description: "seconds over which --rate-limit-points are allowed", defaultText: "60" },
  { key: "rateLimitBurst", flag: "--rate-limit-burst", value: "<n>", env: "CORRAL_RATE_LIMIT_BURST", description: "requests a client may make at once (token bucket capacity)", defaultText: "10" },
  { key: "redisUrl", flag: "--redis-url", value: "<url>", env: "REDIS_URL", description: "Redis for rate limits shared by router replicas", defaultText: "in memory" },
  { key: "trustedProxies", flag: "--trusted-proxies", value: "<list>", env: "CORRAL_TRUSTED_PROXIES", description: "comma-separated addresses/CIDRs whose X-Forwarded-For is trusted (also loopback, uniquelocal)", defaultText: "none" },
  {
    key: "allowedHosts",
    flag: "--allowed-hosts",
    value: "<list>",
    env: "CORRAL_ALLOWED_HOSTS",
    description: "comma-separated Host header names answered besides localhost, 127.0.0.1, [::1] and --host ('*': any); other hosts get 403 (DNS rebinding)",
    defaultText: "none; corral router: any, unless set",
  },
  {
    key: "keysFile",
    flag: "--keys-file",
    value: "<path>",
    env: "CORRAL_KEYS_FILE",
    description: "YAML/JSON file of named keys with scopes, allowed models, request rate, token budgets and fair-queueing weight (docs/keys.md); reloaded when it changes; turns auth on",
  },
  { key: "apiKeysFile", flag: "--api-keys-file", value: "<path>", env: "CORRAL_API_KEYS_FILE", description: "file of API keys, one per line (# comments); turns auth on" },
  { key: "apiKeys", flag: "--api-keys", value: "<list>", env: "CORRAL_API_KEYS", description: "comma-separated API keys; turns auth on (prefer the env var or the file: flags show in ps)" },
  {
    key: "adminApiKeysFile",
    flag: "--admin-api-keys-file",
    value: "<path>",
    env: "CORRAL_ADMIN_API_KEYS_FILE",
    description: "file of admin keys, one per line (# comments); with admin keys, /models/load, /models/unload and /system/info need one (403 for other keys); admin keys may also generate",
  },
  { key: "adminApiKeys", flag: "--admin-api-keys", value: "<list>", env: "CORRAL_ADMIN_API_KEYS", description: "comma-separated admin keys (see --admin-api-keys-file)" },
  {
    key: "authFailureLimit",
    flag: "--auth-failure-limit",
    value: "<n>",
    env: "CORRAL_AUTH_FAILURE_LIMIT",
    description: "requests with a wrong key allowed from one client per --auth-failure-window-seconds; beyond it every request of that client gets 429 until the window ends (0: no limit)",
    defaultText: "10",
  },
  { key: "authFailureWindowSeconds", flag: "--auth-failure-window-seconds", value: "<s>", env: "CORRAL_AUTH_FAILURE_WINDOW_SECONDS", description: "window of --auth-failure-limit, from a client's first failure", defaultText: "60" },
  {
    key: "metricsPort",
    flag: "--metrics-port",
    value: "<port>",
    env: "CORRAL_METRICS_PORT",
    description: "a second port, on --host, serving only /metrics without auth (for Prometheus); 0: /metrics on the main port only, behind auth when keys are on",
    defaultText: "0",
  },
];

export const STATIC_SETTINGS: readonly SettingSpec[] = [
  { key: "upstream", flag: "--upstream", value: "<id=url[,id=url]>", env: "CORRAL_UPSTREAMS", description: "fixed runtimes, comma-separated model_id=http://host:port (the first is the current model); without it: the Kubernetes backend" },
];

/** Settings of the Kubernetes backend: Model resources of one namespace and their pods. */
export const KUBERNETES_SETTINGS: readonly SettingSpec[] = [
  { key: "backend", flag: "--backend", value: "<kind>", env: "CORRAL_BACKEND", description: "where models run: kubernetes (Model resources) or static (--upstream)", defaultText: "static with --upstream, else kubernetes", choices: ["kubernetes", "static"] },
  { key: "namespace", flag: "--namespace", value: "<ns>", env: "CORRAL_NAMESPACE", description: "namespace of the Models to serve", defaultText: "the pod's namespace (POD_NAMESPACE or the service account's), else the kubeconfig's" },
  { key: "kubeconfig", flag: "--kubeconfig", value: "<path>", env: "KUBECONFIG", description: "kubeconfig file", defaultText: "~/.kube/config, else the pod's service account" },
  { key: "stateConfigMap", flag: "--state-config-map", value: "<name>", env: "CORRAL_STATE_CONFIGMAP", description: "ConfigMap in the namespace holding the current model, shared by all router replicas", defaultText: "corral-router" },
];

/** Settings of the local backend, which runs one `corral runtime` child per loaded model. */
export const LOCAL_SETTINGS: readonly SettingSpec[] = [
  { key: "catalog", flag: "--catalog", value: "<path>", env: "CORRAL_CATALOG", description: "model catalog (YAML)", defaultText: "catalog/models.yaml of the package" },
  { key: "initialModel", flag: "--initial-model", value: "<id>", env: "CORRAL_INITIAL_MODEL", description: "model started at start-up as the current one ('' for none)", defaultText: "the catalog's default" },
  { key: "maxModels", flag: "--max-models", value: "<n>", env: "CORRAL_MAX_MODELS", description: "runtimes kept running at once; the least recently used non-current one is stopped", defaultText: "2" },
  { key: "runtimeEntry", flag: "--runtime-entry", value: "<path>", env: "CORRAL_RUNTIME_ENTRY", description: "the corral CLI script started as `node <path> runtime`", defaultText: "dist/bin/corral.js of the package" },
  { key: "threads", flag: "--threads", value: "<n>", env: "CORRAL_THREADS", description: "CPU threads of each runtime", defaultText: "the runtime's default" },
  { key: "parallel", flag: "--parallel", value: "<n>", env: "CORRAL_PARALLEL", description: "parallel sequences of each runtime", defaultText: "the runtime's default" },
  { key: "contextSize", flag: "--context-size", value: "<tokens>", env: "CORRAL_CONTEXT_SIZE", description: "context tokens per sequence of each runtime", defaultText: "the runtime's default" },
  { key: "modelDir", flag: "--model-dir", value: "<dir>", env: "CORRAL_MODEL_DIR", description: "folder for downloaded and generated models", defaultText: "the runtime's default" },
  { key: "runtimeLogLevel", flag: "--runtime-log-level", value: "<level>", env: "CORRAL_RUNTIME_LOG_LEVEL", description: "log level of the runtimes (their logs go to this process's stdout)", defaultText: "--log-level" },
];

const LIST_KEYS = ["trustedProxies", "apiKeys", "adminApiKeys", "upstream", "allowedHosts"] as const;

/** Comma-separated strings (flags and env vars) become lists; so do the items of arrays. */
function splitLists(input: Record<string, unknown>): Record<string, unknown> {
  const out = { ...input };
  for (const key of LIST_KEYS) {
    const value = out[key];
    const items = typeof value === "string" ? [value] : Array.isArray(value) ? value : undefined;
    if (items) out[key] = items.flatMap((item) => (typeof item === "string" ? item.split(",") : [item])).map((item) => (typeof item === "string" ? item.trim() : item)).filter((item) => item !== "");
  }
  return out;
}

/** Builds the router's configuration from flags/env values (strings) or typed test values. */
export function routerConfig(input: Record<string, unknown>): RouterConfig {
  const host = input.host === undefined || input.host === "" ? defaultHost(input.backend) : input.host;
  const config = buildConfig(RouterConfigSchema, splitLists({ ...input, host }), [ROUTER_HOST_SETTING, ...ROUTER_SETTINGS, ...STATIC_SETTINGS, ...KUBERNETES_SETTINGS, ...LOCAL_SETTINGS]);
  if (config.rateLimitPoints > 0 && refillSeconds(config) < 1) {
    throw new ConfigError(
      "invalid configuration: --rate-limit-burst (CORRAL_RATE_LIMIT_BURST) must be at least the requests allowed per second " +
        `(${config.rateLimitPoints}/${config.rateLimitDuration}s)`,
    );
  }
  for (const upstream of config.upstream) parseUpstream(upstream);
  if (config.metricsPort !== 0 && config.metricsPort === config.port) {
    throw new ConfigError(`invalid configuration: --metrics-port (CORRAL_METRICS_PORT) must differ from --port (${config.port})`);
  }
  return config;
}

/** Seconds an empty token bucket takes to fill up again: burst / (points / duration). */
export function refillSeconds(config: Pick<RouterConfig, "rateLimitPoints" | "rateLimitDuration" | "rateLimitBurst">): number {
  return (config.rateLimitBurst * config.rateLimitDuration) / config.rateLimitPoints;
}

/**
 * The Host header names the router answers (lower case, without port), or null for any: always
 * localhost, 127.0.0.1, [::1] and the listen host, plus --allowed-hosts. The check is on by default
 * with the local backend only (an Ingress's host names vary); `*` turns it off.
 */
export function allowedHostNames(config: Pick<RouterConfig, "backend" | "host" | "allowedHosts">): Set<string> | null {
  if (config.allowedHosts === undefined && config.backend !== "local") return null;
  const extra = config.allowedHosts ?? [];
  if (extra.includes("*")) return null;
  const names = new Set(["localhost", "127.0.0.1", "[::1]"]);
  if (config.host !== "0.0.0.0" && config.host !== "::") names.add(config.host.includes(":") && !config.host.startsWith("[") ? `[${config.host}]` : config.host);
  for (const name of extra) names.add(hostName(name));
  return new Set([...names].map((name) => name.toLowerCase()));
}

/** `Example.com:8000` -> `example.com`, `[::1]:8000` -> `[::1]`. */
export function hostName(header: string): string {
  const text = header.trim().toLowerCase();
  if (text.startsWith("[")) return text.slice(0, text.indexOf("]") + 1) || text;
  const colon = text.indexOf(":");
  return (colon >= 0 && text.indexOf(":", colon + 1) < 0 ? text.slice(0, colon) : text).replace(/\.$/, "");
}

/** The per-client connection bound: --max-connections-per-client, else 64 in local mode, else none. */
export function connectionsPerClient(config: Pick<RouterConfig, "backend" | "maxConnectionsPerClient">): number {
  return config.maxConnectionsPerClient ?? (config.backend === "local" ? 64 : 0);
}

/** `microsoft/phi-2=http://10.0.0.7:8080` -> id and base URL. */
export function parseUpstream(text: string): { modelId: string; url: string } {
  const at = text.indexOf("=");
  const modelId = text.slice(0, at).trim();
  const url = text.slice(at + 1).trim().replace(/\/+$/, "");
  if (at <= 0 || !modelId || !/^https?:\/\/[^/,\s]+$/.test(url)) {
    throw new ConfigError(`invalid configuration: --upstream (CORRAL_UPSTREAMS): "${text}" is not model_id=http://host:port`);
  }
  return { modelId, url };
}
