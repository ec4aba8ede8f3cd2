// The cluster the operator tests run against: the fake API server (default), or the cluster
// KUBECONFIG points at when CORRAL_E2E=1 (`npm run test:e2e`). Every test gets its own namespace.

import { randomBytes } from "node:crypto";
import { KubeConfig } from "@kubernetes/client-node";
import { pino } from "pino";
import { KubeClient, RESOURCES, isNotFound } from "../../common/kube-client.js";
import type { KubeObject } from "../../common/kube-types.js";
import { MODELS, MODEL_API_VERSION, MODEL_CRD_NAME, MODEL_KIND, loadModelCrd, type Model, type ModelSpec } from "../../common/model-resource.js";
import { testOperatorConfig, type OperatorConfig } from "../../operator/config.js";
import { run, type OperatorHandle } from "../../operator/run.js";
import type { RuntimeProbe } from "../../operator/reconcile.js";
import { startFakeKube, waitFor, type FakeKube, type FakeKubeOptions } from "../fake-kube/index.js";

export { waitFor };

/** True when the suite runs against a real cluster (CORRAL_E2E=1 with KUBECONFIG set). */
export const REAL_CLUSTER = process.env.CORRAL_E2E === "1" && Boolean(process.env.KUBECONFIG);
/** Timeouts grow on a real cluster (image pulls, schedulers, garbage collection). */
export const T = REAL_CLUSTER ? 8 : 1;

export interface TestCluster {
  kubeConfig: KubeConfig;
  client: KubeClient;
  /** The fake API server; undefined on a real cluster. */
  fake: FakeKube | undefined;
  /** A fresh namespace for one test (deleted by close()). */
  namespace(prefix?: string): Promise<string>;
  close(): Promise<void>;
}

export const testLogger = () => pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

export async function startCluster(options: FakeKubeOptions = {}): Promise<TestCluster> {
  let fake: FakeKube | undefined;
  let kubeConfig: KubeConfig;
  if (REAL_CLUSTER) {
    kubeConfig = new KubeConfig();
    kubeConfig.loadFromDefault();
  } else {
    fake = await startFakeKube({ deploymentController: true, crdInitDelayMs: 300, ...options });
    kubeConfig = fake.kubeConfig;
  }
  const client = new KubeClient(kubeConfig);
  const created: string[] = [];
  await installCrd(client);
  return {
    kubeConfig,
    client,
    fake,
    async namespace(prefix = "corral-test") {
      const name = `${prefix}-${randomBytes(3).toString("hex")}`;
      await client.create(RESOURCES.namespaces, undefined, { apiVersion: "v1", kind: "Namespace", metadata: { name, labels: { "corral.dev/test": "true" } } });
      created.push(name);
      return name;
    },
    async close() {
      if (fake) await fake.close();
      else for (const ns of created) await client.delete(RESOURCES.namespaces, undefined, ns).catch(() => undefined);
    },
  };
}

/** Applies the Model CRD (server-side) and waits until it is Established. */
export async function installCrd(client: KubeClient): Promise<void> {
  await client.apply(RESOURCES.customResourceDefinitions, loadModelCrd() as KubeObject, { fieldManager: "corral-tests", force: true });
  await waitFor(
    async () => {
      const crd = await client.get<KubeObject & { status?: { conditions?: { type: string; status: string }[] } }>(
        RESOURCES.customResourceDefinitions,
        undefined,
        MODEL_CRD_NAME,
      );
      return crd?.status?.conditions?.some((c) => c.type === "Established" && c.status === "True");
    },
    { timeoutMs: 30_000, message: "the Model CRD was not established" },
  );
}

export async function startOperator(
  cluster: TestCluster,
  namespace: string,
  overrides: Partial<OperatorConfig> = {},
  probe?: RuntimeProbe,
): Promise<OperatorHandle> {
  return run(testOperatorConfig({ namespaces: [namespace], leaseNamespace: namespace, image: "corral:test", ...overrides }), {
    kubeConfig: cluster.kubeConfig,
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

/** Marks every pod of a Model ready with the given IP (fake only: a kubelet does it on a cluster). */
export function markPodsReady(cluster: TestCluster, namespace: string, model: string, podIP = "127.0.0.1"): number {
  if (!cluster.fake) return 0;
  let n = 0;
  for (const pod of cluster.fake.list("pods", namespace)) {
    if (pod.metadata?.labels?.["corral.dev/model"] !== model || pod.metadata?.deletionTimestamp) continue;
    const ready = pod.status?.conditions?.some((c: { type: string; status: string }) => c.type === "Ready" && c.status === "True");
    if (!ready) cluster.fake.setPodReady(namespace, pod.metadata.name, true, { podIP });
    n++;
  }
  return n;
}
