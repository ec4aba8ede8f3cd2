// The list+watch informer (common/kube/informer.ts) against a real API server, and through the
// fault proxy (test/kube/fault-proxy.ts) its failure modes: a resource whose CRD does not exist
// yet, then answers 429; dropped connections; a watch whose history is gone (410 Expired);
// failing lists.

import { randomBytes } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { KubeClient, RESOURCES, type ResourceType } from "../../common/kube/client.js";
import { Informer } from "../../common/kube/informer.js";
import type { ConfigMap, KubeObject } from "../../common/kube/types.js";
import { E2E_CLUSTER, NO_CLUSTER, startCluster, testLogger, waitFor, type TestCluster } from "./harness.js";

let cluster: TestCluster;
const informers: Informer<any>[] = [];

beforeAll(async () => {
  if (!NO_CLUSTER) cluster = await startCluster();
});
afterEach(async () => {
  cluster?.proxy?.clearFaults();
  await Promise.all(informers.splice(0).map((i) => i.stop()));
});
afterAll(async () => cluster?.close());

function start<T extends KubeObject>(client: KubeClient, namespaces: string[], resource: ResourceType = RESOURCES.configMaps) {
  const failures: string[] = [];
  const events: string[] = [];
  const informer = new Informer<T>({
    client,
    resource,
    namespaces,
    logger: testLogger(),
    backoff: { initialMs: 20, maxMs: 200 },
    onFailure: (stage, error) => failures.push(`${stage}:${(error as { code?: number; statusCode?: number }).code ?? (error as { statusCode?: number }).statusCode}`),
  });
  informer.on((type, object) => events.push(`${type} ${object.metadata.name}`));
  informers.push(informer);
  informer.start();
  return { informer, failures, events };
}

const configMap = (namespace: string, name: string, data: Record<string, string> = {}) => ({ apiVersion: "v1", kind: "ConfigMap", metadata: { name, namespace }, data });
const createConfigMap = (namespace: string, name: string, data: Record<string, string> = {}) => cluster.client.create(RESOURCES.configMaps, namespace, configMap(namespace, name, data));
/** A client through the fault proxy. */
const proxied = () => new KubeClient(cluster.proxy!.kubeConfig);

describe.skipIf(NO_CLUSTER)("Informer", () => {
  it("lists, then watches: the cache follows adds, updates and deletes", async () => {
    const ns = await cluster.namespace("informer");
    await createConfigMap(ns, "a");
    const { informer, events } = start<ConfigMap>(cluster.client, [ns]);
    await informer.waitForSync(5000);
    expect(informer.get(ns, "a")).toBeDefined();
    await createConfigMap(ns, "b");
    await cluster.client.mergePatch(RESOURCES.configMaps, ns, "a", { data: { x: "1" } });
    await cluster.client.delete(RESOURCES.configMaps, ns, "b");
    await waitFor(() => events.includes("delete b"));
    expect(informer.get(ns, "a")?.data).toEqual({ x: "1" });
    expect(events).toEqual(expect.arrayContaining(["add a", "add b", "update a", "delete b"]));
  });

  it.skipIf(E2E_CLUSTER)("waits for a CRD that is not there yet, and through a 429, then syncs", async () => {
    const ns = await cluster.namespace("informer");
    // A resource of its own: the Model CRD is shared by the suites running beside this one.
    const group = `t${randomBytes(3).toString("hex")}.corral.dev`;
    const widgets: ResourceType = { group, version: "v1", plural: "widgets", kind: "Widget", namespaced: true };
    const crd = {
      apiVersion: "apiextensions.k8s.io/v1",
      kind: "CustomResourceDefinition",
      metadata: { name: `widgets.${group}` },
      spec: {
        group,
        scope: "Namespaced",
        names: { plural: "widgets", singular: "widget", kind: "Widget", listKind: "WidgetList" },
        versions: [{ name: "v1", served: true, storage: true, schema: { openAPIV3Schema: { type: "object", "x-kubernetes-preserve-unknown-fields": true } } }],
      },
    };
    const proxy = cluster.proxy!;
    const { informer, failures, events } = start<KubeObject>(proxied(), [ns], widgets);
    try {
      await waitFor(() => failures.includes("list:404"), { message: "no 404 while the CRD is missing" });
      expect(informer.synced()).toBe(false);
      // What kube-apiserver may answer while a new resource's storage initialises; injected before
      // the CRD is made, so that no list answered in between can get ahead of it.
      proxy.injectFault({ verb: "list", resource: `widgets.${group}`, status: 429, message: "storage is (re)initializing", retryAfterSeconds: 1 });
      await cluster.client.create(RESOURCES.customResourceDefinitions, undefined, crd);
      await informer.waitForSync(15_000);
      expect(failures).toContain("list:429");
      await waitFor(
        () => cluster.client.create(widgets, ns, { apiVersion: `${group}/v1`, kind: "Widget", metadata: { name: "late", namespace: ns } }).then(() => true),
        { timeoutMs: 10_000, message: "cannot create a Widget" },
      );
      await waitFor(() => events.includes("add late"), { message: "the watch did not start after the 429" });
    } finally {
      await cluster.client.delete(RESOURCES.customResourceDefinitions, undefined, crd.metadata.name);
    }
  });

  it.skipIf(E2E_CLUSTER)("resumes after a dropped connection without losing events", async () => {
    const ns = await cluster.namespace("informer");
    const proxy = cluster.proxy!;
    const { informer, failures, events } = start<ConfigMap>(proxied(), [ns]);
    await informer.waitForSync(5000);
    await waitFor(() => proxy.openWatches("configmaps") === 1);
    proxy.injectFault({ verb: "watch", resource: "configmaps", namespace: ns, status: 500, times: 2 });
    expect(proxy.dropWatches({ abrupt: true })).toBe(1);
    await createConfigMap(ns, "while-down");
    await waitFor(() => events.includes("add while-down"), { message: "the event made while disconnected was lost" });
    // The reset connection, then the two 500s.
    expect(failures.filter((f) => f.startsWith("watch")).length).toBeGreaterThanOrEqual(3);
    expect(failures.filter((f) => f === "watch:500")).toHaveLength(2);
    await waitFor(() => proxy.openWatches("configmaps") === 1);
    expect(proxy.dropWatches()).toBe(1);
    await createConfigMap(ns, "after-clean-end");
    await waitFor(() => events.includes("add after-clean-end"));
  });

  it.skipIf(E2E_CLUSTER)("relists when the watch history is gone and emits deletes for what vanished meanwhile", async () => {
    const ns = await cluster.namespace("informer");
    const proxy = cluster.proxy!;
    await createConfigMap(ns, "keep");
    await createConfigMap(ns, "vanish");
    const { informer, failures, events } = start<ConfigMap>(proxied(), [ns]);
    await informer.waitForSync(5000);
    await waitFor(() => proxy.openWatches("configmaps") === 1);
    // Disconnected, and kept out while things change.
    proxy.injectFault({ verb: "watch", resource: "configmaps", namespace: ns, status: 503, times: 100_000 });
    proxy.dropWatches({ abrupt: true });
    await cluster.client.delete(RESOURCES.configMaps, ns, "vanish");
    for (let i = 0; i < 10; i++) await createConfigMap(ns, `filler-${i}`);
    await waitFor(() => failures.includes("watch:503"));
    // Meanwhile etcd compacted that history: resuming answers what kube-apiserver then sends (a
    // 200 stream with one ERROR event, code 410).
    proxy.clearFaults();
    proxy.resetRequestLog();
    proxy.injectFault({
      verb: "watch",
      resource: "configmaps",
      namespace: ns,
      status: 410,
      reason: "Expired",
      message: "The resourceVersion for the provided watch is too old.",
      asWatchEvent: true,
    });
    await waitFor(() => events.includes("delete vanish") && events.includes("add filler-9"), { message: "no relist after 410" });
    expect(proxy.requestLog.map((r) => `${r.verb} ${r.resource}`)).toEqual(expect.arrayContaining(["watch configmaps", "list configmaps"]));
    expect(informer.get(ns, "vanish")).toBeUndefined();
    expect(informer.list(ns).map((c) => c.metadata.name)).toContain("keep");
  });

  it.skipIf(E2E_CLUSTER)("retries failing lists with backoff and reports not synced until one succeeds", async () => {
    const ns = await cluster.namespace("informer");
    cluster.proxy!.injectFault({ verb: "list", resource: "configmaps", namespace: ns, status: 503, times: 3 });
    const { informer, failures } = start<ConfigMap>(proxied(), [ns]);
    expect(informer.synced()).toBe(false);
    await informer.waitForSync(5000);
    expect(failures).toEqual(["list:503", "list:503", "list:503"]);
  });

  it("watches several namespaces into one cache", async () => {
    const [one, two, three] = [await cluster.namespace("one"), await cluster.namespace("two"), await cluster.namespace("three")];
    await createConfigMap(one, "x");
    await createConfigMap(two, "y");
    await createConfigMap(three, "z");
    const { informer } = start<ConfigMap>(cluster.client, [one, two]);
    await informer.waitForSync(5000);
    expect(informer.get(one, "x")).toBeDefined();
    expect(informer.get(two, "y")).toBeDefined();
    expect(informer.get(three, "z")).toBeUndefined();
  });
});
