import type { Logger } from "../common/logger.js";
import { RESOURCES, describeKubeError, errorCode, isNotFound, isRetriable, type KubeClient, type ResourceType } from "../common/kube/client.js";
import type { Informer } from "../common/kube/informer.js";
import { controllerOf, splitKey, type Deployment, type KubeObject, type PersistentVolumeClaim, type Pod, type Service } from "../common/kube/types.js";
import {
  ANNOTATIONS,
  LABELS,
  MODELS,
  MODEL_API_VERSION,
  MODEL_KIND,
  RUNTIME_CONTAINER,
  RUNTIME_PORT_NAME,
  effectiveReplicas,
  modelIdOf,
  type Model,
  type ModelStatus,
} from "../common/kube/model-resource.js";
import type { OperatorConfig } from "./config.js";
import { FIELD_MANAGER, desiredDeployment, desiredPvc, desiredService, serviceEndpoint } from "./desired.js";
import type { EventRecorder } from "./events.js";
import type { ProcessResult } from "./queue.js";
import { computeStatus, getCondition, isPodReady, sameStatus, type Problem, type RuntimeInfo } from "./status.js";

/**
 * The Model reconciler: level-triggered. It reads the Model and its children from the informer
 * caches (never from the event that woke it), applies what should exist, and writes the status
 * once, only when it changed. Waiting on something (pods starting) is a requeue, not an error;
 * an API server refusing what the Model asks for is reported in the status, not retried blindly;
 * anything else is thrown with its cause and retried with backoff by the queue.
 */

export interface Caches {
  models: Informer<Model>;
  deployments: Informer<Deployment>;
  services: Informer<Service>;
  pvcs: Informer<PersistentVolumeClaim>;
  pods: Informer<Pod>;
}

export type RuntimeProbe = (url: string, signal: AbortSignal) => Promise<RuntimeInfo | undefined>;

export interface ReconcilerOptions {
  client: KubeClient;
  caches: Caches;
  config: OperatorConfig;
  events: EventRecorder;
  logger: Logger;
  /** Reads a starting runtime's /info; default: fetch with a 1 s timeout. */
  probe?: RuntimeProbe;
  onStatusWrite?: () => void;
}

/** A child of this name exists and belongs to someone else: the operator will not take it over. */
export class ChildConflictError extends Error {
  constructor(
    readonly kind: string,
    readonly objectName: string,
    readonly ownerDescription: string,
  ) {
    super(`${kind} ${objectName} already exists and is ${ownerDescription}: delete or rename it, or rename the Model`);
    this.name = "ChildConflictError";
  }
}

/** How long an apply we just made stands in for the cache, which has not seen it yet. */
const APPLIED_MEMO_MS = 30_000;
/** A child still owned by a deleted Model of the same name is being garbage-collected: look again soon. */
const GC_WAIT_MS = 1000;
/** How often a Model whose children the operator may not write is tried again. */
const FORBIDDEN_RETRY_MS = 60_000;

export const defaultProbe: RuntimeProbe = async (url, signal) => {
  const response = await fetch(`${url}/info`, { signal: AbortSignal.any([signal, AbortSignal.timeout(1000)]) });
  if (!response.ok) return undefined;
  return (await response.json()) as RuntimeInfo;
};

/** Where a pod's runtime answers: its IP and the runtime container's named port. */
export function podRuntimeUrl(pod: Pod, fallbackPort: number): string {
  const container = pod.spec?.containers?.find((c) => c.name === RUNTIME_CONTAINER) ?? pod.spec?.containers?.[0];
  const port = container?.ports?.find((p) => p.name === RUNTIME_PORT_NAME)?.containerPort ?? fallbackPort;
  const ip = pod.status!.podIP!;
  return `http://${ip.includes(":") ? `[${ip}]` : ip}:${port}`;
}

/** desired ⊆ live: every field the operator sets has the same value on the live object. */
export function isSubset(desired: unknown, live: unknown): boolean {
  if (Array.isArray(desired)) {
    return Array.isArray(live) && live.length === desired.length && desired.every((item, i) => isSubset(item, live[i]));
  }
  if (desired !== null && typeof desired === "object") {
    if (live === null || typeof live !== "object" || Array.isArray(live)) return false;
    return Object.entries(desired as Record<string, unknown>).every(([key, value]) => value === undefined || isSubset(value, (live as Record<string, unknown>)[key]));
  }
  if (desired === live) return true;
  // The API server may turn 1 into "1" (quantities) or the other way: same value.
  return (typeof desired === "number" || typeof desired === "string") && (typeof live === "number" || typeof live === "string") && String(desired) === String(live);
}

interface EnsureResult {
  created: boolean;
  /** The pod template changed: a rollout. */
  rolled: boolean;
  scaledFrom?: number;
  waiting: boolean;
}

export class Reconciler {
  private readonly applied = new Map<string, { hash: string; at: number }>();
  /**
   * The status last written, by Model uid. The operator is the only writer of Model status, so
   * this is newer than an informer cache that has not seen the write yet (which would otherwise
   * make the next reconcile write it again and repeat its events).
   */
  private readonly written = new Map<string, ModelStatus>();
  private readonly probe: RuntimeProbe;

  constructor(private readonly options: ReconcilerOptions) {
    this.probe = options.probe ?? defaultProbe;
  }

  async reconcile(key: string, signal: AbortSignal = new AbortController().signal): Promise<ProcessResult> {
    const { caches, config } = this.options;
    const { namespace, name } = splitKey(key);
    const model = caches.models.get(namespace, name);
    if (!model || model.metadata.deletionTimestamp) {
      // Gone: its children carry owner references, so the garbage collector removes them.
      for (const memoKey of this.applied.keys()) if (memoKey.endsWith(`|${namespace}/${name}`) || memoKey.includes(`|${namespace}/${name}-cache`)) this.applied.delete(memoKey);
      if (model?.metadata.uid) this.written.delete(model.metadata.uid);
      return {};
    }
    const log = this.options.logger.child({ model: key });
    const before: ModelStatus = this.written.get(model.metadata.uid!) ?? model.status ?? {};
    const problems: Problem[] = [];
    const desiredReplicas = effectiveReplicas(model.spec);

    const duplicate = this.olderModelWithSameId(model);
    if (duplicate) {
      problems.push({
        reason: "DuplicateModelId",
        fatal: false,
        message: `model id "${modelIdOf(model)}" is also served by the older Model ${duplicate.metadata.name}; the router sends its requests there. Set a different spec.modelId.`,
      });
    }

    const results: { kind: string; name: string; result: EnsureResult }[] = [];
    let waiting = false;
    let forbidden = false;
    try {
      const pvc = desiredPvc(model);
      if (pvc) results.push({ kind: "PersistentVolumeClaim", name: pvc.metadata.name, result: await this.ensure(RESOURCES.persistentVolumeClaims, caches.pvcs, pvc, model) });
      const deployment = desiredDeployment(model, config);
      results.push({ kind: "Deployment", name: deployment.metadata.name, result: await this.ensure(RESOURCES.deployments, caches.deployments, deployment, model) });
      const service = desiredService(model, config);
      results.push({ kind: "Service", name: service.metadata.name, result: await this.ensure(RESOURCES.services, caches.services, service, model) });
      waiting = results.some((r) => r.result.waiting);
    } catch (error) {
      if (error instanceof ChildConflictError) {
        problems.push({ reason: "ChildConflict", fatal: true, message: error.message });
      } else if (errorCode(error) === 403) {
        // Permissions can be fixed without touching the Model: report it and look again later.
        problems.push({
          reason: "Forbidden",
          fatal: true,
          message: `the operator may not create the Model's objects: ${describeKubeError(error)}. Check the operator's RBAC (common/kube/rbac.ts, the Helm chart's Roles).`,
        });
        forbidden = true;
      } else if (!isRetriable(error)) {
        // The API server refused what the Model asks for (an invalid quantity, a forbidden field):
        // retrying will not help; a spec change will.
        problems.push({ reason: "Rejected", fatal: true, message: `the API server refused the Model's objects: ${describeKubeError(error)}. Fix the Model's spec.` });
        log.warn({ reason: describeKubeError(error) }, "the API server refused an object");
      } else {
        throw new Error(`applying the children of Model ${key}`, { cause: error });
      }
    }

    // Observe what the children report.
    const deployment = caches.deployments.get(namespace, name);
    const pods = caches.pods.list(namespace).filter((pod) => pod.metadata.labels?.[LABELS.model] === name);
    const runtimeInfo = await this.probeStartingPods(pods, signal);
    const status = computeStatus({
      model: { ...model, status: before },
      desiredReplicas,
      deployment: deployment && controllerOf(deployment)?.uid === model.metadata.uid ? deployment : undefined,
      pods,
      runtimeInfo,
      problems,
      endpoint: serviceEndpoint(model, config),
      now: new Date(),
    });

    if (!sameStatus(before, status)) {
      try {
        await this.options.client.apply(
          MODELS,
          { apiVersion: MODEL_API_VERSION, kind: MODEL_KIND, metadata: { name, namespace }, status } as KubeObject,
          { fieldManager: FIELD_MANAGER, force: true, subresource: "status" },
        );
        this.written.set(model.metadata.uid!, status);
        this.options.onStatusWrite?.();
      } catch (error) {
        this.written.delete(model.metadata.uid!);
        if (isNotFound(error)) return {};
        throw new Error(`writing the status of Model ${key}`, { cause: error });
      }
    }
    this.recordEvents(model, before, status, results);

    if (waiting) return { requeueAfterMs: GC_WAIT_MS };
    if (forbidden) return { requeueAfterMs: FORBIDDEN_RETRY_MS };
    const starting = status.phase === "Downloading" || status.phase === "Loading";
    if (starting && config.probePods) return { requeueAfterMs: config.progressSeconds * 1000 };
    return {};
  }

  /** Forgets what this replica wrote: another replica may write while it is not the leader. */
  forget(): void {
    this.applied.clear();
    this.written.clear();
  }

  /** Applies `desired` unless the live object already matches it. */
  private async ensure<T extends KubeObject>(rt: ResourceType, cache: Informer<T>, desired: KubeObject, model: Model): Promise<EnsureResult> {
    const namespace = desired.metadata.namespace!;
    const name = desired.metadata.name;
    const memoKey = `${rt.kind}|${namespace}/${name}`;
    const hash = desired.metadata.annotations?.[ANNOTATIONS.specHash] ?? "";
    const live = cache.get(namespace, name);
    let scaledFrom: number | undefined;
    let rolled = false;
    if (live) {
      const owner = controllerOf(live);
      if (!owner || owner.kind !== MODEL_KIND || owner.apiVersion.split("/")[0] !== MODEL_API_VERSION.split("/")[0]) {
        throw new ChildConflictError(rt.kind, `${namespace}/${name}`, owner ? `controlled by ${owner.kind} ${owner.name}` : "not managed by Corral");
      }
      if (owner.uid !== model.metadata.uid) {
        if (owner.name === model.metadata.name) return { created: false, rolled: false, waiting: true };
        throw new ChildConflictError(rt.kind, `${namespace}/${name}`, `controlled by Model ${owner.name}`);
      }
      if (live.metadata.deletionTimestamp) return { created: false, rolled: false, waiting: true };
      const liveHash = live.metadata.annotations?.[ANNOTATIONS.specHash];
      if (liveHash === hash && isSubset(desired, live)) return { created: false, rolled: false, waiting: false };
      const liveSpec = (live as unknown as { spec?: Record<string, unknown> }).spec;
      const desiredSpec = (desired as unknown as { spec?: Record<string, unknown> }).spec;
      if (rt === RESOURCES.deployments && liveSpec && desiredSpec) {
        rolled = !isSubset(desiredSpec.template, liveSpec.template);
        if (liveSpec.replicas !== desiredSpec.replicas) scaledFrom = liveSpec.replicas as number;
      }
    } else {
      const memo = this.applied.get(memoKey);
      if (memo && memo.hash === hash && Date.now() - memo.at < APPLIED_MEMO_MS) return { created: false, rolled: false, waiting: false };
    }
    await this.options.client.apply(rt, desired, { fieldManager: FIELD_MANAGER, force: true });
    this.applied.set(memoKey, { hash, at: Date.now() });
    return { created: !live, rolled, scaledFrom, waiting: false };
  }

  /** Another Model in the namespace with the same public id, created earlier (it wins). */
  private olderModelWithSameId(model: Model): Model | undefined {
    const id = modelIdOf(model);
    const created = model.metadata.creationTimestamp ?? "";
    return this.options.caches.models
      .list(model.metadata.namespace)
      .find(
        (other) =>
          other.metadata.uid !== model.metadata.uid &&
          !other.metadata.deletionTimestamp &&
          modelIdOf(other) === id &&
          ((other.metadata.creationTimestamp ?? "") < created || ((other.metadata.creationTimestamp ?? "") === created && other.metadata.name < model.metadata.name)),
      );
  }

  /** /info of pods whose runtime runs but is not ready: download progress and load failures. */
  private async probeStartingPods(pods: readonly Pod[], signal: AbortSignal): Promise<Map<string, RuntimeInfo>> {
    const out = new Map<string, RuntimeInfo>();
    if (!this.options.config.probePods) return out;
    const starting = pods
      .filter((pod) => !pod.metadata.deletionTimestamp && pod.status?.podIP && !isPodReady(pod))
      .filter((pod) => pod.status?.containerStatuses?.some((s) => s.name === RUNTIME_CONTAINER && s.state?.running) ?? pod.status?.phase === "Running")
      .slice(0, 3);
    await Promise.all(
      starting.map(async (pod) => {
        try {
          const info = await this.probe(podRuntimeUrl(pod, this.options.config.runtimePort), signal);
          if (info) out.set(pod.metadata.name, info);
        } catch {
          // Not answering yet, or a NetworkPolicy in the way: the phase says "starting".
        }
      }),
    );
    return out;
  }

  private recordEvents(model: Model, before: ModelStatus, after: ModelStatus, results: { kind: string; name: string; result: EnsureResult }[]): void {
    const events = this.options.events;
    const created = results.filter((r) => r.result.created);
    if (created.length) events.record(model, "Normal", "Created", `created ${created.map((r) => `${r.kind} ${r.name}`).join(", ")}`);
    for (const { kind, name, result } of results) {
      if (result.rolled) {
        events.record(model, "Normal", "RollingOut", `the spec changed (generation ${model.metadata.generation ?? "?"}): rolling out ${kind} ${name}`);
      }
      if (result.scaledFrom !== undefined) {
        events.record(model, "Normal", "Scaled", `scaled ${kind} ${name} from ${result.scaledFrom} to ${effectiveReplicas(model.spec)} replicas`);
      }
    }
    const ready = getCondition(after, "Ready");
    const degraded = getCondition(after, "Degraded");
    const degradedBefore = getCondition(before, "Degraded");
    // Pending is where every Model starts: not worth an event (Unschedulable is, below).
    if (after.phase !== before.phase && ready && after.phase !== "Pending") {
      if (after.phase === "Failed") events.record(model, "Warning", ready.reason, ready.message);
      else if (after.phase === "Ready") events.record(model, "Normal", "Ready", ready.message);
      else events.record(model, "Normal", after.phase ?? "Pending", ready.message);
    }
    if (degraded?.status === "True" && after.phase !== "Failed" && (degradedBefore?.status !== "True" || degradedBefore.reason !== degraded.reason)) {
      events.record(model, "Warning", degraded.reason, degraded.message);
    }
  }
}
