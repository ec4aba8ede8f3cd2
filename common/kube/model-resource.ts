import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { packagePath } from "../package-root.js";
import type { ResourceType } from "./client.js";
import type { Condition, EnvVar, KubeObject, Toleration } from "./types.js";

/**
 * The Model custom resource (corral.dev/v1alpha1), shared by the operator and the router's
 * Kubernetes backend. The schema itself lives in crds/models.corral.dev.yaml; these types follow it.
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

export interface ModelSamplingDefaults {
  maxLength?: number;
  temperature?: number;
  topP?: number;
  topK?: number;
  repetitionPenalty?: number;
  doSample?: boolean;
}

export interface ModelCache {
  claimName?: string;
  size?: string | number;
  storageClassName?: string;
  accessMode?: "ReadWriteOnce" | "ReadWriteMany" | "ReadWriteOncePod";
}

export interface ModelSpec {
  source: string;
  modelId?: string;
  replicas?: number;
  minReplicas?: number;
  maxReplicas?: number;
  resources?: { cpu?: string | number; memory?: string | number; gpu?: number; gpuResourceName?: string };
  contextSize?: number;
  parallel?: number;
  threads?: number;
  defaults?: ModelSamplingDefaults;
  image?: string;
  env?: EnvVar[];
  nodeSelector?: Record<string, string>;
  tolerations?: Toleration[];
  affinity?: Record<string, unknown>;
  priorityClassName?: string;
  cache?: ModelCache;
}

export interface ModelStatus {
  phase?: ModelPhase;
  modelId?: string;
  replicas?: number;
  readyReplicas?: number;
  ready?: string;
  endpoint?: string;
  selector?: string;
  observedGeneration?: number;
  conditions?: Condition[];
}

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

/** The pod label selector of a Model, as a string (status.selector, list calls). */
export function modelSelector(name: string): string {
  return `${LABELS.model}=${name}`;
}

/** The CustomResourceDefinition as a plain object (wire names: `default`, `x-kubernetes-*`). */
export function loadModelCrd(): Record<string, any> {
  return parse(readFileSync(MODEL_CRD_FILE, "utf8")) as Record<string, any>;
}
