import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import type { KubeConfig } from "@kubernetes/client-node";
import { createHttpServer, type CorralApp } from "../common/http.js";
import { createLogger, type Logger } from "../common/logger.js";
import { KubeClient, describeKubeError, loadKubeConfig, podNamespace } from "../common/kube/client.js";
import type { Informer } from "../common/kube/informer.js";
import { objectKey, type KubeObject } from "../common/kube/types.js";
import { MODEL_PHASES } from "../common/kube/model-resource.js";
import { healthApp } from "./app.js";
import { createCaches, enqueueModelKeys, informersOf, whenFirstListsDone } from "./informers.js";
import type { OperatorConfig } from "./config.js";
import { FIELD_MANAGER } from "./desired.js";
import { EventRecorder } from "./events.js";
import { LeaderElector } from "./leader.js";
import { createOperatorMetrics, type OperatorMetrics } from "./metrics.js";
import { WorkQueue } from "./queue.js";
import { Reconciler, defaultProbe, type Caches, type RuntimeProbe } from "./reconcile.js";
import { Autoscaler } from "./autoscaler.js";

export interface OperatorHandle {
  /** Base URL of /healthz, /readyz and /metrics. */
  url: string;
  port: number;
  identity: string;
  app: CorralApp;
  client: KubeClient;
  caches: Caches;
  queue: WorkQueue;
  metrics: OperatorMetrics;
  logger: Logger;
  /** True while this replica holds the Lease (always, without leader election) and acts. */
  isLeader(): boolean;
  /** True once every informer finished its first list. */
  synced(): boolean;
  /** Graceful stop: stop acting, let running reconciles finish, release the Lease, close. */
  close(): Promise<void>;
  /** Tests: stop like a killed process would — the Lease is not released. */
  abandon(): Promise<void>;
}

export interface RunOptions {
  logger?: Logger;
  /** The cluster to talk to (tests: the test control plane); default from config.kubeconfig / KUBECONFIG / in-cluster. */
  kubeConfig?: KubeConfig;
  /** How runtimes' /info is read, for starting pods' progress and the autoscaler (tests may replace it). */
  probe?: RuntimeProbe;
}

/** Wires the operator: informers -> work queue -> reconciler, behind leader election, with health endpoints. */
export async function run(config: OperatorConfig, options: RunOptions = {}): Promise<OperatorHandle> {
  const logger = options.logger ?? createLogger({ name: "corral-operator", level: config.logLevel });
  const metrics = createOperatorMetrics();
  const client = new KubeClient(options.kubeConfig ?? loadKubeConfig(config.kubeconfig), ({ method, code, seconds }) => {
    metrics.apiRequests.inc({ method, code: String(code) });
    metrics.apiRequestDuration.observe({ method }, seconds);
  });
  const identity = config.identity ?? `${process.env.POD_NAME ?? hostname()}_${randomUUID().slice(0, 8)}`;

  const caches = createCaches(client, config.namespaces, logger, metrics);
  const informers = informersOf(caches);
  const synced = () => informers.every((i) => i.synced());
  const events = new EventRecorder(client, FIELD_MANAGER, identity, logger.child({ component: "events" }));
  const reconciler = new Reconciler({
    client,
    caches,
    config,
    events,
    logger,
    probe: options.probe,
    onStatusWrite: () => metrics.statusWrites.inc(),
  });
  const autoscaler = new Autoscaler({
    client,
    caches,
    events,
    metrics,
    logger: logger.child({ component: "autoscaler" }),
    probe: options.probe ?? defaultProbe,
    intervalMs: config.autoscaleIntervalSeconds * 1000,
    concurrency: config.autoscaleConcurrency,
    runtimePort: config.runtimePort,
  });
  const stopping = new AbortController();
  const queue = createQueue(config, metrics, logger, (key) => reconciler.reconcile(key, stopping.signal));
  enqueueModelKeys(caches, queue);
  const workers = new LeaderGatedWorkers({ caches, queue, reconciler, autoscaler, metrics, logger, synced, stopping: stopping.signal, pauseBoundMs: config.shutdownSeconds * 1000 });

  for (const i of informers) i.start();
  whenFirstListsDone(informers, stopping.signal, logger, () => workers.maybeStart());
  const leaseNamespace = config.leaseNamespace ?? podNamespace() ?? client.contextNamespace;
  const elector = config.leaderElection ? createElector(config, client, leaseNamespace, identity, logger, workers) : undefined;
  if (elector) elector.start();
  else workers.startedLeading();
  const resync = startResync(config, workers);

  const health = { closing: false };
  const { app, port, url } = await serveHealth({ config, logger, metrics, health, informers, workers, elector, identity, queue, caches });
  logger.info(
    { port, identity, namespaces: config.namespaces.length ? config.namespaces : "all", leaderElection: config.leaderElection ? `${leaseNamespace}/${config.leaseName}` : "off" },
    "operator started",
  );

  const stop = (release: boolean) => {
    health.closing = true;
    return stopOperator({ release, config, logger, resync, elector, workers, stopping, queue, events, informers, app });
  };
  let stopped: Promise<void> | undefined;

  return {
    url,
    port,
    identity,
    app,
    client,
    caches,
    queue,
    metrics,
    logger,
    isLeader: () => workers.leading,
    synced,
    close: () => (stopped ??= stop(true)),
    abandon: () => (stopped ??= stop(false)),
  };
}

/** The HTTP side: /healthz, /readyz (not ready until the first lists complete, or while closing), /metrics, listening. */
async function serveHealth(parts: {
  config: OperatorConfig;
  logger: Logger;
  metrics: OperatorMetrics;
  health: { closing: boolean };
  informers: Informer<KubeObject>[];
  workers: LeaderGatedWorkers;
  elector: LeaderElector | undefined;
  identity: string;
  queue: WorkQueue;
  caches: Caches;
}): Promise<{ app: CorralApp; port: number; url: string }> {
  const { config, logger, metrics, health, informers, workers, elector, identity, queue, caches } = parts;
  const app = createHttpServer({ logger, bodyLimitBytes: 65_536 });
  await app.register(healthApp, {
    metrics,
    notReadyReason: () => notReadyReason(health.closing, informers),
    leader: () => ({ leading: workers.leading, identity, leader: elector ? (elector.leader ?? null) : identity }),
    refreshGauges: () => refreshGauges(metrics, queue, caches),
  });
  await app.listen({ host: config.host, port: config.port });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : config.port;
  const host = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host;
  return { app, port, url: `http://${host.includes(":") ? `[${host}]` : host}:${port}` };
}

/** The work queue, retrying with backoff, with each reconcile's outcome in the metrics and the log. */
function createQueue(config: OperatorConfig, metrics: OperatorMetrics, logger: Logger, reconcile: (key: string) => ReturnType<Reconciler["reconcile"]>): WorkQueue {
  return new WorkQueue({
    workers: config.workers,
    process: reconcile,
    initialRetryMs: 200,
    maxRetryMs: config.retryMaxSeconds * 1000,
    onResult: (key, outcome) => {
      metrics.reconcileDuration.observe(outcome.seconds);
      if (outcome.error) {
        metrics.reconciles.inc({ result: "error" });
        const error = outcome.error as Error;
        const cause = error.cause === undefined ? undefined : describeKubeError(error.cause);
        logger.warn({ model: key, err: error.message, cause, retryInMs: outcome.retryInMs }, "reconcile failed; retrying");
      } else {
        metrics.reconciles.inc({ result: outcome.requeueAfterMs === undefined ? "success" : "requeue" });
      }
    },
  });
}

/** Workers run only on the leader, and only once the caches are filled. */
class LeaderGatedWorkers {
  leading = false;

  constructor(
    private readonly parts: {
      caches: Caches;
      queue: WorkQueue;
      reconciler: Reconciler;
      autoscaler: Autoscaler;
      metrics: OperatorMetrics;
      logger: Logger;
      synced: () => boolean;
      stopping: AbortSignal;
      /** How long losing the lead waits for running reconciles. */
      pauseBoundMs: number;
    },
  ) {}

  enqueueAll(): void {
    for (const model of this.parts.caches.models.list()) this.parts.queue.add(objectKey(model));
  }

  maybeStart(): void {
    const { queue, autoscaler, synced, stopping, logger, caches } = this.parts;
    if (this.leading && synced() && !queue.isRunning && !stopping.aborted) {
      logger.info({ models: caches.models.size, autoscaling: autoscaler.enabled }, "reconciling");
      this.enqueueAll();
      queue.start();
      autoscaler.start();
    }
  }

  readonly startedLeading = (): void => {
    this.leading = true;
    this.parts.metrics.leader.set(1);
    this.maybeStart();
  };

  readonly stoppedLeading = async (): Promise<void> => {
    this.leading = false;
    this.parts.metrics.leader.set(0);
    await this.parts.autoscaler.stop();
    // Runs in progress finish (bounded: an API call that hangs must not keep the Lease forever).
    await Promise.race([this.parts.queue.pause(), new Promise((resolve) => setTimeout(resolve, this.parts.pauseBoundMs).unref())]);
    this.parts.reconciler.forget();
  };
}

/** The Lease life cycle: the workers start when this replica takes the lead and pause when it loses it. */
function createElector(config: OperatorConfig, client: KubeClient, namespace: string, identity: string, logger: Logger, workers: LeaderGatedWorkers): LeaderElector {
  return new LeaderElector({
    client,
    namespace,
    name: config.leaseName,
    identity,
    leaseDurationMs: config.leaseDurationSeconds * 1000,
    renewDeadlineMs: config.renewDeadlineSeconds * 1000,
    retryPeriodMs: config.retryPeriodSeconds * 1000,
    logger: logger.child({ component: "leader-election" }),
    onStartedLeading: workers.startedLeading,
    onStoppedLeading: workers.stoppedLeading,
    onNewLeader: (leader) => logger.info({ leader: leader ?? null }, "leader observed"),
  });
}

/** Periodic resync: every Model is enqueued again, so drift nobody was told about is converged. */
function startResync(config: OperatorConfig, workers: LeaderGatedWorkers): NodeJS.Timeout | undefined {
  if (config.resyncSeconds <= 0) return undefined;
  const resync = setInterval(() => {
    if (workers.leading) workers.enqueueAll();
  }, config.resyncSeconds * 1000);
  resync.unref();
  return resync;
}

/** Why /readyz answers 503, or undefined when ready: the operator is not ready until its first lists complete. */
function notReadyReason(closing: boolean, informers: Informer<KubeObject>[]): string | undefined {
  if (closing) return "shutting down";
  const waiting = informers.filter((i) => !i.synced()).map((i) => i.resource.plural);
  return waiting.length ? `waiting for the first list of ${waiting.join(", ")}` : undefined;
}

/** The gauges read at scrape time: queue depth and Models by phase. */
function refreshGauges(metrics: OperatorMetrics, queue: WorkQueue, caches: Caches): void {
  metrics.queueDepth.set(queue.depth);
  const counts = new Map<string, number>(MODEL_PHASES.map((phase) => [phase, 0]));
  for (const model of caches.models.list()) {
    const phase = model.status?.phase ?? "Pending";
    counts.set(phase, (counts.get(phase) ?? 0) + 1);
  }
  for (const [phase, count] of counts) metrics.models.set({ phase }, count);
}

/**
 * The close sequence: stop acting (and release the Lease unless abandoning, as a killed process
 * would), let running reconciles finish within the bound, flush events, stop the informers, close.
 */
async function stopOperator(parts: {
  release: boolean;
  config: OperatorConfig;
  logger: Logger;
  resync: NodeJS.Timeout | undefined;
  elector: LeaderElector | undefined;
  workers: LeaderGatedWorkers;
  stopping: AbortController;
  queue: WorkQueue;
  events: EventRecorder;
  informers: Informer<KubeObject>[];
  app: CorralApp;
}): Promise<void> {
  const { release, config, logger, resync, elector, workers, stopping, queue, events, informers, app } = parts;
  if (resync) clearInterval(resync);
  if (elector) await elector.stop({ release });
  else await workers.stoppedLeading();
  stopping.abort();
  await queue.shutdown(config.shutdownSeconds * 1000);
  if (release) await Promise.race([events.flush(), new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
  await Promise.all(informers.map((i) => i.stop()));
  await app.close();
  logger.info("operator stopped");
}
