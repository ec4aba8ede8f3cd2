import type { Logger } from "../../common/logger.js";
import type { RoutingStrategy } from "../../common/routing.js";
import { RESOURCES, describeKubeError, isNotFound, type KubeClient } from "../../common/kube/client.js";
import { Informer } from "../../common/kube/informer.js";
import { objectKey, type ConfigMap, type Container, type KubeObject, type Pod } from "../../common/kube/types.js";
import { LABELS, MODELS, RUNTIME_CONTAINER, RUNTIME_PORT_NAME, effectiveReplicas, modelIdOf, type Model } from "../../common/kube/model-resource.js";
import { DEFAULT_PARALLEL } from "../../common/runtime-command.js";
import { ModelStartError, downloadProgress, type Backend, type CatalogEntry, type Endpoint, type ModelState, type ModelStatus } from "./types.js";

/**
 * The Kubernetes backend (`corral router --backend kubernetes`): the models are the Model
 * resources of one namespace, their endpoints the ready pods the operator runs for them.
 *
 * - Informers (list + watch, restarted with backoff, relisted after 410) on Models and on the
 *   pods labelled `corral.dev/model`; a pod is an endpoint while it is Ready, has an IP and is not
 *   terminating, at `http://<podIP>:<its "http" container port>`. Answers come from memory.
 * - Starting a model scales it through the Model's scale subresource (what `kubectl scale` does)
 *   to at least one replica; the operator does the rest. Requests wait until a pod is ready, or
 *   fail at once with the reason when the Model is Failed.
 * - Unloading scales it to zero (minReplicas may keep pods running).
 * - The current model (requests without a model id) is shared by every router replica through a
 *   ConfigMap in the namespace (`corral-router`, key `current-model`), which each replica
 *   watches: the router already talks to the Kubernetes API, a watch pushes a change to all
 *   replicas at once, and it needs no Redis. A replica that has not seen a change yet keeps
 *   the previous current model for that moment.
 */

export interface KubernetesBackendOptions {
  client: KubeClient;
  namespace: string;
  logger: Logger;
  /** ConfigMap holding the current model. */
  stateConfigMap?: string;
  /** How long start() waits for the first lists before answering (the router reports unhealthy until then). */
  syncTimeoutMs?: number;
}

export const STATE_KEY = "current-model";
const FIELD_MANAGER = "corral-router";

interface Waiter {
  check: () => boolean;
}

export class KubernetesBackend implements Backend {
  readonly kind = "kubernetes";
  private readonly models: Informer<Model>;
  private readonly pods: Informer<Pod>;
  private readonly state: Informer<ConfigMap>;
  private readonly stateName: string;
  /** Model name -> pod name -> endpoint. */
  private readonly endpoints = new Map<string, Map<string, Endpoint>>();
  /** Model name -> its endpoints as a list, rebuilt when a pod changes: requests read it without copying. */
  private readonly endpointLists = new Map<string, readonly Endpoint[]>();
  /** Told a model's id when its endpoint list is rebuilt (the balancer: Backend.watchEndpoints). */
  private endpointsListener: ((modelId: string) => void) | undefined;
  private readonly waiters = new Map<string, Set<Waiter>>();
  private readonly scaling = new Map<string, Promise<void>>();
  /** Model key -> the Model's resourceVersion when this replica scaled it up (not again until the cache moves on). */
  private readonly scaledAt = new Map<string, string | undefined>();
  /** Models this replica unloaded and whose pods are still going away. */
  private readonly stopping = new Set<string>();
  /** Set by this replica before its ConfigMap write comes back through the watch. */
  private localCurrent: { id: string | null; at: number } | undefined;
  private byId = new Map<string, Model>();

  constructor(private readonly options: KubernetesBackendOptions) {
    const { client, namespace, logger } = options;
    this.stateName = options.stateConfigMap ?? "corral-router";
    const log = logger.child({ component: "kubernetes-backend" });
    this.models = new Informer<Model>({ client, resource: MODELS, namespaces: [namespace], logger: log });
    this.pods = new Informer<Pod>({ client, resource: RESOURCES.pods, namespaces: [namespace], labelSelector: LABELS.model, logger: log });
    this.state = new Informer<ConfigMap>({
      client,
      resource: RESOURCES.configMaps,
      namespaces: [namespace],
      fieldSelector: `metadata.name=${this.stateName}`,
      logger: log,
    });
    this.models.on((_type, model) => {
      this.reindex();
      this.settleStopping(model.metadata.name);
      this.notify(model.metadata.name);
    });
    this.pods.on((type, pod) => {
      this.updateEndpoint(type === "delete" ? undefined : pod, pod);
      const model = pod.metadata.labels?.[LABELS.model];
      if (model) {
        this.settleStopping(model);
        this.notify(model);
      }
    });
    this.state.on(() => (this.localCurrent = undefined));
  }

  async start(): Promise<void> {
    this.models.start();
    this.pods.start();
    this.state.start();
    const timeout = this.options.syncTimeoutMs ?? 10_000;
    try {
      await Promise.all([this.models.waitForSync(timeout), this.pods.waitForSync(timeout), this.state.waitForSync(timeout)]);
    } catch (error) {
      this.options.logger.warn({ reason: (error as Error).message }, "the Kubernetes API has not answered yet; reporting unhealthy until it does");
    }
  }

  async close(): Promise<void> {
    for (const set of this.waiters.values()) set.clear();
    await Promise.all([this.models.stop(), this.pods.stop(), this.state.stop()]);
  }

  healthy(): boolean {
    return this.models.synced() && this.pods.synced() && this.state.synced();
  }

  list(): readonly CatalogEntry[] {
    return [...this.byId.values()]
      .map((model) => this.entry(model))
      .sort((a, b) => (a.model_id < b.model_id ? -1 : a.model_id > b.model_id ? 1 : 0));
  }

  lookup(modelId: string): CatalogEntry | undefined {
    const model = this.byId.get(modelId);
    return model ? this.entry(model) : undefined;
  }

  current(): string | null {
    const local = this.localCurrent;
    const id = local ? local.id : (this.state.get(this.options.namespace, this.stateName)?.data?.[STATE_KEY] ?? null);
    return id && this.byId.has(id) ? id : null;
  }

  routingOf(modelId: string): RoutingStrategy | undefined {
    return this.byId.get(modelId)?.spec.routing;
  }

  readyEndpoints(modelId: string): readonly Endpoint[] {
    const model = this.byId.get(modelId);
    if (!model || this.stopping.has(model.metadata.name)) return [];
    return this.endpointLists.get(model.metadata.name) ?? [];
  }

  status(modelId: string): ModelStatus {
    const model = this.byId.get(modelId);
    const endpoints = this.readyEndpoints(modelId);
    if (!model) return { model_id: modelId, state: "not_loaded", progress: null, message: null, endpoints: [] };
    const ready = model.status?.conditions?.find((c) => c.type === "Ready");
    let state: ModelState;
    const pods = this.endpoints.get(model.metadata.name)?.size ?? 0;
    if (this.stopping.has(model.metadata.name)) state = pods > 0 ? "stopping" : "not_loaded";
    else if (endpoints.length > 0) state = "ready";
    else if (effectiveReplicas(model.spec) === 0 && !this.startingUp(model)) state = pods > 0 ? "stopping" : "not_loaded";
    else if (this.failure(model) !== undefined) state = "failed";
    else {
      switch (model.status?.phase) {
        case "Downloading":
          state = "downloading";
          break;
        case "Loading":
          state = "loading";
          break;
        default:
          state = "starting";
      }
    }
    const message = state === "ready" || state === "not_loaded" ? null : (ready?.message ?? null);
    return { model_id: modelId, state, progress: KubernetesBackend.progressOf(model, state), message, endpoints };
  }

  /**
   * A starting Model's status.progress (written by the operator from the pods' /info) in the shape
   * the local backend reports: bytes done and total while downloading, the share loaded while
   * loading; null before the operator has seen any.
   */
  private static progressOf(model: Model, state: ModelState): ModelStatus["progress"] {
    const progress = model.status?.progress;
    if (state === "downloading" && progress?.stage === "downloading") return downloadProgress(progress.bytesDone ?? 0, progress.bytesTotal ?? null);
    if (state === "loading" && progress?.stage === "loading") return { bytes_done: progress.bytesTotal ?? 0, bytes_total: progress.bytesTotal ?? null, fraction: progress.fraction ?? null };
    return null;
  }

  async ensureReady(modelId: string, signal: AbortSignal): Promise<void> {
    const model = this.byId.get(modelId);
    if (!model) throw new ModelStartError(modelId, `model ${modelId} does not exist in namespace ${this.options.namespace}`);
    // Asked for again after an unload: it is wanted after all.
    this.stopping.delete(model.metadata.name);
    if (this.readyEndpoints(modelId).length > 0) return;
    signal.throwIfAborted();
    const failure = this.failure(model);
    if (failure !== undefined) throw new ModelStartError(modelId, failure);
    // The waiter scales the Model up whenever it sees it at zero replicas.
    await this.waitReady(modelId, model.metadata.name, signal);
  }

  async load(modelId: string, signal: AbortSignal): Promise<void> {
    if (!this.byId.has(modelId)) throw new ModelStartError(modelId, `model ${modelId} does not exist in namespace ${this.options.namespace}`);
    await this.setCurrent(modelId);
    await this.ensureReady(modelId, signal);
  }

  async unload(modelId: string): Promise<void> {
    const model = this.byId.get(modelId);
    if (!model) return;
    if (this.current() === modelId) await this.setCurrent(null);
    try {
      await this.options.client.mergePatch(MODELS, this.options.namespace, model.metadata.name, { spec: { replicas: 0 } }, { subresource: "scale", fieldManager: FIELD_MANAGER });
      this.stopping.add(model.metadata.name);
      this.scaledAt.delete(objectKey(model));
    } catch (error) {
      throw new ModelStartError(modelId, `could not scale Model ${model.metadata.name} to zero: ${describeKubeError(error)}`);
    }
  }

  /** Nothing to re-check: the pod informer sees a pod that stops being Ready (the balancer meanwhile leaves it out). */
  reportFailure(): void {}

  /** Given once by the balancer (Backend.watchEndpoints): a model's endpoints changed. */
  watchEndpoints(listener: (modelId: string) => void): void {
    this.endpointsListener = listener;
  }

  // ---------------------------------------------------------------------------------------------

  private entry(model: Model): CatalogEntry {
    return {
      model_id: modelIdOf(model),
      source: model.spec.source,
      description: model.metadata.annotations?.["corral.dev/description"] ?? null,
      size_bytes: null,
    };
  }

  /** id -> Model; with two Models claiming one id, the older one (the operator marks the other Degraded). */
  private reindex(): void {
    const byId = new Map<string, Model>();
    const models = this.models
      .list(this.options.namespace)
      .filter((m) => !m.metadata.deletionTimestamp)
      .sort((a, b) => {
        const ca = a.metadata.creationTimestamp ?? "";
        const cb = b.metadata.creationTimestamp ?? "";
        return ca !== cb ? (ca < cb ? -1 : 1) : a.metadata.name < b.metadata.name ? -1 : 1;
      });
    for (const model of models) if (!byId.has(modelIdOf(model))) byId.set(modelIdOf(model), model);
    this.byId = byId;
  }

  /** Why the Model cannot run, when its status (for its current spec) says it failed. */
  private failure(model: Model): string | undefined {
    const status = model.status;
    if (status?.phase !== "Failed" || status.observedGeneration !== model.metadata.generation) return undefined;
    if (effectiveReplicas(model.spec) === 0) return undefined;
    const ready = status.conditions?.find((c) => c.type === "Ready");
    return `model ${modelIdOf(model)} failed: ${ready?.message ?? "see kubectl describe model " + model.metadata.name}`;
  }

  private updateEndpoint(pod: Pod | undefined, seen: Pod): void {
    const model = seen.metadata.labels?.[LABELS.model];
    if (!model) return;
    let map = this.endpoints.get(model);
    const name = seen.metadata.name;
    const endpoint = pod ? podEndpoint(pod) : undefined;
    if (endpoint) {
      if (!map) this.endpoints.set(model, (map = new Map()));
      const known = map.get(name);
      if (known?.url === endpoint.url) return;
      map.set(name, endpoint);
    } else if (map?.delete(name)) {
      if (map.size === 0) this.endpoints.delete(model);
    } else return;
    const list = this.endpoints.get(model);
    if (list) this.endpointLists.set(model, [...list.values()]);
    else this.endpointLists.delete(model);
    // Requests queued for a saturated model take a new pod at once (the balancer's watch).
    const resource = this.models.get(this.options.namespace, model);
    if (resource) this.endpointsListener?.(modelIdOf(resource));
  }

  /** Requests wait for it, or this replica scaled it up and the cache has not caught up yet. */
  private startingUp(model: Model): boolean {
    const key = objectKey(model);
    return (this.waiters.get(model.metadata.name)?.size ?? 0) > 0 || this.scaling.has(key) || (this.scaledAt.has(key) && this.scaledAt.get(key) === model.metadata.resourceVersion);
  }

  /** An unloaded Model is no longer "stopping" once its pods are gone. */
  private settleStopping(modelName: string): void {
    if (this.stopping.has(modelName) && (this.endpoints.get(modelName)?.size ?? 0) === 0) {
      const model = this.models.get(this.options.namespace, modelName);
      if (!model || effectiveReplicas(model.spec) === 0) this.stopping.delete(modelName);
    }
  }

  private notify(modelName: string): void {
    for (const waiter of [...(this.waiters.get(modelName) ?? [])]) waiter.check();
  }

  private scaleUp(model: Model): Promise<void> {
    const key = objectKey(model);
    let pending = this.scaling.get(key);
    // Scaled already; the cache has not seen it yet.
    if (!pending && this.scaledAt.has(key) && this.scaledAt.get(key) === model.metadata.resourceVersion) return Promise.resolve();
    if (!pending) {
      this.scaledAt.set(key, model.metadata.resourceVersion);
      const replicas = Math.max(1, model.spec.minReplicas ?? 0);
      this.options.logger.info({ model: modelIdOf(model), replicas }, "scaling the model up from zero");
      pending = this.options.client
        .mergePatch(MODELS, this.options.namespace, model.metadata.name, { spec: { replicas } }, { subresource: "scale", fieldManager: FIELD_MANAGER })
        .then(
          () => undefined,
          (error: unknown) => {
            this.scaledAt.delete(key);
            throw new ModelStartError(
              modelIdOf(model),
              isNotFound(error) ? `model ${modelIdOf(model)} was deleted` : `could not scale Model ${model.metadata.name} up: ${describeKubeError(error)}`,
            );
          },
        )
        .finally(() => this.scaling.delete(key));
      this.scaling.set(key, pending);
    }
    return pending;
  }

  private waitReady(modelId: string, modelName: string, signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let set = this.waiters.get(modelName);
      if (!set) this.waiters.set(modelName, (set = new Set()));
      const waiters = set;
      const done = () => {
        waiters.delete(waiter);
        if (waiters.size === 0) this.waiters.delete(modelName);
        signal.removeEventListener("abort", onAbort);
      };
      const onAbort = () => {
        done();
        reject(signal.reason);
      };
      const waiter: Waiter = {
        check: () => {
          const model = this.byId.get(modelId);
          if (!model || model.metadata.name !== modelName) {
            done();
            reject(new ModelStartError(modelId, `model ${modelId} was deleted`));
            return true;
          }
          if (this.readyEndpoints(modelId).length > 0) {
            done();
            resolve();
            return true;
          }
          const failure = this.failure(model);
          if (failure !== undefined) {
            done();
            reject(new ModelStartError(modelId, failure));
            return true;
          }
          if (effectiveReplicas(model.spec) === 0) {
            this.scaleUp(model).catch((error: unknown) => {
              done();
              reject(error);
            });
          }
          return false;
        },
      };
      waiters.add(waiter);
      signal.addEventListener("abort", onAbort, { once: true });
      waiter.check();
    });
  }

  private async setCurrent(modelId: string | null): Promise<void> {
    this.localCurrent = { id: modelId, at: Date.now() };
    const { client, namespace } = this.options;
    const data = { [STATE_KEY]: modelId ?? "" };
    try {
      if (this.state.get(namespace, this.stateName)) {
        await client.mergePatch(RESOURCES.configMaps, namespace, this.stateName, { data }, { fieldManager: FIELD_MANAGER });
      } else {
        const body: ConfigMap = {
          apiVersion: "v1",
          kind: "ConfigMap",
          metadata: { name: this.stateName, namespace, labels: { [LABELS.managedBy]: "corral-router" } },
          data,
        };
        await client.create<KubeObject>(RESOURCES.configMaps, namespace, body, FIELD_MANAGER).catch(async (error: unknown) => {
          // Another replica created it first: update it.
          if ((error as { code?: number }).code !== 409) throw error;
          await client.mergePatch(RESOURCES.configMaps, namespace, this.stateName, { data }, { fieldManager: FIELD_MANAGER });
        });
      }
    } catch (error) {
      this.options.logger.warn({ reason: describeKubeError(error) }, "could not record the current model for the other router replicas");
    }
  }
}

/** The endpoint of a ready, running, not terminating pod with an IP; undefined otherwise. */
export function podEndpoint(pod: Pod): Endpoint | undefined {
  if (pod.metadata.deletionTimestamp || !pod.status?.podIP) return undefined;
  if (!pod.status.conditions?.some((c) => c.type === "Ready" && c.status === "True")) return undefined;
  const container = pod.spec?.containers?.find((c) => c.name === RUNTIME_CONTAINER) ?? pod.spec?.containers?.[0];
  const port = container?.ports?.find((p) => p.name === RUNTIME_PORT_NAME)?.containerPort ?? container?.ports?.[0]?.containerPort ?? 8080;
  const ip = pod.status.podIP;
  return { id: pod.metadata.name, url: `http://${ip.includes(":") ? `[${ip}]` : ip}:${port}`, capacity: parallelOf(container) };
}

/** The runtime container's parallel sequences: its `--parallel <n>` (or `--parallel=<n>`) argument, else the runtime's default. */
function parallelOf(container: Container | undefined): number {
  const argv = [...stringsOf(container?.command), ...stringsOf(container?.args)];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = arg === "--parallel" ? argv[i + 1] : arg.startsWith("--parallel=") ? arg.slice("--parallel=".length) : undefined;
    const parallel = value === undefined ? NaN : Number(value);
    if (Number.isInteger(parallel) && parallel >= 1) return parallel;
  }
  return DEFAULT_PARALLEL;
}

function stringsOf(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((item): item is string => typeof item === "string") : [];
}
