// The list+watch informer (common/kube-informer.ts) against the fake API server's failure modes:
// a CRD that does not exist yet, then answers 429 while its storage initialises; dropped
// connections; 410 Gone after the watch history was compacted; failing lists.

import { afterEach, describe, expect, it } from "vitest";
import { KubeClient, RESOURCES, type ResourceType } from "../../common/kube-client.js";
import { Informer } from "../../common/kube-informer.js";
import type { ConfigMap } from "../../common/kube-types.js";
import { MODELS, loadModelCrd, type Model } from "../../common/model-resource.js";
import { startFakeKube, waitFor, type FakeKube } from "../fake-kube/index.js";
import { testLogger } from "./harness.js";

let fake: FakeKube | undefined;
const informers: Informer<any>[] = [];

afterEach(async () => {
  await Promise.all(informers.splice(0).map((i) => i.stop()));
  await fake?.close();
  fake = undefined;
});

function start<T extends ConfigMap | Model>(client: KubeClient, resource: ResourceType = RESOURCES.configMaps, namespaces = ["default"]) {
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

const configMap = (name: string, data: Record<string, string> = {}) => ({ apiVersion: "v1", kind: "ConfigMap", metadata: { name, namespace: "default" }, data });

describe("Informer", () => {
  it("lists, then watches: the cache follows adds, updates and deletes", async () => {
    fake = await startFakeKube();
    fake.create(configMap("a"));
    const { informer, events } = start<ConfigMap>(new KubeClient(fake.kubeConfig));
    await informer.waitForSync(5000);
    expect(informer.get("default", "a")).toBeDefined();
    fake.create(configMap("b"));
    fake.update({ ...fake.get("configmaps", "default", "a")!, data: { x: "1" } });
    fake.delete("configmaps", "default", "b");
    await waitFor(() => events.includes("delete b"));
    expect(informer.get("default", "a")?.data).toEqual({ x: "1" });
    expect(events).toEqual(expect.arrayContaining(["add a", "add b", "update a", "delete b"]));
  });

  it("waits for a CRD that is not there yet, and through its 429 window, then syncs", async () => {
    fake = await startFakeKube({ crdInitDelayMs: 800 });
    const { informer, failures, events } = start<Model>(new KubeClient(fake.kubeConfig), MODELS);
    await waitFor(() => failures.some((f) => f === "list:404"), { message: "no 404 while the CRD is missing" });
    expect(informer.synced()).toBe(false);
    fake.create(loadModelCrd());
    await waitFor(() => failures.some((f) => f === "list:429"), { message: "no 429 while the CRD initialises" });
    await informer.waitForSync(5000);
    fake.create({ apiVersion: "corral.dev/v1alpha1", kind: "Model", metadata: { name: "late", namespace: "default" }, spec: { source: "hf:a/b/c.gguf" } });
    await waitFor(() => events.includes("add late"), { message: "the watch did not start after the 429s" });
  });

  it("resumes after a dropped connection without losing events", async () => {
    fake = await startFakeKube();
    const { informer, failures, events } = start<ConfigMap>(new KubeClient(fake.kubeConfig));
    await informer.waitForSync(5000);
    await waitFor(() => fake!.openWatches === 1);
    fake.injectFault({ verb: "watch", resource: "configmaps", status: 500, times: 2 });
    fake.dropWatches({ abrupt: true });
    fake.create(configMap("while-down"));
    await waitFor(() => events.includes("add while-down"), { message: "the event made while disconnected was lost" });
    expect(failures.filter((f) => f.startsWith("watch")).length).toBeGreaterThanOrEqual(2);
    fake.dropWatches();
    fake.create(configMap("after-clean-end"));
    await waitFor(() => events.includes("add after-clean-end"));
  });

  it("relists after 410 Gone and emits deletes for what vanished meanwhile", async () => {
    fake = await startFakeKube({ historySize: 5 });
    fake.create(configMap("keep"));
    fake.create(configMap("vanish"));
    const { informer, events } = start<ConfigMap>(new KubeClient(fake.kubeConfig));
    await informer.waitForSync(5000);
    await waitFor(() => fake!.openWatches === 1);
    // Disconnect, change things, and let the history go: resuming answers 410.
    fake.injectFault({ verb: "watch", resource: "configmaps", status: 503, times: 1 });
    fake.dropWatches({ abrupt: true });
    fake.delete("configmaps", "default", "vanish");
    for (let i = 0; i < 10; i++) fake.create(configMap(`filler-${i}`));
    fake.compactHistory();
    await waitFor(() => events.includes("delete vanish") && events.includes("add filler-9"), { message: "no relist after 410" });
    expect(informer.get("default", "vanish")).toBeUndefined();
    expect(informer.list("default").map((c) => c.metadata.name)).toContain("keep");
  });

  it("retries failing lists with backoff and reports not synced until one succeeds", async () => {
    fake = await startFakeKube();
    fake.injectFault({ verb: "list", resource: "configmaps", status: 503, times: 3 });
    const { informer, failures } = start<ConfigMap>(new KubeClient(fake.kubeConfig));
    expect(informer.synced()).toBe(false);
    await informer.waitForSync(5000);
    expect(failures).toEqual(["list:503", "list:503", "list:503"]);
  });

  it("watches several namespaces into one cache", async () => {
    fake = await startFakeKube({ namespaces: ["one", "two", "three"] });
    fake.create({ ...configMap("x"), metadata: { name: "x", namespace: "one" } });
    fake.create({ ...configMap("y"), metadata: { name: "y", namespace: "two" } });
    fake.create({ ...configMap("z"), metadata: { name: "z", namespace: "three" } });
    const { informer } = start<ConfigMap>(new KubeClient(fake.kubeConfig), RESOURCES.configMaps, ["one", "two"]);
    await informer.waitForSync(5000);
    expect(informer.get("one", "x")).toBeDefined();
    expect(informer.get("two", "y")).toBeDefined();
    expect(informer.get("three", "z")).toBeUndefined();
  });
});
