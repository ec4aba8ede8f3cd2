import Type, { type Static } from "typebox";
import { buildConfig, type SettingSpec } from "../common/config.js";
import { ConfigError } from "../common/errors.js";
import { VERSION } from "../common/version.js";

export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;

export const DEFAULT_IMAGE = `ghcr.io/corral-dev/corral:${VERSION}`;
export const DEFAULT_GPU_IMAGE = `ghcr.io/corral-dev/corral:${VERSION}-cuda`;

export const OperatorConfigSchema = Type.Object(
  {
    kubeconfig: Type.Optional(Type.String({ minLength: 1 })),
    /** Namespaces whose Models are reconciled; empty: all namespaces. */
    namespaces: Type.Array(Type.String({ minLength: 1, pattern: "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" }), { default: [] }),

    // Health, readiness and metrics.
    host: Type.String({ default: "0.0.0.0" }),
    port: Type.Integer({ minimum: 0, maximum: 65535, default: 8081 }),
    logLevel: Type.Enum([...LOG_LEVELS], { default: "info" }),

    // Leader election (a coordination.k8s.io/v1 Lease).
    leaderElection: Type.Boolean({ default: true }),
    leaseName: Type.String({ minLength: 1, default: "corral-operator" }),
    leaseNamespace: Type.Optional(Type.String({ minLength: 1 })),
    leaseDurationSeconds: Type.Number({ minimum: 1, default: 15 }),
    renewDeadlineSeconds: Type.Number({ minimum: 0.5, default: 10 }),
    retryPeriodSeconds: Type.Number({ minimum: 0.1, default: 2 }),
    identity: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),

    // The work queue.
    workers: Type.Integer({ minimum: 1, maximum: 64, default: 8 }),
    resyncSeconds: Type.Number({ minimum: 0, default: 600 }),
    /** How often a Model that is starting is looked at again (progress of downloads and loads). */
    progressSeconds: Type.Number({ minimum: 0.1, default: 5 }),
    retryMaxSeconds: Type.Number({ minimum: 0.01, default: 300 }),
    shutdownSeconds: Type.Number({ minimum: 0, default: 20 }),

    // What the model pods run.
    image: Type.String({ minLength: 1, default: DEFAULT_IMAGE }),
    gpuImage: Type.String({ minLength: 1, default: DEFAULT_GPU_IMAGE }),
    imagePullPolicy: Type.Optional(Type.Enum(["Always", "IfNotPresent", "Never"])),
    runtimePort: Type.Integer({ minimum: 1, maximum: 65535, default: 8080 }),
    servicePort: Type.Integer({ minimum: 1, maximum: 65535, default: 8080 }),
    drainSeconds: Type.Number({ minimum: 0, default: 30 }),
    startupTimeoutSeconds: Type.Integer({ minimum: 10, default: 7200 }),
    runtimeLogLevel: Type.Enum([...LOG_LEVELS], { default: "info" }),
    clusterDomain: Type.Optional(Type.String({ minLength: 1 })),
    /** Ask starting pods for their /info (download progress, load failures); off where a NetworkPolicy forbids it. */
    probePods: Type.Boolean({ default: true }),
    /** How often the autoscaler reads the load of autoscaled Models' pods; 0 turns it off. */
    autoscaleIntervalSeconds: Type.Number({ minimum: 0, maximum: 300, default: 5 }),
    /** Pods whose load the autoscaler reads at once (each read is one GET /info). */
    autoscaleConcurrency: Type.Integer({ minimum: 1, maximum: 256, default: 16 }),
  },
  { additionalProperties: false },
);

export type OperatorConfig = Static<typeof OperatorConfigSchema>;

export const OPERATOR_SETTINGS: readonly SettingSpec[] = [
  { key: "kubeconfig", flag: "--kubeconfig", value: "<path>", env: "KUBECONFIG", description: "kubeconfig file", defaultText: "~/.kube/config, else the pod's service account" },
  { key: "namespaces", flag: "--namespaces", value: "<list>", env: "CORRAL_NAMESPACES", description: "comma-separated namespaces whose Models are reconciled", defaultText: "all namespaces" },
  { key: "host", flag: "--host", value: "<host>", env: "CORRAL_HOST", description: "address of the health, readiness and metrics server", defaultText: "0.0.0.0" },
  { key: "port", flag: "--port", value: "<port>", env: "CORRAL_PORT", description: "port of /healthz, /readyz and /metrics", defaultText: "8081" },
  { key: "logLevel", flag: "--log-level", value: "<level>", env: "LOG_LEVEL", description: "log level", defaultText: "info" },
  { key: "leaderElection", flag: "--leader-election", value: "<bool>", env: "CORRAL_LEADER_ELECTION", description: "elect one acting replica with a Lease (false: act at once, for a single replica)", defaultText: "true" },
  { key: "leaseName", flag: "--lease-name", value: "<name>", env: "CORRAL_LEASE_NAME", description: "name of the leader-election Lease", defaultText: "corral-operator" },
  { key: "leaseNamespace", flag: "--lease-namespace", value: "<ns>", env: "CORRAL_LEASE_NAMESPACE", description: "namespace of the Lease", defaultText: "the pod's namespace (POD_NAMESPACE or the service account's), else the kubeconfig's" },
  { key: "leaseDurationSeconds", flag: "--lease-duration-seconds", value: "<s>", env: "CORRAL_LEASE_DURATION_SECONDS", description: "how long a standby waits after the last renewal before taking over", defaultText: "15" },
  { key: "renewDeadlineSeconds", flag: "--renew-deadline-seconds", value: "<s>", env: "CORRAL_RENEW_DEADLINE_SECONDS", description: "the leader stops acting when it could not renew for this long (less than the lease duration)", defaultText: "10" },
  { key: "retryPeriodSeconds", flag: "--retry-period-seconds", value: "<s>", env: "CORRAL_RETRY_PERIOD_SECONDS", description: "how often the Lease is renewed or tried", defaultText: "2" },
  { key: "identity", flag: "--identity", value: "<id>", env: "POD_NAME", description: "this replica's name in the Lease", defaultText: "hostname + random suffix" },
  { key: "workers", flag: "--workers", value: "<n>", env: "CORRAL_WORKERS", description: "Models reconciled at once (one at a time per Model)", defaultText: "8" },
  { key: "resyncSeconds", flag: "--resync-seconds", value: "<s>", env: "CORRAL_RESYNC_SECONDS", description: "every Model is reconciled at least this often (0: only on changes)", defaultText: "600" },
  { key: "progressSeconds", flag: "--progress-seconds", value: "<s>", env: "CORRAL_PROGRESS_SECONDS", description: "how often a starting Model's download/load progress is refreshed", defaultText: "5" },
  { key: "retryMaxSeconds", flag: "--retry-max-seconds", value: "<s>", env: "CORRAL_RETRY_MAX_SECONDS", description: "longest backoff between retries of a failing reconcile", defaultText: "300" },
  { key: "shutdownSeconds", flag: "--shutdown-seconds", value: "<s>", env: "CORRAL_SHUTDOWN_SECONDS", description: "on SIGTERM, how long running reconciles may finish", defaultText: "20" },
  { key: "image", flag: "--image", value: "<image>", env: "CORRAL_IMAGE", description: "runtime image of CPU models (spec.image overrides)", defaultText: DEFAULT_IMAGE },
  { key: "gpuImage", flag: "--gpu-image", value: "<image>", env: "CORRAL_GPU_IMAGE", description: "runtime image of models with resources.gpu", defaultText: DEFAULT_GPU_IMAGE },
  { key: "imagePullPolicy", flag: "--image-pull-policy", value: "<policy>", env: "CORRAL_IMAGE_PULL_POLICY", description: "imagePullPolicy of the runtime container", defaultText: "Kubernetes' default for the tag", choices: ["Always", "IfNotPresent", "Never"] },
  { key: "runtimePort", flag: "--runtime-port", value: "<port>", env: "CORRAL_RUNTIME_PORT", description: "port the runtime listens on in model pods", defaultText: "8080" },
  { key: "servicePort", flag: "--service-port", value: "<port>", env: "CORRAL_SERVICE_PORT", description: "port of each model's Service", defaultText: "8080" },
  { key: "drainSeconds", flag: "--drain-seconds", value: "<s>", env: "CORRAL_DRAIN_SECONDS", description: "how long a stopping model pod lets in-flight requests finish (its grace period is longer)", defaultText: "30" },
  { key: "startupTimeoutSeconds", flag: "--startup-timeout-seconds", value: "<s>", env: "CORRAL_STARTUP_TIMEOUT_SECONDS", description: "how long a model pod may download and load before it is restarted", defaultText: "7200" },
  { key: "runtimeLogLevel", flag: "--runtime-log-level", value: "<level>", env: "CORRAL_RUNTIME_LOG_LEVEL", description: "log level of the model pods", defaultText: "info" },
  { key: "clusterDomain", flag: "--cluster-domain", value: "<domain>", env: "CORRAL_CLUSTER_DOMAIN", description: "cluster DNS domain used in status.endpoint (e.g. cluster.local)", defaultText: "none: http://<name>.<namespace>.svc:<port>" },
  { key: "autoscaleIntervalSeconds", flag: "--autoscale-interval-seconds", value: "<s>", env: "CORRAL_AUTOSCALE_INTERVAL_SECONDS", description: "how often the load of autoscaled Models (spec.maxReplicas set) is read from their pods and acted on (0: no autoscaling)", defaultText: "5" },
  { key: "autoscaleConcurrency", flag: "--autoscale-concurrency", value: "<n>", env: "CORRAL_AUTOSCALE_CONCURRENCY", description: "pods whose load the autoscaler reads at once", defaultText: "16" },
  { key: "probePods", flag: "--probe-pods", value: "<bool>", env: "CORRAL_PROBE_PODS", description: "read starting pods' /info for download progress and load errors", defaultText: "true" },
];

/** Comma-separated strings (flags and env vars) become lists; arrays (tests) stay as they are. */
function splitLists(input: Record<string, unknown>): Record<string, unknown> {
  const out = { ...input };
  const value = out.namespaces;
  if (typeof value === "string") out.namespaces = value.split(",").map((item) => item.trim()).filter(Boolean);
  return out;
}

export function operatorConfig(input: Record<string, unknown>): OperatorConfig {
  const config = buildConfig(OperatorConfigSchema, splitLists(input), OPERATOR_SETTINGS);
  if (config.leaderElection && config.renewDeadlineSeconds >= config.leaseDurationSeconds) {
    throw new ConfigError(
      `invalid configuration: --renew-deadline-seconds (${config.renewDeadlineSeconds}) must be less than --lease-duration-seconds (${config.leaseDurationSeconds}), ` +
        "or two replicas could act at once",
    );
  }
  if (config.leaderElection && config.retryPeriodSeconds >= config.renewDeadlineSeconds) {
    throw new ConfigError(
      `invalid configuration: --retry-period-seconds (${config.retryPeriodSeconds}) must be less than --renew-deadline-seconds (${config.renewDeadlineSeconds})`,
    );
  }
  return config;
}
