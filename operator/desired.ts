import { createHash } from "node:crypto";
import { samplingDefaultsJson } from "../common/api.js";
import type { EnvVar, KubeObject, OwnerReference } from "../common/kube/types.js";
import {
  ANNOTATIONS,
  LABELS,
  MANAGED_BY,
  MODEL_API_VERSION,
  MODEL_KIND,
  RUNTIME_CONTAINER,
  RUNTIME_PORT_NAME,
  apiSamplingDefaults,
  effectiveReplicas,
  modelIdOf,
  type Model,
  type ModelSamplingDefaults,
} from "../common/kube/model-resource.js";
import { runtimeArgv } from "../common/runtime-command.js";
import { RUNTIME_PROCESS_ENV } from "../common/runtime-env.js";
import type { OperatorConfig } from "./config.js";

/**
 * What the operator wants to exist for a Model: pure functions of the Model and the operator's
 * settings, with no API calls, so that every rule about pods, probes and arguments is unit-tested
 * on its own. The same input always gives the same output (key order included), which is what
 * keeps a Deployment from rolling when nothing about the Model changed.
 */

export type DesiredSettings = Pick<
  OperatorConfig,
  "image" | "gpuImage" | "imagePullPolicy" | "runtimePort" | "servicePort" | "drainSeconds" | "startupTimeoutSeconds" | "runtimeLogLevel"
>;

/** The field manager of everything the operator applies. */
export const FIELD_MANAGER = "corral-operator";
/** Where the model cache volume is mounted in model pods. */
export const MODEL_DIR = "/models";
/** The user model pods run as (distroless "nonroot"); the cache volume is made writable for it by fsGroup. */
export const RUNTIME_UID = 65532;
export const DEFAULT_GPU_RESOURCE = "nvidia.com/gpu";
/** Seconds between startup probes; the probe allows startupTimeoutSeconds in all. */
const STARTUP_PROBE_PERIOD = 10;
/** A stopping pod gets the runtime's drain time plus this margin before it is killed. */
const GRACE_MARGIN_SECONDS = 15;

export function ownerReference(model: Model): OwnerReference {
  if (!model.metadata.uid) throw new Error(`Model ${model.metadata.name} has no uid`);
  return { apiVersion: MODEL_API_VERSION, kind: MODEL_KIND, name: model.metadata.name, uid: model.metadata.uid, controller: true, blockOwnerDeletion: true };
}

/** Labels of every object the operator makes for a Model; the first one also selects its pods. */
export function modelLabels(model: Model): Record<string, string> {
  return {
    [LABELS.model]: model.metadata.name,
    [LABELS.name]: "corral-runtime",
    [LABELS.instance]: model.metadata.name,
    [LABELS.component]: "model",
    [LABELS.managedBy]: MANAGED_BY,
  };
}

export const deploymentName = (model: Model) => model.metadata.name;
export const serviceName = (model: Model) => model.metadata.name;
export const cacheClaimName = (model: Model) => model.spec.cache?.claimName ?? `${model.metadata.name}-cache`;

export function gpuCount(model: Model): number {
  return model.spec.resources?.gpu ?? 0;
}

/** The `--model` argument: remote sources as they are, paths inside the cache volume. */
export function runtimeModelArg(source: string): string {
  if (source.startsWith("hf:") || source.startsWith("https://")) return source;
  return `${MODEL_DIR}/${source.replace(/^\/+/, "")}`;
}

/** spec.defaults as the runtime's `--defaults` JSON (the API's snake_case names), knobs in a fixed order. */
export function runtimeDefaultsArg(defaults: ModelSamplingDefaults | undefined): string | undefined {
  return samplingDefaultsJson(apiSamplingDefaults(defaults));
}

/** The arguments of `corral runtime` in a model pod. */
export function runtimeArgs(model: Model, settings: DesiredSettings): string[] {
  const spec = model.spec;
  return runtimeArgv({
    model: runtimeModelArg(spec.source),
    modelId: modelIdOf(model),
    modelDir: MODEL_DIR,
    host: "0.0.0.0",
    port: settings.runtimePort,
    gpu: gpuCount(model) > 0 ? "cuda" : "off",
    drainSeconds: settings.drainSeconds,
    logLevel: settings.runtimeLogLevel,
    parallel: spec.parallel,
    contextSize: spec.contextSize,
    threads: spec.threads,
    defaults: runtimeDefaultsArg(spec.defaults),
  });
}

/** The operator's variables, then spec.env (a variable of the same name replaces the operator's). */
export function runtimeEnv(model: Model): EnvVar[] {
  const env: EnvVar[] = [
    // The root filesystem is read-only: HOME (and caches under it) live on the /tmp emptyDir.
    { name: "HOME", value: "/tmp" },
    ...Object.entries(RUNTIME_PROCESS_ENV).map(([name, value]) => ({ name, value })),
  ];
  for (const variable of model.spec.env ?? []) {
    const at = env.findIndex((existing) => existing.name === variable.name);
    const copy: EnvVar = { name: variable.name };
    if (variable.value !== undefined) copy.value = variable.value;
    if (variable.valueFrom !== undefined) copy.valueFrom = variable.valueFrom;
    if (at >= 0) env[at] = copy;
    else env.push(copy);
  }
  return env;
}

function resourceRequirements(model: Model): { requests?: Record<string, string>; limits?: Record<string, string> } {
  const resources = model.spec.resources ?? {};
  const amounts: Record<string, string> = {};
  if (resources.cpu !== undefined) amounts.cpu = String(resources.cpu);
  if (resources.memory !== undefined) amounts.memory = String(resources.memory);
  if (gpuCount(model) > 0) amounts[resources.gpuResourceName ?? DEFAULT_GPU_RESOURCE] = String(gpuCount(model));
  // Requests equal limits: the runtime sizes its threads from the CPU limit, and memory that may be
  // taken back (request < limit) is an OOM kill in the middle of a generation.
  return Object.keys(amounts).length ? { requests: { ...amounts }, limits: { ...amounts } } : {};
}

/** A stable short hash of an object (keys sorted), written on children as `corral.dev/spec-hash`. */
export function specHash(value: unknown): string {
  return createHash("sha256").update(stableJson(value)).digest("hex").slice(0, 16);
}

function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(",")}]`;
  if (value && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/** Adds the spec-hash annotation, computed over everything else. */
function withHash<T extends KubeObject>(object: T): T {
  const hash = specHash(object);
  object.metadata.annotations = { ...(object.metadata.annotations ?? {}), [ANNOTATIONS.specHash]: hash };
  return object;
}

export function desiredDeployment(model: Model, settings: DesiredSettings): KubeObject & { spec: Record<string, any> } {
  const spec = model.spec;
  const labels = modelLabels(model);
  const gpus = gpuCount(model);
  const image = spec.image ?? (gpus > 0 ? settings.gpuImage : settings.image);
  const container: Record<string, unknown> = {
    name: RUNTIME_CONTAINER,
    image,
    ...(settings.imagePullPolicy ? { imagePullPolicy: settings.imagePullPolicy } : {}),
    command: ["corral"],
    args: runtimeArgs(model, settings),
    env: runtimeEnv(model),
    ports: [{ name: RUNTIME_PORT_NAME, containerPort: settings.runtimePort, protocol: "TCP" }],
    resources: resourceRequirements(model),
    // Long enough for the largest download: liveness and readiness only start once /readyz answered.
    startupProbe: {
      httpGet: { path: "/readyz", port: RUNTIME_PORT_NAME },
      periodSeconds: STARTUP_PROBE_PERIOD,
      timeoutSeconds: 5,
      failureThreshold: Math.ceil(settings.startupTimeoutSeconds / STARTUP_PROBE_PERIOD),
    },
    readinessProbe: { httpGet: { path: "/readyz", port: RUNTIME_PORT_NAME }, periodSeconds: 5, timeoutSeconds: 3, failureThreshold: 2 },
    livenessProbe: { httpGet: { path: "/healthz", port: RUNTIME_PORT_NAME }, periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 6 },
    securityContext: {
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      runAsNonRoot: true,
      capabilities: { drop: ["ALL"] },
    },
    // A runtime that exits (a model that cannot load) leaves its last log lines in the pod's status.
    terminationMessagePolicy: "FallbackToLogsOnError",
    volumeMounts: [
      { name: "models", mountPath: MODEL_DIR },
      { name: "tmp", mountPath: "/tmp" },
    ],
  };
  const podSpec: Record<string, unknown> = {
    containers: [container],
    securityContext: {
      runAsNonRoot: true,
      runAsUser: RUNTIME_UID,
      runAsGroup: RUNTIME_UID,
      fsGroup: RUNTIME_UID,
      fsGroupChangePolicy: "OnRootMismatch",
      seccompProfile: { type: "RuntimeDefault" },
    },
    // Longer than the runtime's drain, so in-flight generations finish before the kill.
    terminationGracePeriodSeconds: Math.ceil(settings.drainSeconds) + GRACE_MARGIN_SECONDS,
    automountServiceAccountToken: false,
    enableServiceLinks: false,
    volumes: [
      spec.cache ? { name: "models", persistentVolumeClaim: { claimName: cacheClaimName(model) } } : { name: "models", emptyDir: {} },
      { name: "tmp", emptyDir: {} },
    ],
  };
  if (spec.nodeSelector && Object.keys(spec.nodeSelector).length) podSpec.nodeSelector = spec.nodeSelector;
  if (spec.tolerations?.length) podSpec.tolerations = spec.tolerations;
  if (spec.affinity && Object.keys(spec.affinity).length) podSpec.affinity = spec.affinity;
  if (spec.priorityClassName) podSpec.priorityClassName = spec.priorityClassName;

  return withHash({
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: {
      name: deploymentName(model),
      namespace: model.metadata.namespace,
      labels,
      ownerReferences: [ownerReference(model)],
    },
    spec: {
      replicas: effectiveReplicas(spec),
      selector: { matchLabels: { [LABELS.model]: model.metadata.name } },
      // CPU models surge (no request goes unanswered); a GPU model replaces a pod at a time, as a
      // spare GPU for a surge pod is rarely there.
      strategy: {
        type: "RollingUpdate",
        rollingUpdate: gpus > 0 ? { maxSurge: 0, maxUnavailable: 1 } : { maxSurge: 1, maxUnavailable: 0 },
      },
      revisionHistoryLimit: 3,
      // Downloads are slow: the Deployment only reports ProgressDeadlineExceeded after the startup timeout.
      progressDeadlineSeconds: settings.startupTimeoutSeconds + 600,
      template: {
        metadata: {
          labels,
          annotations: { [ANNOTATIONS.modelId]: modelIdOf(model), "kubectl.kubernetes.io/default-container": RUNTIME_CONTAINER },
        },
        spec: podSpec,
      },
    },
  });
}

export function desiredService(model: Model, settings: DesiredSettings): KubeObject & { spec: Record<string, any> } {
  return withHash({
    apiVersion: "v1",
    kind: "Service",
    metadata: {
      name: serviceName(model),
      namespace: model.metadata.namespace,
      labels: modelLabels(model),
      annotations: { [ANNOTATIONS.modelId]: modelIdOf(model) },
      ownerReferences: [ownerReference(model)],
    },
    spec: {
      type: "ClusterIP",
      selector: { [LABELS.model]: model.metadata.name },
      ports: [{ name: RUNTIME_PORT_NAME, port: settings.servicePort, targetPort: RUNTIME_PORT_NAME, protocol: "TCP" }],
    },
  });
}

/** The cache claim the operator creates (spec.cache.size); undefined for an existing claim or none. */
export function desiredPvc(model: Model): (KubeObject & { spec: Record<string, any> }) | undefined {
  const cache = model.spec.cache;
  if (!cache || cache.size === undefined) return undefined;
  return withHash({
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    metadata: {
      name: cacheClaimName(model),
      namespace: model.metadata.namespace,
      labels: modelLabels(model),
      ownerReferences: [ownerReference(model)],
    },
    spec: {
      accessModes: [cache.accessMode ?? "ReadWriteOnce"],
      resources: { requests: { storage: String(cache.size) } },
      ...(cache.storageClassName ? { storageClassName: cache.storageClassName } : {}),
    },
  });
}

/** `http://<service>.<namespace>.svc[.<domain>]:<port>`: the Model's status.endpoint. */
export function serviceEndpoint(model: Model, settings: Pick<DesiredSettings, "servicePort"> & { clusterDomain?: string }): string {
  const domain = settings.clusterDomain ? `.${settings.clusterDomain}` : "";
  return `http://${serviceName(model)}.${model.metadata.namespace}.svc${domain}:${settings.servicePort}`;
}
