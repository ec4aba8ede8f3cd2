// Two operator replicas: one leader acts, the standby does nothing until the leader is gone or
// cannot renew, and never do both act at once.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RESOURCES } from "../../common/kube/client.js";
import type { Lease } from "../../common/kube/types.js";
import type { OperatorHandle } from "../../operator/run.js";
import { E2E_CLUSTER, NO_CLUSTER, T, createModel, startCluster, startOperator, waitFor, type TestCluster } from "./harness.js";

let cluster: TestCluster;
beforeAll(async () => {
  if (!NO_CLUSTER) cluster = await startCluster();
});
afterAll(async () => cluster?.close());

/** Samples both replicas every few ms; fails the test if both ever act at once. */
function watchLeaders(a: OperatorHandle, b: OperatorHandle) {
  let both = 0;
  const timer = setInterval(() => {
    if (a.isLeader() && b.isLeader()) both++;
  }, 5);
  return { stop: () => clearInterval(timer), both: () => both };
}

const reconciles = async (op: OperatorHandle) => (await op.metrics.reconciles.get()).values.reduce((sum, v) => sum + v.value, 0);
const lease = (ns: string) => cluster.client.get<Lease>(RESOURCES.leases, ns, "corral-operator");

describe.skipIf(NO_CLUSTER)("leader election", () => {
  it("one leader acts; the standby takes over when it is gone, within the lease duration", async () => {
    const ns = await cluster.namespace();
    const a = await startOperator(cluster, ns, { identity: "replica-a" });
    await waitFor(() => a.isLeader(), { timeoutMs: 5000 * T, message: "a never led" });
    const b = await startOperator(cluster, ns, { identity: "replica-b" });
    const sampler = watchLeaders(a, b);
    try {
      await createModel(cluster, ns, "one");
      await waitFor(() => cluster.client.get(RESOURCES.deployments, ns, "one"), { timeoutMs: 10_000 * T });
      await waitFor(() => b.synced(), { timeoutMs: 10_000 * T });
      // The standby watches (warm caches) and does nothing.
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(b.isLeader()).toBe(false);
      expect(await reconciles(b)).toBe(0);
      expect((await lease(ns))?.spec?.holderIdentity).toBe("replica-a");
      expect((await (await fetch(`${b.url}/healthz`)).json()) as unknown).toMatchObject({ leading: false, leader: "replica-a" });

      // The leader dies without releasing the Lease (a crash, a lost node).
      const died = Date.now();
      await a.abandon();
      await waitFor(() => b.isLeader(), { timeoutMs: 10_000 * T, message: "b never took over" });
      const takeover = Date.now() - died;
      // leaseDurationSeconds 2 in the test config: the standby waits that long after the last renewal it saw.
      // (plus a retry period and some slack for a busy 2-core machine)
      expect(takeover).toBeLessThan(2000 + 250 + 1200);
      expect(takeover).toBeGreaterThan(1000);
      expect((await lease(ns))?.spec).toMatchObject({ holderIdentity: "replica-b", leaseTransitions: 1 });

      await createModel(cluster, ns, "two");
      await waitFor(() => cluster.client.get(RESOURCES.deployments, ns, "two"), { timeoutMs: 10_000 * T, message: "the new leader does not act" });
      expect(sampler.both()).toBe(0);
    } finally {
      sampler.stop();
      await a.close();
      await b.close();
    }
  });

  it("a leader that stops gracefully releases the Lease: the standby takes over at once", async () => {
    const ns = await cluster.namespace();
    const a = await startOperator(cluster, ns, { identity: "graceful-a", leaseDurationSeconds: 10, renewDeadlineSeconds: 5, retryPeriodSeconds: 0.2 });
    await waitFor(() => a.isLeader(), { timeoutMs: 5000 * T });
    const b = await startOperator(cluster, ns, { identity: "graceful-b", leaseDurationSeconds: 10, renewDeadlineSeconds: 5, retryPeriodSeconds: 0.2 });
    const sampler = watchLeaders(a, b);
    try {
      await new Promise((resolve) => setTimeout(resolve, 300));
      const stopped = Date.now();
      await a.close();
      await waitFor(() => b.isLeader(), { timeoutMs: 5000 * T, message: "b never took over" });
      // Far less than the 10 s lease: the Lease was released.
      expect(Date.now() - stopped).toBeLessThan(2000);
      expect(sampler.both()).toBe(0);
    } finally {
      sampler.stop();
      await a.close();
      await b.close();
    }
  });

  it.skipIf(E2E_CLUSTER)("a leader that cannot renew stops acting before anyone else may start", async () => {
    const ns = await cluster.namespace();
    // Both replicas reach the API server through the fault proxy.
    const proxy = cluster.proxy!;
    const a = await startOperator(cluster, ns, { identity: "cut-a" }, undefined, proxy.kubeConfig);
    await waitFor(() => a.isLeader(), { timeoutMs: 5000 });
    const b = await startOperator(cluster, ns, { identity: "cut-b" }, undefined, proxy.kubeConfig);
    const sampler = watchLeaders(a, b);
    try {
      // Every Lease write fails: nobody can renew or take over.
      proxy.injectFault({ verb: "update", resource: "leases.coordination.k8s.io", namespace: ns, status: 500, times: 100_000 });
      const cut = Date.now();
      await waitFor(() => !a.isLeader(), { timeoutMs: 5000, message: "a kept acting without a lease" });
      // renewDeadlineSeconds 1.5 (+ one retry period)
      expect(Date.now() - cut).toBeLessThan(1500 + 250 + 800);
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(a.isLeader() || b.isLeader()).toBe(false);
      proxy.clearFaults();
      await waitFor(() => a.isLeader() || b.isLeader(), { timeoutMs: 5000, message: "nobody leads once the API is back" });
      expect(sampler.both()).toBe(0);
    } finally {
      proxy.clearFaults();
      sampler.stop();
      await a.close();
      await b.close();
    }
  });
});
