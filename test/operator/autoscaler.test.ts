// The autoscaler against the real API server: the operator reads each ready pod's load (here a
// scripted /info), writes spec.replicas through the Model's scale subresource, the reconciler
// carries it to the Deployment, and each change is an event and a metric. The same loop with
// real runtimes and a real load is test/kube/autoscale.test.ts.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RESOURCES, isConflict } from "../../common/kube/client.js";
import type { Deployment, KubeObject, Pod } from "../../common/kube/types.js";
import { MODELS, type Model } from "../../common/kube/model-resource.js";
import type { OperatorHandle } from "../../operator/run.js";
import type { RuntimeInfo } from "../../operator/status.js";
import { AUTOSCALER_FIELD_MANAGER } from "../../operator/autoscaler.js";
import { E2E_CLUSTER, NO_CLUSTER, createModel, getModel, markPodsReady, startCluster, startOperator, waitFor, type TestCluster } from "./harness.js";

let cluster: TestCluster;
const operators: OperatorHandle[] = [];

beforeAll(async () => {
  if (NO_CLUSTER) return;
  cluster = await startCluster();
});
afterAll(async () => {
  await Promise.all(operators.map((op) => op.close()));
  await cluster?.close();
});

type Event = KubeObject & { reason: string; message: string; type: string; involvedObject: { name: string; kind: string } };
const eventsFor = async (ns: string, name: string) =>
  (await cluster.client.list<Event>(RESOURCES.events, ns)).items.filter((e) => e.involvedObject.kind === "Model" && e.involvedObject.name === name);
const replicasOf = async (ns: string, name: string) => (await getModel(cluster, ns, name))?.spec.replicas;
const deploymentReplicas = async (ns: string, name: string) => (await cluster.client.get<Deployment & { spec: { replicas?: number } }>(RESOURCES.deployments, ns, name))?.spec.replicas;

/** Plays the kubelet until stopped: every pod of the Model is marked Running and Ready. */
function keepPodsReady(ns: string, model: string): () => Promise<void> {
  let running = true;
  const loop = (async () => {
    while (running) {
      await markPodsReady(cluster, ns, model).catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  return async () => {
    running = false;
    await loop;
  };
}

// Pod status is written by the tests here; on a whole cluster the kubelets own it.
describe.skipIf(NO_CLUSTER || E2E_CLUSTER)("the autoscaler", () => {
  it("scales out on load, back in after the delay, to zero after the idle time, with an event and a metric for each", async () => {
    const ns = await cluster.namespace("autoscale");
    // Each pod reports this much load (busy sequences plus queued requests).
    let perPod = 0;
    const reads: string[] = [];
    const op = await startOperator(cluster, ns, { autoscaleIntervalSeconds: 0.2 }, async (url) => {
      reads.push(url);
      return { state: "ready", load: perPod } satisfies RuntimeInfo;
    });
    operators.push(op);
    await createModel(cluster, ns, "chat", {
      replicas: 1,
      maxReplicas: 3,
      autoscaling: { targetLoad: 2, windowSeconds: 1, scaleDownDelaySeconds: 2, scaleToZeroSeconds: 3 },
    });
    const stopKubelet = keepPodsReady(ns, "chat");
    try {
      await waitFor(async () => (await deploymentReplicas(ns, "chat")) === 1, { message: "no Deployment at 1 replica" });

      // 5 on one pod at a target of 2: three replicas; then 5 on each of three: still three (the maximum).
      perPod = 5;
      await waitFor(async () => (await replicasOf(ns, "chat")) === 3, { timeoutMs: 10_000, message: "did not scale out to 3" });
      await waitFor(async () => (await deploymentReplicas(ns, "chat")) === 3, { message: "the Deployment did not follow to 3" });
      const model = (await getModel(cluster, ns, "chat"))!;
      // The write went through the scale subresource under the autoscaler's own name.
      const managedFields = (model.metadata as { managedFields?: { manager: string; subresource?: string }[] }).managedFields;
      expect(managedFields?.some((f) => f.manager === AUTOSCALER_FIELD_MANAGER && f.subresource === "scale")).toBe(true);
      await waitFor(async () => (await eventsFor(ns, "chat")).some((e) => e.reason === "Autoscaled" && /^scaled up from 1 to [23] replicas: load \d/.test(e.message)), {
        message: "no scale-up event",
      });

      // All three serving 5 each (15 in all) for a window; then 1 per pod, 3 in all: two replicas,
      // once the delay has seen nothing higher.
      await waitFor(async () => (await getModel(cluster, ns, "chat"))?.status?.readyReplicas === 3, { message: "three pods not ready" });
      await new Promise((resolve) => setTimeout(resolve, 1200));
      perPod = 1;
      const lowered = Date.now();
      await waitFor(async () => (await replicasOf(ns, "chat")) === 2, { timeoutMs: 15_000, message: "did not scale in to 2" });
      expect(Date.now() - lowered).toBeGreaterThanOrEqual(2000);

      // No load: one replica after the delay, zero after 3 s idle.
      perPod = 0;
      await waitFor(async () => (await replicasOf(ns, "chat")) === 0, { timeoutMs: 20_000, message: "did not scale to zero" });
      await waitFor(async () => (await deploymentReplicas(ns, "chat")) === 0, { message: "the Deployment did not follow to 0" });
      const events = (await eventsFor(ns, "chat")).filter((e) => e.reason === "Autoscaled").map((e) => e.message);
      expect(events.some((m) => m.startsWith("scaled down from 3 to 2 replicas"))).toBe(true);
      expect(events.some((m) => m.startsWith("scaled to zero from 1: no request running or queued for 3 s"))).toBe(true);
      const metrics = await (await fetch(`${op.url}/metrics`)).text();
      expect(metrics).toMatch(new RegExp(`corral_operator_autoscaler_decisions_total\\{namespace="${ns}",model="chat",direction="up"\\} 1`));
      expect(metrics).toMatch(new RegExp(`corral_operator_autoscaler_decisions_total\\{namespace="${ns}",model="chat",direction="zero"\\} 1`));
      expect(metrics).toMatch(new RegExp(`corral_operator_autoscaler_desired_replicas\\{namespace="${ns}",model="chat"\\} 0`));
      expect(reads.every((url) => url === "http://127.0.0.1:8080")).toBe(true);

      // At zero it waits for the router (or a person) to start it: nothing moves it back.
      await new Promise((resolve) => setTimeout(resolve, 1000));
      expect(await replicasOf(ns, "chat")).toBe(0);
    } finally {
      await stopKubelet();
    }
  });

  it("leaves Models without maxReplicas alone, and keeps the replicas of a Model whose pods it cannot read", async () => {
    const ns = await cluster.namespace("autoscale");
    let unreadable = true;
    const op = await startOperator(cluster, ns, { autoscaleIntervalSeconds: 0.2 }, async () => {
      if (unreadable) throw new Error("connect ECONNREFUSED");
      return { state: "ready", load: 0 } satisfies RuntimeInfo;
    });
    operators.push(op);
    await createModel(cluster, ns, "manual", { replicas: 2 });
    await createModel(cluster, ns, "blind", { replicas: 2, maxReplicas: 2, autoscaling: { windowSeconds: 1, scaleDownDelaySeconds: 0, scaleToZeroSeconds: 1 } });
    const stopKubelet = keepPodsReady(ns, "blind");
    const stopKubelet2 = keepPodsReady(ns, "manual");
    try {
      await waitFor(async () => (await eventsFor(ns, "blind")).some((e) => e.type === "Warning" && e.reason === "LoadUnreadable"), { timeoutMs: 10_000, message: "no LoadUnreadable event" });
      const warning = (await eventsFor(ns, "blind")).find((e) => e.reason === "LoadUnreadable")!;
      // Reported as soon as one pod is ready and unreadable.
      expect(warning.message).toMatch(
        /^the autoscaler could not read the load of the Model's pods \(none of the [12] ready answered GET \/info on the runtime port; a NetworkPolicy in the way\?\): replicas stay at 2 until it can$/,
      );
      // Unknown is not idle: a second later it still has its two replicas.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      expect(await replicasOf(ns, "blind")).toBe(2);
      await waitFor(async () => (await op.metrics.autoscalerReadFailures.get()).values[0]?.value > 0, { message: "no read failures counted" });
      // Readable and idle: it goes to one, then zero; the manual Model keeps its two.
      unreadable = false;
      await waitFor(async () => (await replicasOf(ns, "blind")) === 0, { timeoutMs: 15_000, message: "did not scale to zero once readable" });
      expect(await replicasOf(ns, "manual")).toBe(2);
      const pods = (await cluster.client.list<Pod>(RESOURCES.pods, ns, { labelSelector: "corral.dev/model=manual" })).items;
      expect(pods.length).toBeGreaterThan(0);
    } finally {
      await stopKubelet();
      await stopKubelet2();
    }
  });

  it("a decision made on a stale view is refused by the API server, not applied", async () => {
    const ns = await cluster.namespace("autoscale");
    await createModel(cluster, ns, "stale", { replicas: 1, maxReplicas: 3 });
    const model = (await getModel(cluster, ns, "stale")) as Model;
    // Someone scales it first (the router from zero, a person with kubectl scale)...
    await cluster.client.mergePatch(MODELS, ns, "stale", { spec: { replicas: 2 } }, { subresource: "scale" });
    // ...then a write carrying the resourceVersion the autoscaler decided on conflicts.
    const write = cluster.client.mergePatch(MODELS, ns, "stale", { metadata: { resourceVersion: model.metadata.resourceVersion }, spec: { replicas: 3 } }, { subresource: "scale" });
    await expect(write.then(() => "applied", (error: unknown) => (isConflict(error) ? "conflict" : String(error)))).resolves.toBe("conflict");
    expect(await replicasOf(ns, "stale")).toBe(2);
  });
});
