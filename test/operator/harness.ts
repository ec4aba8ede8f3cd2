// The cluster the operator tests run against: the cluster KUBECONFIG names when CORRAL_E2E=1
// (`npm run test:e2e`: kind, a cloud), else the test run's real control plane (test/kube:
// kube-apiserver and kube-controller-manager, no kubelet), else none and the suites skip. Every
// test gets its own namespace.

import { randomBytes } from "node:crypto";
import { KubeConfig } from "@kubernetes/client-node";
import { pino } from "pino";
import { KubeClient, RESOURCES, isNotFound } from "../../common/kube/client.js";
import { MODELS, MODEL_API_VERSION, MODEL_KIND, type Model, type ModelSpec } from "../../common/kube/model-resource.js";
import { type OperatorConfig } from "../../operator/config.js";
import { run, type OperatorHandle } from "../../operator/run.js";
import type { RuntimeProbe } from "../../operator/reconcile.js";
import { installCrd, realKube, type RealKube } from "../kube/cluster.js";
import { startFaultProxy, type FaultProxy } from "../kube/fault-proxy.js";
import { markPodsReady as markReady } from "../kube/kubelet-status.js";
import { waitFor } from "../helpers/wait.js";
import { testOperatorConfig } from "../helpers/config.js";

export { waitFor };

const WANTS_E2E = process.env.CORRAL_E2E === "1";
/** True when the suites run against a whole cluster (CORRAL_E2E=1 with KUBECONFIG set): kubelets run the pods. */
export const E2E_CLUSTER = WANTS_E2E && Boolean(process.env.KUBECONFIG);
const controlPlane: RealKube | undefined = E2E_CLUSTER ? undefined : realKube();
/** Why the suites skip (no cluster to run against), or undefined when they run. */
export const CLUSTER_SKIP_REASON: string | undefined =
  E2E_CLUSTER || controlPlane ? undefined : "no cluster: set CORRAL_KUBE_ASSETS (a test control plane) or CORRAL_E2E=1 with KUBECONFIG";
/** Skip the suites: describe.skipIf(NO_CLUSTER). */
export const NO_CLUSTER = CLUSTER_SKIP_REASON !== undefined;
/** Timeouts grow on a whole cluster (image pulls, schedulers, garbage collection). */
export const T = E2E_CLUSTER ? 8 : 1;

export interface TestCluster {
  kubeConfig: KubeConfig;
  client: KubeClient;
  /**
   * A fault-injecting proxy in front of the API server (test/kube/fault-proxy.ts), for clients
   * given `proxy.kubeConfig`; undefined on an e2e cluster (the tests that need it skip there).
   */
  proxy: FaultProxy | undefined;
  /** A fresh namespace for one test (deleted by close()). */
  namespace(prefix?: string): Promise<string>;
  /**
   * Resolves once kube-controller-manager's garbage collector deletes the dependents of a deleted
   * Model. It discovers new resource types every 30 s: until then, on a control plane whose CRD
   * was just installed, a Model's children outlive it. The first call starts a probe (a Model
   * and a dependent, in a namespace of their own); call it early to overlap the wait.
   */
  modelsGarbageCollected(): Promise<void>;
  close(): Promise<void>;
}

export const testLogger = () => pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

export async function startCluster(): Promise<TestCluster> {
  if (CLUSTER_SKIP_REASON) throw new Error(CLUSTER_SKIP_REASON);
  let kubeConfig: KubeConfig;
  if (controlPlane) kubeConfig = controlPlane.kubeConfig;
  else {
    kubeConfig = new KubeConfig();
    kubeConfig.loadFromDefault();
  }
  const client = new KubeClient(kubeConfig);
  const created: string[] = [];
  await installCrd(client);
  const proxy = controlPlane ? await startFaultProxy(controlPlane) : undefined;
  let gc: Promise<void> | undefined;
  return {
    kubeConfig,
    client,
    proxy,
    async namespace(prefix = "corral-test") {
      const name = `${prefix}-${randomBytes(3).toString("hex")}`;
      await client.create(RESOURCES.namespaces, undefined, { apiVersion: "v1", kind: "Namespace", metadata: { name, labels: { "corral.dev/test": "true" } } });
      created.push(name);
      return name;
    },
    modelsGarbageCollected() {
      gc ??= gcProbe(client);
      return gc;
    },
    async close() {
      await gc?.catch(() => undefined);
      await proxy?.close();
      await Promise.all(created.map((ns) => client.delete(RESOURCES.namespaces, undefined, ns).catch(() => undefined)));
    },
  };
}

/** A Model with a ConfigMap it owns, deleted at once: resolves when the ConfigMap is collected. */
async function gcProbe(client: KubeClient, timeoutMs = 60_000): Promise<void> {
  const ns = `corral-gc-probe-${randomBytes(3).toString("hex")}`;
  await client.create(RESOURCES.namespaces, undefined, { apiVersion: "v1", kind: "Namespace", metadata: { name: ns } });
  try {
    const owner = await client.create<Model>(MODELS, ns, modelObject(ns, "probe"));
    await client.create(RESOURCES.configMaps, ns, {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: "dependent", ownerReferences: [{ apiVersion: MODEL_API_VERSION, kind: MODEL_KIND, name: "probe", uid: owner.metadata.uid }] },
    });
    await client.delete(MODELS, ns, "probe");
    await waitFor(async () => (await client.get(RESOURCES.configMaps, ns, "dependent")) === undefined, {
      timeoutMs,
      intervalMs: 250,
      message: "the garbage collector did not delete a deleted Model's dependent",
    });
  } finally {
    await client.delete(RESOURCES.namespaces, undefined, ns).catch(() => undefined);
  }
}

/** Runs the operator on one namespace (its Lease there too), through `kubeConfig` (default: the cluster's). */
export async function startOperator(
  cluster: TestCluster,
  namespace: string,
  overrides: Partial<OperatorConfig> = {},
  probe?: RuntimeProbe,
  kubeConfig: KubeConfig = cluster.kubeConfig,
): Promise<OperatorHandle> {
  return run(testOperatorConfig({ namespaces: [namespace], leaseNamespace: namespace, image: "corral:test", ...overrides }), {
    kubeConfig,
    logger: testLogger(),
    probe,
  });
}

export function modelObject(namespace: string, name: string, spec: Partial<ModelSpec> = {}): Model {
  return { apiVersion: MODEL_API_VERSION, kind: MODEL_KIND, metadata: { name, namespace }, spec: { source: "hf:corral/test/model.gguf", ...spec } };
}

export async function createModel(cluster: TestCluster, namespace: string, name: string, spec: Partial<ModelSpec> = {}): Promise<Model> {
  return cluster.client.create<Model>(MODELS, namespace, modelObject(namespace, name, spec));
}

export async function getModel(cluster: TestCluster, namespace: string, name: string): Promise<Model | undefined> {
  return cluster.client.get<Model>(MODELS, namespace, name);
}

export async function gone(cluster: TestCluster, rt: typeof MODELS, namespace: string, name: string): Promise<boolean> {
  try {
    return (await cluster.client.get(rt, namespace, name)) === undefined;
  } catch (error) {
    return isNotFound(error);
  }
}

/**
 * Plays the kubelet for a Model's pods: marks each live one Running and Ready at `podIP` (through
 * the status subresource) and returns how many there are. On an e2e cluster the kubelets own pod
 * status: it writes nothing and returns 0.
 */
export async function markPodsReady(cluster: TestCluster, namespace: string, model: string, podIP = "127.0.0.1"): Promise<number> {
  if (E2E_CLUSTER) return 0;
  return markReady(cluster.client, namespace, `corral.dev/model=${model}`, podIP);
}
