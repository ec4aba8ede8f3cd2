import { AppsV1Api, CoreV1Api, EventsV1Api, type V1ConfigMap, type V1OwnerReference } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { type FakeKube, startFakeKube, waitFor } from "./index.js";
import { apiFailure } from "./test-helpers.js";

let fk: FakeKube;
let core: CoreV1Api;
let apps: AppsV1Api;

beforeAll(async () => {
  fk = await startFakeKube({ deploymentController: true, namespaces: ["gc", "dc"] });
  core = fk.kubeConfig.makeApiClient(CoreV1Api);
  apps = fk.kubeConfig.makeApiClient(AppsV1Api);
});

afterAll(async () => {
  await fk.close();
});

function ownedBy(owner: V1ConfigMap, extra: Partial<V1OwnerReference> = {}): V1OwnerReference {
  return { apiVersion: "v1", kind: "ConfigMap", name: owner.metadata!.name!, uid: owner.metadata!.uid!, ...extra };
}

async function cm(name: string, owners: V1OwnerReference[] = [], finalizers?: string[], namespace = "gc"): Promise<V1ConfigMap> {
  return core.createNamespacedConfigMap({
    namespace,
    body: { metadata: { name, ownerReferences: owners, ...(finalizers ? { finalizers } : {}) } },
  });
}

const exists = (name: string, ns = "gc") => fk.get("configmaps", ns, name) !== undefined;

describe("garbage collection", () => {
  it("deletes dependents in the background, transitively", async () => {
    const a = await cm("a");
    const b = await cm("b", [ownedBy(a, { controller: true, blockOwnerDeletion: true })]);
    await cm("c", [ownedBy(b)]);
    await core.deleteNamespacedConfigMap({ namespace: "gc", name: "a" });
    expect(exists("a")).toBe(false);
    await waitFor(() => !exists("b") && !exists("c"), { message: "dependents were not collected" });
  });

  it("keeps dependents that still have a live owner, dropping the dangling reference", async () => {
    const o1 = await cm("o1");
    const o2 = await cm("o2");
    await cm("shared", [ownedBy(o1), ownedBy(o2)]);
    await core.deleteNamespacedConfigMap({ namespace: "gc", name: "o1" });
    await waitFor(() => fk.get("configmaps", "gc", "shared")?.metadata.ownerReferences?.length === 1);
    expect(fk.get("configmaps", "gc", "shared")?.metadata.ownerReferences[0].name).toBe("o2");
  });

  it("orphans dependents with propagationPolicy=Orphan", async () => {
    const owner = await cm("orphaner");
    await cm("orphan", [ownedBy(owner)]);
    await core.deleteNamespacedConfigMap({ namespace: "gc", name: "orphaner", propagationPolicy: "Orphan" });
    await waitFor(() => !exists("orphaner"));
    expect(fk.get("configmaps", "gc", "orphan")?.metadata.ownerReferences).toBeUndefined();
  });

  it("holds a foreground-deleted owner until its blocking dependents are gone", async () => {
    const owner = await cm("fg");
    await cm("fg-dep", [ownedBy(owner, { blockOwnerDeletion: true })], ["corral.dev/hold"]);
    await core.deleteNamespacedConfigMap({ namespace: "gc", name: "fg", propagationPolicy: "Foreground" });
    const terminating = await core.readNamespacedConfigMap({ namespace: "gc", name: "fg" });
    expect(terminating.metadata?.finalizers).toEqual(["foregroundDeletion"]);
    await waitFor(() => fk.get("configmaps", "gc", "fg-dep")?.metadata.deletionTimestamp !== undefined);
    expect(exists("fg")).toBe(true);
    await core.patchNamespacedConfigMap({
      namespace: "gc",
      name: "fg-dep",
      body: [{ op: "remove", path: "/metadata/finalizers" }],
    });
    await waitFor(() => !exists("fg") && !exists("fg-dep"));
  });

  it("deletes an object whose owner does not exist", async () => {
    await cm("dangling", [{ apiVersion: "v1", kind: "ConfigMap", name: "ghost", uid: "00000000-0000-0000-0000-000000000000" }]);
    await waitFor(() => !exists("dangling"));
  });

  it("cascades from a Deployment to the objects it owns", async () => {
    const d = await apps.createNamespacedDeployment({
      namespace: "gc",
      body: {
        metadata: { name: "owner" },
        spec: { replicas: 0, selector: { matchLabels: { app: "o" } }, template: { metadata: { labels: { app: "o" } }, spec: { containers: [{ name: "c", image: "i" }] } } },
      },
    });
    await core.createNamespacedService({
      namespace: "gc",
      body: {
        metadata: { name: "owner", ownerReferences: [{ apiVersion: "apps/v1", kind: "Deployment", name: "owner", uid: d.metadata!.uid!, controller: true }] },
        spec: { selector: { app: "o" }, ports: [{ port: 80 }] },
      },
    });
    const svc = await core.readNamespacedService({ namespace: "gc", name: "owner" });
    expect(svc.spec?.clusterIP).toMatch(/^10\.96\./);
    expect(svc.spec?.ports?.[0]).toMatchObject({ port: 80, protocol: "TCP", targetPort: 80 });
    await apps.deleteNamespacedDeployment({ namespace: "gc", name: "owner" });
    await waitFor(() => fk.get("services", "gc", "owner") === undefined);
  });
});

describe("namespaces", () => {
  it("terminates a namespace: deletes its content, refuses new content, then goes", async () => {
    await core.createNamespace({ body: { metadata: { name: "doomed" } } });
    const ns = await core.readNamespace({ name: "doomed" });
    expect(ns.metadata?.labels?.["kubernetes.io/metadata.name"]).toBe("doomed");
    expect(ns.status?.phase).toBe("Active");
    await cm("plain", [], undefined, "doomed");
    await cm("held", [], ["corral.dev/hold"], "doomed");
    await core.deleteNamespace({ name: "doomed" });
    const terminating = await core.readNamespace({ name: "doomed" });
    expect(terminating.status?.phase).toBe("Terminating");
    const refused = await apiFailure(() => core.createNamespacedConfigMap({ namespace: "doomed", body: { metadata: { name: "late" } } }));
    expect(refused.code).toBe(403);
    expect(refused.status.message).toBe('configmaps "late" is forbidden: unable to create new content in namespace doomed because it is being terminated');
    expect(refused.status.details?.causes).toEqual([
      { reason: "NamespaceTerminating", message: "namespace doomed is being terminated", field: "metadata.namespace" },
    ]);
    await waitFor(() => !exists("plain", "doomed"));
    expect(exists("held", "doomed")).toBe(true);
    await core.patchNamespacedConfigMap({ namespace: "doomed", name: "held", body: [{ op: "remove", path: "/metadata/finalizers" }] });
    await waitFor(() => fk.get("namespaces", undefined, "doomed") === undefined);
  });
});

describe("deployment controller", () => {
  const spec = (image: string, replicas: number) => ({
    replicas,
    selector: { matchLabels: { app: "llm" } },
    template: { metadata: { labels: { app: "llm" } }, spec: { containers: [{ name: "runtime", image }] } },
  });
  const pods = () => fk.list("pods", "dc").filter((p) => !p.metadata.deletionTimestamp);

  it("creates pods owned by the deployment and reports status", async () => {
    const d = await apps.createNamespacedDeployment({ namespace: "dc", body: { metadata: { name: "llm" }, spec: spec("rt:1", 2) } });
    await waitFor(() => pods().length === 2);
    for (const p of pods()) {
      expect(p.metadata.labels).toMatchObject({ app: "llm", "pod-template-hash": expect.any(String) });
      expect(p.metadata.ownerReferences).toEqual([
        { apiVersion: "apps/v1", kind: "Deployment", name: "llm", uid: d.metadata!.uid, controller: true, blockOwnerDeletion: true },
      ]);
      expect(p.metadata.name).toMatch(new RegExp(`^llm-${p.metadata.labels["pod-template-hash"]}-[a-z0-9]{5}$`));
      expect(p.status.podIP).toBeUndefined();
    }
    const status = await waitFor(async () => {
      const cur = await apps.readNamespacedDeploymentStatus({ namespace: "dc", name: "llm" });
      return cur.status?.observedGeneration === 1 && cur.status.replicas === 2 ? cur.status : undefined;
    });
    expect(status).toMatchObject({ replicas: 2, updatedReplicas: 2, unavailableReplicas: 2 });
    expect(status.readyReplicas).toBeUndefined();
    expect(status.conditions?.find((c) => c.type === "Available")?.status).toBe("False");
  });

  it("counts pods the test marks ready", async () => {
    for (const [i, p] of pods().entries()) fk.setPodReady("dc", p.metadata.name, true, { podIP: `10.244.0.${i + 10}` });
    const status = await waitFor(async () => {
      const cur = await apps.readNamespacedDeployment({ namespace: "dc", name: "llm" });
      return cur.status?.readyReplicas === 2 ? cur.status : undefined;
    });
    expect(status).toMatchObject({ replicas: 2, updatedReplicas: 2, readyReplicas: 2, availableReplicas: 2 });
    expect(status.unavailableReplicas).toBeUndefined();
    expect(status.conditions?.map((c) => [c.type, c.status, c.reason])).toEqual([
      ["Available", "True", "MinimumReplicasAvailable"],
      ["Progressing", "True", "NewReplicaSetAvailable"],
    ]);
  });

  it("scales and rolls out template changes", async () => {
    await apps.patchNamespacedDeploymentScale({ namespace: "dc", name: "llm", body: [{ op: "replace", path: "/spec/replicas", value: 1 }] });
    await waitFor(() => pods().length === 1);
    const oldHash = pods()[0]!.metadata.labels["pod-template-hash"];
    const d = await apps.readNamespacedDeployment({ namespace: "dc", name: "llm" });
    d.spec!.template.spec!.containers[0]!.image = "rt:2";
    await apps.replaceNamespacedDeployment({ namespace: "dc", name: "llm", body: d });
    await waitFor(() => pods().length === 1 && pods()[0]!.metadata.labels["pod-template-hash"] !== oldHash);
    const status = await waitFor(async () => {
      const cur = await apps.readNamespacedDeployment({ namespace: "dc", name: "llm" });
      return cur.status?.observedGeneration === cur.metadata?.generation && cur.status?.updatedReplicas === 1 ? cur.status : undefined;
    });
    expect(status.readyReplicas).toBeUndefined();
    expect(pods()[0]!.spec.containers[0].image).toBe("rt:2");
  });

  it("lets the garbage collector remove the pods of a deleted deployment", async () => {
    await apps.deleteNamespacedDeployment({ namespace: "dc", name: "llm" });
    await waitFor(() => fk.list("pods", "dc").length === 0);
  });
});

describe("events", () => {
  it("stores events.k8s.io/v1 and core/v1 Events in one place", async () => {
    const events = fk.kubeConfig.makeApiClient(EventsV1Api);
    const now = new Date();
    await events.createNamespacedEvent({
      namespace: "gc",
      body: {
        metadata: { name: "model-ready.1" },
        eventTime: now,
        reason: "Ready",
        note: "model is ready",
        type: "Normal",
        action: "Reconcile",
        reportingController: "corral.dev/operator",
        reportingInstance: "operator-0",
        regarding: { apiVersion: "corral.dev/v1alpha1", kind: "Model", name: "m", namespace: "gc" },
      },
    });
    const list = await core.listNamespacedEvent({ namespace: "gc", fieldSelector: "involvedObject.name=m,reason=Ready" });
    expect(list.items).toHaveLength(1);
    expect(list.items[0]).toMatchObject({ message: "model is ready", reportingComponent: "corral.dev/operator", involvedObject: { kind: "Model", name: "m" } });
  });
});
