import type { Logger } from "../common/logger.js";
import { describeKubeError, isConflict, isNotFound, type KubeClient } from "../common/kube/client.js";
import { LABELS, MODELS, type Model } from "../common/kube/model-resource.js";
import { objectKey, type Pod } from "../common/kube/types.js";
import { LoadHistory, autoscalePolicy, decide, type AutoscalePolicy, type Decision } from "./autoscale.js";
import type { EventRecorder } from "./events.js";
import type { OperatorMetrics } from "./metrics.js";
import { podRuntimeUrl, type Caches, type RuntimeProbe } from "./reconcile.js";
import { isPodReady } from "./status.js";

/**
 * The autoscaler loop: every interval it reads the load of each autoscaled Model's ready pods
 * (GET /info: busy sequences plus queued requests, so the figure is right whatever the number of
 * router replicas), decides with operator/autoscale.ts and writes spec.replicas through the Model's
 * scale subresource, as `kubectl scale` or an HPA would; the reconciler carries it to the
 * Deployment. It runs on the leader only. A write carries the resourceVersion it decided on, so a
 * decision made on a stale view (the router scaling from zero meanwhile) is refused, not applied.
 */

/** The field manager of the autoscaler's writes to spec.replicas (managedFields show who scaled). */
export const AUTOSCALER_FIELD_MANAGER = "corral-autoscaler";

export interface AutoscalerOptions {
  client: KubeClient;
  caches: Caches;
  events: EventRecorder;
  metrics: OperatorMetrics;
  logger: Logger;
  probe: RuntimeProbe;
  intervalMs: number;
  /** Pods read at once. */
  concurrency: number;
  /** The runtime's port where a pod does not name one. */
  runtimePort: number;
  now?: () => number;
}

/** What one pod reported. */
interface PodLoad {
  load: number;
  /** Every sequence busy and requests waiting. */
  full: boolean;
}

interface Tracked {
  uid: string;
  history: LoadHistory;
  /** None of the ready pods answered last time (reported once, until one does). */
  blind: boolean;
}

interface Target {
  model: Model;
  policy: AutoscalePolicy;
  current: number;
  ready: Pod[];
  starting: boolean;
}

export class Autoscaler {
  private readonly tracked = new Map<string, Tracked>();
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | undefined;
  private stopping: AbortController | undefined;

  constructor(private readonly options: AutoscalerOptions) {
    this.now = options.now ?? Date.now;
  }

  get enabled(): boolean {
    return this.options.intervalMs > 0;
  }

  start(): void {
    if (!this.enabled || this.stopping) return;
    const stopping = (this.stopping = new AbortController());
    const next = () => {
      this.timer = setTimeout(() => {
        this.ticking = this.tick(stopping.signal)
          .catch((error: unknown) => this.options.logger.warn({ err: (error as Error).message }, "autoscaler pass failed"))
          .finally(() => {
            this.ticking = undefined;
            if (!stopping.signal.aborted) next();
          });
      }, this.options.intervalMs);
      this.timer.unref();
    };
    next();
  }

  /** Stops the loop (the lead is lost or the operator stops) and forgets what it saw. */
  async stop(): Promise<void> {
    clearTimeout(this.timer);
    this.stopping?.abort();
    this.stopping = undefined;
    await this.ticking;
    for (const key of this.tracked.keys()) this.forgetMetrics(key);
    this.tracked.clear();
  }

  /** One pass over every autoscaled Model. */
  async tick(signal: AbortSignal = new AbortController().signal): Promise<void> {
    const targets = this.targets();
    const loads = await this.readLoads(
      targets.flatMap((t) => t.ready),
      signal,
    );
    if (signal.aborted) return;
    const at = this.now();
    await Promise.all(targets.map((target) => this.act(target, loads, at)));
  }

  /** Autoscaled Models with their pods; Models no longer autoscaled are forgotten. */
  private targets(): Target[] {
    const { caches } = this.options;
    const targets: Target[] = [];
    const seen = new Set<string>();
    for (const model of caches.models.list()) {
      const policy = autoscalePolicy(model.spec);
      if (!policy || model.metadata.deletionTimestamp) continue;
      seen.add(objectKey(model));
      const pods = caches.pods.list(model.metadata.namespace).filter((pod) => pod.metadata.labels?.[LABELS.model] === model.metadata.name && !pod.metadata.deletionTimestamp);
      const ready = pods.filter((pod) => isPodReady(pod) && pod.status?.podIP);
      const current = model.spec.replicas ?? 1;
      targets.push({ model, policy, current, ready, starting: ready.length < current });
    }
    for (const key of [...this.tracked.keys()]) {
      if (seen.has(key)) continue;
      this.tracked.delete(key);
      this.forgetMetrics(key);
    }
    return targets;
  }

  /** Each pod's load, by pod uid (absent: it did not answer). */
  private async readLoads(pods: Pod[], signal: AbortSignal): Promise<Map<string, PodLoad>> {
    const loads = new Map<string, PodLoad>();
    let next = 0;
    const worker = async () => {
      while (next < pods.length && !signal.aborted) {
        const pod = pods[next++];
        try {
          const info = await this.options.probe(podRuntimeUrl(pod, this.options.runtimePort), signal);
          if (typeof info?.load === "number") {
            loads.set(pod.metadata.uid ?? pod.metadata.name, { load: info.load, full: typeof info.parallel === "number" && info.load > info.parallel });
          }
          else this.options.metrics.autoscalerReadFailures.inc();
        } catch {
          this.options.metrics.autoscalerReadFailures.inc();
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.options.concurrency, pods.length) }, worker));
    return loads;
  }

  private async act(target: Target, loads: Map<string, PodLoad>, at: number): Promise<void> {
    const { model, policy, current, ready, starting } = target;
    const key = objectKey(model);
    let tracked = this.tracked.get(key);
    if (!tracked || tracked.uid !== model.metadata.uid) this.tracked.set(key, (tracked = { uid: model.metadata.uid ?? "", history: new LoadHistory(at), blind: false }));
    const answered = ready.map((pod) => loads.get(pod.metadata.uid ?? pod.metadata.name)).filter((load) => load !== undefined);
    if (ready.length > 0 && answered.length === 0) {
      // Unknown is not idle: a Model whose pods cannot be read keeps its replicas.
      if (!tracked.blind) {
        tracked.blind = true;
        this.options.events.record(
          model,
          "Warning",
          "LoadUnreadable",
          `the autoscaler could not read the load of the Model's pods (none of the ${ready.length} ready answered GET /info on the runtime port; a NetworkPolicy in the way?): replicas stay at ${current} until it can`,
        );
      }
      return;
    }
    tracked.blind = false;
    const load = ready.length ? answered.reduce((sum, pod) => sum + pod.load, 0) : undefined;
    const saturated = answered.length === ready.length && answered.length > 0 && answered.every((pod) => pod.full);
    const decision = decide(tracked.history, policy, current, { at, load, starting, saturated });
    const labels = { namespace: model.metadata.namespace!, model: model.metadata.name };
    this.options.metrics.autoscalerLoad.set(labels, decision.averageLoad);
    this.options.metrics.autoscalerDesiredReplicas.set(labels, decision.replicas);
    if (decision.replicas !== current) await this.scale(model, current, decision, policy);
  }

  private async scale(model: Model, current: number, decision: Decision, policy: AutoscalePolicy): Promise<void> {
    const { client, events, metrics, logger } = this.options;
    const { namespace, name, resourceVersion } = model.metadata;
    try {
      await client.mergePatch(MODELS, namespace, name, { metadata: { resourceVersion }, spec: { replicas: decision.replicas } }, { subresource: "scale", fieldManager: AUTOSCALER_FIELD_MANAGER });
    } catch (error) {
      // Changed meanwhile (the router scaled it from zero, a person scaled it): decide again next pass.
      if (isConflict(error) || isNotFound(error)) return;
      logger.warn({ model: objectKey(model), replicas: decision.replicas, err: describeKubeError(error) }, "autoscaler could not scale the Model");
      return;
    }
    const direction = decision.replicas === 0 ? "zero" : decision.replicas > current ? "up" : "down";
    metrics.autoscalerDecisions.inc({ namespace: namespace!, model: name, direction });
    const message = describeDecision(current, decision, policy);
    logger.info({ model: objectKey(model), from: current, to: decision.replicas, load: round(decision.averageLoad), reason: decision.reason }, "autoscaled");
    events.record(model, "Normal", "Autoscaled", message);
  }

  private forgetMetrics(key: string): void {
    const [namespace, model] = key.split("/");
    this.options.metrics.autoscalerLoad.remove({ namespace, model });
    this.options.metrics.autoscalerDesiredReplicas.remove({ namespace, model });
  }
}

/** The event's words: what changed and the figures that made it change. */
export function describeDecision(current: number, decision: Decision, policy: AutoscalePolicy): string {
  const seconds = (ms: number) => `${round(ms / 1000)} s`;
  const load = `load ${round(decision.averageLoad)} (busy sequences plus queued requests, average over ${seconds(policy.windowMs)}) for a target of ${policy.targetLoad} per replica`;
  switch (decision.reason) {
    case "idle":
      return `scaled to zero from ${current}: no request running or queued for ${seconds(policy.scaleToZeroMs)}; the router starts it again on the next request`;
    case "saturated":
      return `scaled up from ${current} to ${decision.replicas} replicas: every pod is full (all sequences busy, requests waiting; the routers hold the rest), ${load}`;
    case "bounds":
      return `scaled from ${current} to ${decision.replicas} replicas to stay within minReplicas ${policy.minReplicas} and maxReplicas ${policy.maxReplicas}`;
    default:
      return decision.replicas > current
        ? `scaled up from ${current} to ${decision.replicas} replicas: ${load}`
        : `scaled down from ${current} to ${decision.replicas} replicas: ${load}, lower for ${seconds(policy.scaleDownDelayMs)}`;
  }
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}
