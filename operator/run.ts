import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import type { KubeConfig } from "@kubernetes/client-node";
import { createHttpServer, type CorralApp } from "../common/http.js";
import { createLogger, type Logger } from "../common/logger.js";
import { KubeClient, RESOURCES, describeKubeError, errorCode, loadKubeConfig, podNamespace } from "../common/kube/client.js";
import { Informer } from "../common/kube/informer.js";
import { controllerOf, objectKey, type Deployment, type KubeObject, type PersistentVolumeClaim, type Pod, type Service } from "../common/kube/types.js";
import { LABELS, MODELS, MODEL_KIND, MODEL_PHASES, type Model } from "../common/kube/model-resource.js";
import { healthApp } from "./app.js";
import type { OperatorConfig } from "./config.js";
import { FIELD_MANAGER } from "./desired.js";
import { EventRecorder } from "./events.js";
import { LeaderElector } from "./leader.js";
import { createOperatorMetrics, type OperatorMetrics } from "./metrics.js";
import { WorkQueue } from "./queue.js";
import { Reconciler, type Caches, type RuntimeProbe } from "./reconcile.js";

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
  /** How starting runtimes' /info is read (tests may replace it). */
  probe?: RuntimeProbe;
}

/** Wires the operator: informers -> work queue -> reconciler, behind leader election, with health endpoints. */
export async function run(config: OperatorConfig, options: RunOptions = {}): Promise<OperatorHandle> {
  const logger = options.logger ?? createLogger({ name: "corral-operator", level: config.logLevel });
  const metrics = createOperatorMetrics();
  const kubeConfig = options.kubeConfig ?? loadKubeConfig(config.kubeconfig);
  const client = new KubeClient(kubeConfig, ({ method, code, seconds }) => {
    metrics.apiRequests.inc({ method, code: String(code) });
    metrics.apiRequestDuration.observe({ method }, seconds);
  });
  const identity = config.identity ?? `${process.env.POD_NAME ?? hostname()}_${randomUUID().slice(0, 8)}`;
  const namespaces = config.namespaces;

  // Informers: Models, and the kinds of children (all of them in the namespaces, so a name taken
  // by someone else's object is seen before anything is applied over it); pods only the models'.
  let crdHintLogged = false;
  const informer = <T extends KubeObject>(resource: typeof MODELS, extra: { labelSelector?: string } = {}) =>
    new Informer<T>({
      client,
      resource,
      namespaces,
      logger,
      ...extra,
      onFailure: (stage, error) => {
        metrics.informerFailures.inc({ resource: resource.plural, stage });
        if (resource === MODELS && errorCode(error) === 404 && !crdHintLogged) {
          crdHintLogged = true;
          logger.error("the Model CRD is not installed: kubectl apply -f crds/models.corral.dev.yaml (retrying)");
        }
      },
    });
  const caches: Caches = {
    models: informer<Model>(MODELS),
    deployments: informer<Deployment>(RESOURCES.deployments),
    services: informer<Service>(RESOURCES.services),
    pvcs: informer<PersistentVolumeClaim>(RESOURCES.persistentVolumeClaims),
    pods: informer<Pod>(RESOURCES.pods, { labelSelector: LABELS.model }),
  };
  const allInformers = Object.values(caches) as Informer<KubeObject>[];
  const synced = () => allInformers.every((i) => i.synced());

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
  const stopping = new AbortController();
  const queue = new WorkQueue({
    workers: config.workers,
    process: (key) => reconciler.reconcile(key, stopping.signal),
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

  // Events only enqueue keys; the reconciler reads the current state from the caches.
  caches.models.on((_type, model) => queue.add(objectKey(model)));
  const enqueueOwner = (_type: string, object: KubeObject) => {
    const namespace = object.metadata.namespace;
    if (!namespace) return;
    const owner = controllerOf(object);
    if (owner?.kind === MODEL_KIND) queue.add(`${namespace}/${owner.name}`);
    else if (object.metadata.labels?.[LABELS.model]) queue.add(`${namespace}/${object.metadata.labels[LABELS.model]}`);
    else if (caches.models.get(namespace, object.metadata.name)) queue.add(`${namespace}/${object.metadata.name}`); // a name conflict that may be resolved
  };
  caches.deployments.on(enqueueOwner);
  caches.services.on(enqueueOwner);
  caches.pvcs.on(enqueueOwner);
  caches.pods.on(enqueueOwner);

  // Workers run only on the leader, and only once the caches are filled.
  let leading = false;
  const enqueueAll = () => {
    for (const model of caches.models.list()) queue.add(objectKey(model));
  };
  const maybeStartWorkers = () => {
    if (leading && synced() && !queue.isRunning && !stopping.signal.aborted) {
      logger.info({ models: caches.models.size }, "reconciling");
      enqueueAll();
      queue.start();
    }
  };
  const onStartedLeading = () => {
    leading = true;
    metrics.leader.set(1);
    maybeStartWorkers();
  };
  const onStoppedLeading = async () => {
    leading = false;
    metrics.leader.set(0);
    // Runs in progress finish (bounded: an API call that hangs must not keep the Lease forever).
    await Promise.race([queue.pause(), new Promise((resolve) => setTimeout(resolve, config.shutdownSeconds * 1000).unref())]);
    reconciler.forget();
  };

  for (const i of allInformers) i.start();
  void (async () => {
    for (const i of allInformers) {
      while (!i.synced() && !stopping.signal.aborted) {
        try {
          await i.waitForSync(30_000);
        } catch {
          logger.warn({ resource: i.resource.plural }, "still waiting for the first list");
        }
      }
    }
    if (!stopping.signal.aborted) {
      logger.info("caches synced");
      maybeStartWorkers();
    }
  })();

  const leaseNamespace = config.leaseNamespace ?? podNamespace() ?? client.contextNamespace;
  const elector = config.leaderElection
    ? new LeaderElector({
        client,
        namespace: leaseNamespace,
        name: config.leaseName,
        identity,
        leaseDurationMs: config.leaseDurationSeconds * 1000,
        renewDeadlineMs: config.renewDeadlineSeconds * 1000,
        retryPeriodMs: config.retryPeriodSeconds * 1000,
        logger: logger.child({ component: "leader-election" }),
        onStartedLeading,
        onStoppedLeading,
        onNewLeader: (leader) => logger.info({ leader: leader ?? null }, "leader observed"),
      })
    : undefined;
  if (elector) elector.start();
  else onStartedLeading();

  const resync =
    config.resyncSeconds > 0
      ? setInterval(() => {
          if (leading) enqueueAll();
        }, config.resyncSeconds * 1000)
      : undefined;
  resync?.unref();

  let closing = false;
  const app = createHttpServer({ logger, bodyLimitBytes: 65_536 });
  await app.register(healthApp, {
    metrics,
    notReadyReason: () => {
      if (closing) return "shutting down";
      const waiting = allInformers.filter((i) => !i.synced()).map((i) => i.resource.plural);
      return waiting.length ? `waiting for the first list of ${waiting.join(", ")}` : undefined;
    },
    leader: () => ({ leading, identity, leader: elector ? (elector.leader ?? null) : identity }),
    refreshGauges: () => {
      metrics.queueDepth.set(queue.depth);
      const counts = new Map<string, number>(MODEL_PHASES.map((phase) => [phase, 0]));
      for (const model of caches.models.list()) {
        const phase = model.status?.phase ?? "Pending";
        counts.set(phase, (counts.get(phase) ?? 0) + 1);
      }
      for (const [phase, count] of counts) metrics.models.set({ phase }, count);
    },
  });
  await app.listen({ host: config.host, port: config.port });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : config.port;
  const host = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host;
  logger.info(
    { port, identity, namespaces: namespaces.length ? namespaces : "all", leaderElection: config.leaderElection ? `${leaseNamespace}/${config.leaseName}` : "off" },
    "operator started",
  );

  const stop = async (release: boolean) => {
    closing = true;
    if (resync) clearInterval(resync);
    if (elector) await elector.stop({ release });
    else await onStoppedLeading();
    stopping.abort();
    await queue.shutdown(config.shutdownSeconds * 1000);
    if (release) await Promise.race([events.flush(), new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
    await Promise.all(allInformers.map((i) => i.stop()));
    await app.close();
    logger.info("operator stopped");
  };
  let stopped: Promise<void> | undefined;

  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    port,
    identity,
    app,
    client,
    caches,
    queue,
    metrics,
    logger,
    isLeader: () => leading,
    synced,
    close: () => (stopped ??= stop(true)),
    abandon: () => (stopped ??= stop(false)),
  };
}
