import type { Logger } from "../common/logger.js";
import { KubeClient, RESOURCES, errorCode } from "../common/kube/client.js";
import { Informer } from "../common/kube/informer.js";
import { controllerOf, objectKey, type Deployment, type KubeObject, type PersistentVolumeClaim, type Pod, type Service } from "../common/kube/types.js";
import { LABELS, MODELS, MODEL_KIND, type Model } from "../common/kube/model-resource.js";
import type { OperatorMetrics } from "./metrics.js";
import type { WorkQueue } from "./queue.js";
import type { Caches } from "./reconcile.js";

/**
 * The informers the reconciler reads from: Models, and the kinds of children (all of them in the
 * namespaces, so a name taken by someone else's object is seen before anything is applied over
 * it); pods only the models'. Nothing is started here.
 */
export function createCaches(client: KubeClient, namespaces: string[], logger: Logger, metrics: OperatorMetrics): Caches {
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
  return {
    models: informer<Model>(MODELS),
    deployments: informer<Deployment>(RESOURCES.deployments),
    services: informer<Service>(RESOURCES.services),
    pvcs: informer<PersistentVolumeClaim>(RESOURCES.persistentVolumeClaims),
    pods: informer<Pod>(RESOURCES.pods, { labelSelector: LABELS.model }),
  };
}

/** Every informer of the caches, for starting, stopping and sync checks. */
export function informersOf(caches: Caches): Informer<KubeObject>[] {
  return Object.values(caches) as Informer<KubeObject>[];
}

/**
 * Events only enqueue the key of the Model they concern; the reconciler reads the current state
 * from the caches (level-triggered: the event type is never looked at).
 */
export function enqueueModelKeys(caches: Caches, queue: WorkQueue): void {
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
}

/** Waits (in the background) for every informer's first list, then calls `onSynced` unless stopped first. */
export function whenFirstListsDone(informers: Informer<KubeObject>[], signal: AbortSignal, logger: Logger, onSynced: () => void): void {
  void (async () => {
    for (const i of informers) {
      while (!i.synced() && !signal.aborted) {
        try {
          await i.waitForSync(30_000);
        } catch {
          logger.warn({ resource: i.resource.plural }, "still waiting for the first list");
        }
      }
    }
    if (!signal.aborted) {
      logger.info("caches synced");
      onSynced();
    }
  })();
}
