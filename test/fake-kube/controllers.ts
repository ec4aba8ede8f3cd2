// The controllers a typical operator test relies on, reduced to what they do to the API:
// garbage collection through owner references, namespace deletion, CRD establishment and
// cleanup, and (optional) a ReplicaSet-free Deployment controller.

import type { ApiServer } from "./apiserver.js";
import { randomSuffix } from "./apiserver.js";
import { nowRfc3339 } from "./managed.js";
import { type ResourceType, apiVersionOf, crdTypes } from "./registry.js";
import { deepEqual, isPlainObject } from "./schema.js";
import type { Obj, StoreEvent, StoredObject } from "./store.js";

const CRD_KEY = "apiextensions.k8s.io/customresourcedefinitions";
const CRD_FINALIZER = "customresourcecleanup.apiextensions.k8s.io";
const MANAGER = "kube-controller-manager";
const FAKE_CA = "-----BEGIN CERTIFICATE-----\nZmFrZS1rdWJlIGRvZXMgbm90IHNlcnZlIFRMUw==\n-----END CERTIFICATE-----\n";

export interface ControllerOptions {
  deploymentController: boolean;
  /** Delay before a new CRD is established (its resources answer 404 until then). */
  crdEstablishDelayMs: number;
  log: (msg: string) => void;
}

export class Controllers {
  private readonly tasks = new Map<string, () => void>();
  private scheduled = false;
  private stopped = false;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly api: ApiServer,
    private readonly opts: ControllerOptions,
  ) {
    this.unsubscribe = api.store.subscribe((e) => this.onEvent(e));
  }

  stop(): void {
    this.stopped = true;
    this.unsubscribe();
    this.tasks.clear();
  }

  /** Runs queued work now (tests rarely need this: work runs on the next macrotask). */
  flush(): void {
    let guard = 0;
    while (this.tasks.size > 0 && guard++ < 1000) {
      const [key, fn] = this.tasks.entries().next().value as [string, () => void];
      this.tasks.delete(key);
      try {
        fn();
      } catch (e) {
        this.opts.log(`controller task ${key} failed: ${(e as Error).message}`);
      }
    }
  }

  private enqueue(key: string, fn: () => void): void {
    if (this.stopped) return;
    this.tasks.delete(key);
    this.tasks.set(key, fn);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        if (!this.stopped) this.flush();
      });
    }
  }

  private storageType(storageKey: string): ResourceType | undefined {
    const types = this.api.registry.forStorageKey(storageKey);
    return types.find((t) => apiVersionOf(t) === t.storageApiVersion) ?? types[0];
  }

  private onEvent(e: StoreEvent): void {
    const meta = e.obj.metadata as Obj;
    if (e.storageKey === CRD_KEY) this.enqueue(`crd/${meta.name}`, () => this.syncCrd(meta.name));
    if (e.storageKey === "/namespaces" && e.type === "ADDED") {
      this.enqueue(`ns-defaults/${meta.name}`, () => this.namespaceDefaults(meta.name));
    }

    if (e.type === "DELETED") {
      this.enqueue(`gc/dependents/${meta.uid}`, () => this.collectDependents(meta.uid, meta.namespace));
      const crdName = this.api.registry.forStorageKey(e.storageKey)[0]?.custom?.crdName;
      if (crdName && this.api.store.get(CRD_KEY, undefined, crdName)?.obj.metadata.deletionTimestamp) {
        this.enqueue(`crd/${crdName}`, () => this.syncCrd(crdName));
      }
      if (meta.namespace) {
        const ns = this.api.store.get("/namespaces", undefined, meta.namespace);
        if (ns?.obj.metadata.deletionTimestamp) this.enqueue(`ns/${meta.namespace}`, () => this.syncNamespace(meta.namespace));
      }
      const owner = this.instanceOwner(e.obj);
      if (owner) this.enqueue(`owner/${owner}`, () => this.syncDeletingOwner(owner));
    } else {
      if (meta.deletionTimestamp) {
        const fin = (meta.finalizers ?? []) as string[];
        if (fin.includes("foregroundDeletion") || fin.includes("orphan")) {
          this.enqueue(`owner/${meta.uid}`, () => this.syncDeletingOwner(meta.uid));
        }
        if (e.storageKey === "/namespaces") this.enqueue(`ns/${meta.name}`, () => this.syncNamespace(meta.name));
      }
      if (Array.isArray(meta.ownerReferences) && meta.ownerReferences.length > 0) {
        this.enqueue(`gc/dangling/${meta.uid}`, () => this.checkDangling(e.storageKey, meta.namespace, meta.name));
      }
    }

    if (this.opts.deploymentController) {
      if (e.storageKey === "apps/deployments") {
        this.enqueue(`deploy/${meta.namespace}/${meta.name}`, () => this.syncDeployment(meta.namespace, meta.name));
      } else if (e.storageKey === "/pods") {
        const ref = controllerRef(e.obj);
        if (ref?.kind === "Deployment") {
          this.enqueue(`deploy/${meta.namespace}/${ref.name}`, () => this.syncDeployment(meta.namespace, ref.name));
        }
      }
    }
  }

  /** The uid of a foreground-deleting owner that waits for this dependent, if any. */
  private instanceOwner(obj: Obj): string | undefined {
    for (const ref of (obj.metadata?.ownerReferences ?? []) as Obj[]) {
      const owner = this.api.store.byUid(ref.uid);
      if (owner?.stored.obj.metadata.deletionTimestamp) return ref.uid as string;
    }
    return undefined;
  }

  private deleteStored(storageKey: string, stored: StoredObject, policy = "Background"): void {
    const rt = this.storageType(storageKey);
    if (!rt || stored.obj.metadata.deletionTimestamp) return;
    this.api.deleteObject(rt, stored, policy);
  }

  /** All objects whose ownerReferences name `uid` (in the owner's namespace when it has one). */
  private dependents(uid: string, namespace: string | undefined): { storageKey: string; stored: StoredObject }[] {
    return this.api.store
      .dependentsOf(uid)
      .filter((d) => namespace === undefined || d.stored.obj.metadata?.namespace === namespace);
  }

  private ownerExists(ref: Obj, dependentNamespace: string | undefined): boolean {
    const found = this.api.store.byUid(ref.uid);
    if (!found) return false;
    const ns = found.stored.obj.metadata.namespace as string | undefined;
    return ns === undefined || ns === dependentNamespace;
  }

  private removeOwnerRefs(storageKey: string, stored: StoredObject, drop: (ref: Obj) => boolean): void {
    const rt = this.storageType(storageKey);
    if (!rt) return;
    const obj = this.api.present(rt, stored.obj);
    const refs = ((obj.metadata.ownerReferences ?? []) as Obj[]).filter((r) => !drop(r));
    if (refs.length > 0) obj.metadata.ownerReferences = refs;
    else delete obj.metadata.ownerReferences;
    this.api.updateAs(rt, obj, "kube-controller-manager");
  }

  /** Background cascade after an owner is gone. */
  private collectDependents(uid: string, ownerNamespace: string | undefined): void {
    for (const d of this.dependents(uid, ownerNamespace)) {
      const ns = d.stored.obj.metadata.namespace as string | undefined;
      const refs = (d.stored.obj.metadata.ownerReferences ?? []) as Obj[];
      const others = refs.filter((r) => r.uid !== uid && this.ownerExists(r, ns));
      if (others.length > 0) this.removeOwnerRefs(d.storageKey, d.stored, (r) => !this.ownerExists(r, ns));
      else this.deleteStored(d.storageKey, d.stored);
    }
  }

  /** An object whose owners are all gone is deleted; dangling references are dropped. */
  private checkDangling(storageKey: string, namespace: string | undefined, name: string): void {
    const stored = this.api.store.get(storageKey, namespace, name);
    if (!stored) return;
    const refs = (stored.obj.metadata.ownerReferences ?? []) as Obj[];
    if (refs.length === 0) return;
    const alive = refs.filter((r) => this.ownerExists(r, namespace));
    if (alive.length === refs.length) return;
    if (alive.length === 0) this.deleteStored(storageKey, stored);
    else this.removeOwnerRefs(storageKey, stored, (r) => !this.ownerExists(r, namespace));
  }

  /** Foreground and orphan deletion of an owner. */
  private syncDeletingOwner(uid: string): void {
    const found = this.api.store.byUid(uid);
    if (!found) return;
    const { storageKey, stored } = found;
    const meta = stored.obj.metadata as Obj;
    if (!meta.deletionTimestamp) return;
    const fin = (meta.finalizers ?? []) as string[];
    const ns = meta.namespace as string | undefined;
    const rt = this.storageType(storageKey);
    if (!rt) return;
    if (fin.includes("orphan")) {
      for (const d of this.dependents(uid, ns)) this.removeOwnerRefs(d.storageKey, d.stored, (r) => r.uid === uid);
      this.removeFinalizer(rt, storageKey, ns, meta.name, "orphan");
      return;
    }
    if (fin.includes("foregroundDeletion")) {
      let blocking = 0;
      for (const d of this.dependents(uid, ns)) {
        const ref = ((d.stored.obj.metadata.ownerReferences ?? []) as Obj[]).find((r) => r.uid === uid);
        if (ref?.blockOwnerDeletion === true) blocking++;
        this.deleteStored(d.storageKey, d.stored, "Foreground");
      }
      if (blocking === 0) this.removeFinalizer(rt, storageKey, ns, meta.name, "foregroundDeletion");
    }
  }

  private removeFinalizer(rt: ResourceType, storageKey: string, ns: string | undefined, name: string, finalizer: string): void {
    const stored = this.api.store.get(storageKey, ns, name);
    if (!stored) return;
    const obj = this.api.present(rt, stored.obj);
    obj.metadata.finalizers = ((obj.metadata.finalizers ?? []) as string[]).filter((f) => f !== finalizer);
    if (obj.metadata.finalizers.length === 0) delete obj.metadata.finalizers;
    this.api.updateAs(rt, obj, MANAGER);
  }

  // -------------------------------------------------------------------------
  // namespaces

  /** What the service account and root CA publisher controllers create in every namespace. */
  private namespaceDefaults(name: string): void {
    const ns = this.api.store.get("/namespaces", undefined, name);
    if (!ns || ns.obj.metadata.deletionTimestamp) return;
    const sa = this.api.registry.find("", "v1", "serviceaccounts")!;
    const cm = this.api.registry.find("", "v1", "configmaps")!;
    if (!this.api.store.get("/serviceaccounts", name, "default")) {
      this.api.createAs(sa, { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: "default", namespace: name } }, MANAGER);
    }
    if (!this.api.store.get("/configmaps", name, "kube-root-ca.crt")) {
      this.api.createAs(
        cm,
        {
          apiVersion: "v1",
          kind: "ConfigMap",
          metadata: { name: "kube-root-ca.crt", namespace: name, annotations: { "kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters." } },
          data: { "ca.crt": FAKE_CA },
        },
        MANAGER,
      );
    }
  }

  private syncNamespace(name: string): void {
    const ns = this.api.store.get("/namespaces", undefined, name);
    if (!ns || !ns.obj.metadata.deletionTimestamp) return;
    let remaining = 0;
    for (const key of this.api.store.storageKeys()) {
      if (key === "/namespaces") continue;
      for (const s of this.api.store.list(key, name)) {
        this.deleteStored(key, s);
        if (this.api.store.get(key, name, s.obj.metadata.name)) remaining++;
      }
    }
    if (remaining > 0) return;
    const fin = (ns.obj.metadata.finalizers ?? []) as string[];
    if (fin.length > 0) return;
    this.api.store.remove("/namespaces", undefined, name);
  }

  // -------------------------------------------------------------------------
  // CRDs

  private syncCrd(name: string): void {
    const stored = this.api.store.get(CRD_KEY, undefined, name);
    if (!stored) {
      this.api.registry.removeCrd(name);
      this.api.forgetCrd(name);
      return;
    }
    const crd = stored.obj;
    const crdRt = this.storageType(CRD_KEY)!;
    if (crd.metadata.deletionTimestamp) {
      const types = this.api.registry.all().filter((t) => t.custom?.crdName === name);
      let remaining = 0;
      const storageKey = types[0]?.storageKey;
      if (storageKey) {
        for (const s of this.api.store.list(storageKey)) {
          this.deleteStored(storageKey, s);
          if (this.api.store.get(storageKey, s.obj.metadata.namespace, s.obj.metadata.name)) remaining++;
        }
      }
      const status = this.api.present(crdRt, crd);
      const conds = ((status.status?.conditions ?? []) as Obj[]).filter((c) => c.type !== "Terminating");
      const terminating = {
        type: "Terminating",
        status: "True",
        lastTransitionTime: nowRfc3339(),
        reason: remaining > 0 ? "InstanceDeletionInProgress" : "InstanceDeletionCompleted",
        message: remaining > 0 ? "CustomResource deletion is in progress" : `removed all instances`,
      };
      const prev = ((status.status?.conditions ?? []) as Obj[]).find((c) => c.type === "Terminating");
      if (!prev || prev.reason !== terminating.reason) {
        status.status = { ...(status.status ?? {}), conditions: [...conds, terminating] };
        this.api.updateAs(crdRt, status, "kube-apiserver", "status");
      }
      if (remaining === 0) this.removeFinalizer(crdRt, CRD_KEY, undefined, name, CRD_FINALIZER);
      return;
    }
    const conditions = (crd.status?.conditions ?? []) as Obj[];
    const established = conditions.some((c) => c.type === "Established" && c.status === "True");
    if (established) {
      // spec changes (schemas, versions) apply to the next request
      this.api.registry.setCrdTypes(name, crdTypes(crd));
      return;
    }
    if (this.opts.crdEstablishDelayMs > 0 && !this.establishing.has(name)) {
      this.establishing.add(name);
      setTimeout(() => this.enqueue(`crd/${name}`, () => this.establishCrd(name)), this.opts.crdEstablishDelayMs);
      return;
    }
    if (this.opts.crdEstablishDelayMs === 0) this.establishCrd(name);
  }

  private readonly establishing = new Set<string>();

  private establishCrd(name: string): void {
    this.establishing.delete(name);
    const stored = this.api.store.get(CRD_KEY, undefined, name);
    if (!stored || stored.obj.metadata.deletionTimestamp) return;
    const crd = stored.obj;
    const crdRt = this.storageType(CRD_KEY)!;
    this.api.registry.setCrdTypes(name, crdTypes(crd));
    const now = nowRfc3339();
    const names = crd.spec.names as Obj;
    const obj = this.api.present(crdRt, crd);
    obj.status = {
      ...(obj.status ?? {}),
      conditions: [
        { type: "NamesAccepted", status: "True", lastTransitionTime: now, reason: "NoConflicts", message: "no conflicts found" },
        { type: "Established", status: "True", lastTransitionTime: now, reason: "InitialNamesAccepted", message: "the initial names have been accepted" },
      ],
      acceptedNames: {
        plural: names.plural,
        singular: names.singular ?? String(names.kind).toLowerCase(),
        ...(names.shortNames ? { shortNames: names.shortNames } : {}),
        kind: names.kind,
        listKind: names.listKind ?? `${names.kind}List`,
        ...(names.categories ? { categories: names.categories } : {}),
      },
    };
    this.api.markCrdEstablished(name);
    this.api.updateAs(crdRt, obj, "kube-apiserver", "status");
  }

  // -------------------------------------------------------------------------
  // Deployments (no ReplicaSets: the Deployment owns its Pods directly)

  private syncDeployment(namespace: string, name: string): void {
    const drt = this.api.registry.find("apps", "v1", "deployments")!;
    const prt = this.api.registry.find("", "v1", "pods")!;
    const stored = this.api.store.get("apps/deployments", namespace, name);
    if (!stored || stored.obj.metadata.deletionTimestamp) return;
    const d = stored.obj;
    const uid = d.metadata.uid as string;
    const hash = templateHash(d.spec?.template);
    const desired = typeof d.spec?.replicas === "number" ? d.spec.replicas : 1;
    const owned = () =>
      this.api.store
        .list("/pods", namespace)
        .filter((s) => controllerRef(s.obj)?.uid === uid && !s.obj.metadata.deletionTimestamp);

    for (const s of owned()) {
      if (s.obj.metadata.labels?.["pod-template-hash"] !== hash) this.api.deleteObject(prt, s, "Background");
    }
    let current = owned();
    if (current.length > desired) {
      const ranked = [...current].sort((a, b) => {
        const ra = podReady(a.obj) ? 1 : 0;
        const rb = podReady(b.obj) ? 1 : 0;
        if (ra !== rb) return ra - rb;
        return String(b.obj.metadata.creationTimestamp).localeCompare(String(a.obj.metadata.creationTimestamp));
      });
      for (const s of ranked.slice(0, current.length - desired)) this.api.deleteObject(prt, s, "Background");
    }
    for (let i = current.length; i < desired; i++) {
      const template = structuredClone(d.spec?.template ?? {}) as Obj;
      const pod: Obj = {
        apiVersion: "v1",
        kind: "Pod",
        metadata: {
          name: `${name}-${hash}-${randomSuffix()}`,
          namespace,
          labels: { ...(template.metadata?.labels ?? {}), "pod-template-hash": hash },
          ...(template.metadata?.annotations ? { annotations: template.metadata.annotations } : {}),
          ownerReferences: [
            { apiVersion: "apps/v1", kind: "Deployment", name, uid, controller: true, blockOwnerDeletion: true },
          ],
        },
        spec: template.spec ?? {},
      };
      try {
        this.api.createAs(prt, pod, MANAGER);
      } catch (e) {
        this.opts.log(`deployment ${namespace}/${name}: creating a pod failed: ${(e as Error).message}`);
        break;
      }
    }
    current = owned();
    const all = this.api.store.list("/pods", namespace).filter((s) => controllerRef(s.obj)?.uid === uid);
    const updated = current.filter((s) => s.obj.metadata.labels?.["pod-template-hash"] === hash);
    const ready = current.filter((s) => podReady(s.obj)).length;
    const available = ready;
    const maxUnavailable = computeMaxUnavailable(d, desired);
    const rsName = `${name}-${hash}`;
    const progressed = updated.length === desired && available >= desired && current.length === desired;
    const prevStatus = (d.status ?? {}) as Obj;
    const prevConds = (prevStatus.conditions ?? []) as Obj[];
    const cond = (type: string, status: string, reason: string, message: string): Obj => {
      const now = nowRfc3339();
      const prev = prevConds.find((c) => c.type === type);
      const same = prev && prev.status === status && prev.reason === reason && prev.message === message;
      return {
        type,
        status,
        lastUpdateTime: same ? prev.lastUpdateTime : now,
        lastTransitionTime: prev && prev.status === status ? prev.lastTransitionTime : now,
        reason,
        message,
      };
    };
    const availableCond =
      available >= desired - maxUnavailable
        ? cond("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
        : cond("Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.");
    const progressingCond = progressed
      ? cond("Progressing", "True", "NewReplicaSetAvailable", `ReplicaSet "${rsName}" has successfully progressed.`)
      : cond("Progressing", "True", "ReplicaSetUpdated", `ReplicaSet "${rsName}" is progressing.`);
    const status: Obj = { observedGeneration: d.metadata.generation };
    if (all.length > 0) status.replicas = all.length;
    if (updated.length > 0) status.updatedReplicas = updated.length;
    if (ready > 0) status.readyReplicas = ready;
    if (available > 0) status.availableReplicas = available;
    const unavailable = Math.max(0, all.length - available, desired - available);
    if (unavailable > 0) status.unavailableReplicas = unavailable;
    status.conditions = [availableCond, progressingCond];
    if (deepEqual(status, prevStatus)) return;
    const obj = this.api.present(drt, d);
    obj.status = status;
    this.api.updateAs(drt, obj, MANAGER, "status");
  }
}

export function controllerRef(obj: Obj): Obj | undefined {
  return ((obj.metadata?.ownerReferences ?? []) as Obj[]).find((r) => r.controller === true);
}

export function podReady(pod: Obj): boolean {
  return ((pod.status?.conditions ?? []) as Obj[]).some((c) => c.type === "Ready" && c.status === "True");
}

function computeMaxUnavailable(d: Obj, desired: number): number {
  const strategy = d.spec?.strategy as Obj | undefined;
  if (strategy?.type !== "RollingUpdate" || desired === 0) return 0;
  const v = strategy.rollingUpdate?.maxUnavailable ?? "25%";
  let n: number;
  if (typeof v === "string" && v.endsWith("%")) n = Math.floor((desired * Number(v.slice(0, -1))) / 100);
  else n = Number(v);
  return Math.min(Math.max(0, n), desired);
}

function stableJson(v: unknown): string {
  if (isPlainObject(v)) {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${stableJson(v[k])}`)
      .join(",")}}`;
  }
  if (Array.isArray(v)) return `[${v.map(stableJson).join(",")}]`;
  return JSON.stringify(v) ?? "null";
}

/** pod-template-hash: FNV-1a of the template, encoded like rand.SafeEncodeString. */
export function templateHash(template: unknown): string {
  let h = 0x811c9dc5;
  for (const ch of Buffer.from(stableJson(template))) {
    h ^= ch;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  const alphabet = "bcdfghjklmnpqrstvwxz2456789";
  return [...String(h)].map((c) => alphabet[c.charCodeAt(0) % alphabet.length]).join("");
}
