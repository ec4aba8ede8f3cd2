import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { packagePath } from "../package-root.js";
import type { ResourceType } from "./client.js";
import Type, { type Static, type TOptional } from "typebox";
import { SAMPLING_KNOBS, SAMPLING_NAMES, camelCase, type CamelCase, type SamplingName, type SamplingOverrides } from "../api.js";
import type { KubeObject } from "./types.js";
import { ROUTING_STRATEGIES } from "../routing.js";

/**
 * The Model custom resource (corral.dev/v1alpha1), shared by the operator and the router's
 * Kubernetes backend. The schema itself lives in crds/models.corral.dev.yaml; the TypeScript types
 * are Static<> of the TypeBox schemas below, which crds/model-schema.test.ts compares with it.
 */

export const MODEL_GROUP = "corral.dev";
export const MODEL_VERSION = "v1alpha1";
export const MODEL_API_VERSION = `${MODEL_GROUP}/${MODEL_VERSION}`;
export const MODEL_KIND = "Model";

export const MODELS: ResourceType = { group: MODEL_GROUP, version: MODEL_VERSION, plural: "models", kind: MODEL_KIND, namespaced: true };

export const MODEL_CRD_FILE = packagePath("crds", "models.corral.dev.yaml");
export const MODEL_CRD_NAME = "models.corral.dev";

/** Labels and annotations Corral puts on what the operator creates. */
export const LABELS = {
  /** The Model's name, on Deployments, Services, PVCs and pods; the pod selector. */
  model: "corral.dev/model",
  name: "app.kubernetes.io/name",
  instance: "app.kubernetes.io/instance",
  component: "app.kubernetes.io/component",
  managedBy: "app.kubernetes.io/managed-by",
} as const;

export const ANNOTATIONS = {
  /** The public model id on pods (ids may contain '/', which label values may not). */
  modelId: "corral.dev/model-id",
  /** Hash of what the operator last applied to a child; a different one means the spec changed. */
  specHash: "corral.dev/spec-hash",
} as const;

export const MANAGED_BY = "corral-operator";

/** The container in model pods that runs `corral runtime`. */
export const RUNTIME_CONTAINER = "runtime";
/** Name of the runtime's container port (the router dials podIP:<this port>). */
export const RUNTIME_PORT_NAME = "http";

export const MODEL_PHASES = ["Pending", "Downloading", "Loading", "Ready", "ScaledToZero", "Failed"] as const;
export type ModelPhase = (typeof MODEL_PHASES)[number];

/** spec.defaults: the API's sampling knobs (common/api.ts) under their camelCase names. */
type ModelSamplingDefaultsProperties = { [K in SamplingName as CamelCase<K>]: TOptional<(typeof SAMPLING_KNOBS)[K]["schema"]> };

/** The Model's name of each API sampling knob, and back: max_length <-> maxLength. */
export const SAMPLING_RESOURCE_NAMES = Object.fromEntries(SAMPLING_NAMES.map((name) => [name, camelCase(name)])) as { [K in SamplingName]: CamelCase<K> };

export const ModelSamplingDefaultsSchema = Type.Object(
  Object.fromEntries(SAMPLING_NAMES.map((name) => [camelCase(name), Type.Optional(SAMPLING_KNOBS[name].schema)])) as ModelSamplingDefaultsProperties,
  { description: "Sampling defaults for this model, used when a request leaves a parameter out (they override the API's)." },
);
export type ModelSamplingDefaults = Static<typeof ModelSamplingDefaultsSchema>;

/** spec.defaults in the API's names (what the runtime's `--defaults` takes), knobs in table order. */
export function apiSamplingDefaults(defaults: ModelSamplingDefaults | undefined): SamplingOverrides | undefined {
  if (!defaults) return undefined;
  const out: Record<string, unknown> = {};
  for (const name of SAMPLING_NAMES) {
    const value = defaults[SAMPLING_RESOURCE_NAMES[name]];
    if (value !== undefined) out[name] = value;
  }
  return out as SamplingOverrides;
}

/*
 * The Model's shape as TypeBox schemas, so that the TypeScript types are Static<> of them.
 * crds/model-schema.test.ts checks them against the CRD (property names, types, required, enums),
 * so the two cannot drift. Validation (bounds, patterns, CEL rules) is the CRD's job: the API
 * server enforces it before the operator ever sees a Model.
 */

/** A Kubernetes quantity: `2`, `500m`, `4Gi` (x-kubernetes-int-or-string). */
const Quantity = Type.Union([Type.Integer(), Type.String()]);

const KeyRef = Type.Object({ name: Type.String(), key: Type.String(), optional: Type.Optional(Type.Boolean()) });

export const ModelEnvVarSchema = Type.Object({
  name: Type.String(),
  value: Type.Optional(Type.String()),
  valueFrom: Type.Optional(
    Type.Object({
      secretKeyRef: Type.Optional(KeyRef),
      configMapKeyRef: Type.Optional(KeyRef),
      fieldRef: Type.Optional(Type.Object({ fieldPath: Type.String(), apiVersion: Type.Optional(Type.String()) })),
    }),
  ),
});

export const ModelTolerationSchema = Type.Object({
  key: Type.Optional(Type.String()),
  operator: Type.Optional(Type.Enum(["Exists", "Equal"])),
  value: Type.Optional(Type.String()),
  effect: Type.Optional(Type.Enum(["NoSchedule", "PreferNoSchedule", "NoExecute"])),
  tolerationSeconds: Type.Optional(Type.Integer()),
});

export const ACCESS_MODES = ["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"] as const;

export const ModelCacheSchema = Type.Object({
  claimName: Type.Optional(Type.String()),
  size: Type.Optional(Quantity),
  storageClassName: Type.Optional(Type.String()),
  accessMode: Type.Optional(Type.Enum([...ACCESS_MODES])),
});
export type ModelCache = Static<typeof ModelCacheSchema>;

export const ModelAutoscalingSchema = Type.Object({
  targetLoad: Type.Optional(Type.Number()),
  windowSeconds: Type.Optional(Type.Integer()),
  scaleDownDelaySeconds: Type.Optional(Type.Integer()),
  scaleToZeroSeconds: Type.Optional(Type.Integer()),
});
export type ModelAutoscaling = Static<typeof ModelAutoscalingSchema>;

/** spec.autoscaling's defaults (targetLoad's is the pod's parallel sequences); the CRD's descriptions state them. */
export const AUTOSCALING_DEFAULTS = { windowSeconds: 60, scaleDownDelaySeconds: 300, scaleToZeroSeconds: 600 } as const;

export const ModelSpecSchema = Type.Object({
  source: Type.String(),
  modelId: Type.Optional(Type.String()),
  replicas: Type.Optional(Type.Integer()),
  minReplicas: Type.Optional(Type.Integer()),
  maxReplicas: Type.Optional(Type.Integer()),
  autoscaling: Type.Optional(ModelAutoscalingSchema),
  routing: Type.Optional(Type.Enum([...ROUTING_STRATEGIES])),
  resources: Type.Optional(
    Type.Object({
      cpu: Type.Optional(Quantity),
      memory: Type.Optional(Quantity),
      gpu: Type.Optional(Type.Integer()),
      gpuResourceName: Type.Optional(Type.String()),
    }),
  ),
  contextSize: Type.Optional(Type.Integer()),
  parallel: Type.Optional(Type.Integer()),
  threads: Type.Optional(Type.Integer()),
  defaults: Type.Optional(ModelSamplingDefaultsSchema),
  image: Type.Optional(Type.String()),
  env: Type.Optional(Type.Array(ModelEnvVarSchema)),
  nodeSelector: Type.Optional(Type.Record(Type.String(), Type.String())),
  tolerations: Type.Optional(Type.Array(ModelTolerationSchema)),
  /** A core/v1 Affinity, passed to the pods as it is (x-kubernetes-preserve-unknown-fields). */
  affinity: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
  priorityClassName: Type.Optional(Type.String()),
  cache: Type.Optional(ModelCacheSchema),
});
export type ModelSpec = Static<typeof ModelSpecSchema>;

export const ModelConditionSchema = Type.Object({
  type: Type.String(),
  status: Type.Enum(["True", "False", "Unknown"]),
  observedGeneration: Type.Optional(Type.Integer()),
  lastTransitionTime: Type.String(),
  reason: Type.String(),
  message: Type.String(),
});

export const MODEL_PROGRESS_STAGES = ["scheduling", "downloading", "loading"] as const;
export type ModelProgressStage = (typeof MODEL_PROGRESS_STAGES)[number];

/** How far a starting Model is (status.progress): absent once it is ready, at zero or failed. */
export const ModelProgressSchema = Type.Object({
  stage: Type.Enum([...MODEL_PROGRESS_STAGES]),
  fraction: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })),
  bytesDone: Type.Optional(Type.Integer({ minimum: 0 })),
  bytesTotal: Type.Optional(Type.Integer({ minimum: 0 })),
});
export type ModelProgress = Static<typeof ModelProgressSchema>;

export const ModelStatusSchema = Type.Object({
  phase: Type.Optional(Type.Enum([...MODEL_PHASES])),
  modelId: Type.Optional(Type.String()),
  replicas: Type.Optional(Type.Integer()),
  readyReplicas: Type.Optional(Type.Integer()),
  ready: Type.Optional(Type.String()),
  endpoint: Type.Optional(Type.String()),
  selector: Type.Optional(Type.String()),
  observedGeneration: Type.Optional(Type.Integer()),
  conditions: Type.Optional(Type.Array(ModelConditionSchema)),
  progress: Type.Optional(ModelProgressSchema),
});
export type ModelStatus = Static<typeof ModelStatusSchema>;

export interface Model extends KubeObject {
  spec: ModelSpec;
  status?: ModelStatus;
}

/** The public id of a Model: spec.modelId, or the resource name. */
export function modelIdOf(model: Model): string {
  return model.spec?.modelId || model.metadata.name;
}

/**
 * The replicas the Model's Deployment should run: spec.replicas kept within
 * [minReplicas, maxReplicas].
 */
export function effectiveReplicas(spec: ModelSpec): number {
  const replicas = spec.replicas ?? 1;
  const min = spec.minReplicas ?? 0;
  const max = spec.maxReplicas ?? Number.POSITIVE_INFINITY;
  return Math.min(Math.max(replicas, min), Math.max(max, min));
}

/** Corral's autoscaler owns spec.replicas of Models that set maxReplicas. */
export function isAutoscaled(spec: ModelSpec): boolean {
  return spec.maxReplicas !== undefined;
}

/** The pod label selector of a Model, as a string (status.selector, list calls). */
export function modelSelector(name: string): string {
  return `${LABELS.model}=${name}`;
}

/** The CustomResourceDefinition as a plain object (wire names: `default`, `x-kubernetes-*`). */
export function loadModelCrd(): Record<string, any> {
  return parse(readFileSync(MODEL_CRD_FILE, "utf8")) as Record<string, any>;
}
