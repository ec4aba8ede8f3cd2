// The Kubernetes backend against the real control plane (test/kube), with no operator: the tests
// play the operator's part (Model status) and the kubelet's (pod status) and check what the router
// would see and do. The backends reach the API server through the fault proxy, which counts their
// requests.

import { randomBytes } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { pino } from "pino";
import { KubeClient, RESOURCES } from "../../common/kube/client.js";
import type { ConfigMap, Pod } from "../../common/kube/types.js";
import { MODELS, type Model } from "../../common/kube/model-resource.js";
import { installCrd, realKube } from "../../test/kube/cluster.js";
import { startFaultProxy, type FaultProxy } from "../../test/kube/fault-proxy.js";
import { setPodReady } from "../../test/kube/kubelet-status.js";
import { testRouterConfig } from "../../test/helpers/config.js";
import { waitFor } from "../../test/helpers/wait.js";
import { run } from "../run.js";
import { KubernetesBackend, STATE_KEY, podEndpoint } from "./kubernetes.js";
import { ModelStartError } from "./types.js";

const kube = realKube();
let client: KubeClient;
let proxy: FaultProxy;
const namespaces: string[] = [];
const backends: KubernetesBackend[] = [];

beforeAll(async () => {
  if (!kube) return;
  client = new KubeClient(kube.kubeConfig);
  await installCrd(client);
  proxy = await startFaultProxy(kube);
});
afterEach(async () => {
  await Promise.all(backends.splice(0).map((b) => b.close()));
});
afterAll(async () => {
  await proxy?.close();
  await Promise.all(namespaces.map((ns) => client.delete(RESOURCES.namespaces, undefined, ns).catch(() => undefined)));
});

async function namespace(): Promise<string> {
  const name = `kb-${randomBytes(3).toString("hex")}`;
  await client.create(RESOURCES.namespaces, undefined, { apiVersion: "v1", kind: "Namespace", metadata: { name } });
  namespaces.push(name);
  return name;
}

async function backend(ns: string): Promise<KubernetesBackend> {
  const b = new KubernetesBackend({ client: new KubeClient(proxy.kubeConfig), namespace: ns, logger: pino({ level: "silent" }) });
  backends.push(b);
  await b.start();
  return b;
}

function model(ns: string, name: string, spec: Record<string, unknown> = {}) {
  return client.create<Model>(MODELS, ns, { apiVersion: "corral.dev/v1alpha1", kind: "Model", metadata: { name, namespace: ns }, spec: { source: "hf:a/b/c.gguf", ...spec } });
}

const getModel = (ns: string, name: string) => client.get<Model>(MODELS, ns, name);

/** Writes the Model's status as the operator would (through the status subresource). */
async function setStatus(ns: string, name: string, status: Record<string, unknown>) {
  const m = (await getModel(ns, name))!;
  await client.mergePatch(MODELS, ns, name, { status: { observedGeneration: m.metadata.generation, ...status } }, { subresource: "status" });
}

/** A Model's pod; returns what makes it (not) ready, as its kubelet would. */
async function pod(ns: string, modelName: string, name: string, port = 8080, ip = "10.1.2.3") {
  await client.create<Pod>(RESOURCES.pods, ns, {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: ns, labels: { "corral.dev/model": modelName } },
    spec: { containers: [{ name: "runtime", image: "corral:test", ports: [{ name: "http", containerPort: port }] }] },
  });
  return (ready = true) => setPodReady(client, ns, name, ready, { podIP: ip });
}

describe.skipIf(!kube)("KubernetesBackend", () => {
  it("lists the namespace's Models by model id; the older of two Models with one id wins", async () => {
    const ns = await namespace();
    await model(ns, "qwen", { modelId: "Qwen/Qwen2.5-0.5B-Instruct" });
    await model(ns, "tiny");
    const b = await backend(ns);
    expect(b.healthy()).toBe(true);
    expect(b.list().map((e) => e.model_id)).toEqual(["Qwen/Qwen2.5-0.5B-Instruct", "tiny"]);
    expect(b.lookup("tiny")).toEqual({ model_id: "tiny", source: "hf:a/b/c.gguf", description: null, size_bytes: null });
    expect(b.lookup("qwen")).toBeUndefined();
    // Created within the same second as "tiny" (timestamps have one-second resolution), it still
    // loses: ties go to the name that sorts first.
    await model(ns, "tiny-copy", { modelId: "tiny", source: "hf:x/y/z.gguf" });
    await waitFor(() => b.list().length === 2 && b.lookup("tiny") !== undefined);
    expect(b.lookup("tiny")?.source).toBe("hf:a/b/c.gguf");
    await client.delete(MODELS, ns, "tiny");
    await waitFor(() => b.lookup("tiny")?.source === "hf:x/y/z.gguf", { message: "the remaining Model did not take over the id" });
  });

  it("gives a Model's spec.routing to the balancer, and follows a change of it", async () => {
    const ns = await namespace();
    await model(ns, "chat", { routing: "least-load" });
    await model(ns, "plain");
    const b = await backend(ns);
    expect(b.routingOf("chat")).toBe("least-load");
    expect(b.routingOf("plain")).toBeUndefined();
    expect(b.routingOf("unknown")).toBeUndefined();
    await client.mergePatch(MODELS, ns, "chat", { spec: { routing: "prefix" } });
    await waitFor(() => b.routingOf("chat") === "prefix", { message: "the backend did not see spec.routing change" });
  });

  it("has the ready pods of a Model as endpoints, at their runtime port", async () => {
    const ns = await namespace();
    await model(ns, "tiny");
    const b = await backend(ns);
    const ready1 = await pod(ns, "tiny", "tiny-1", 9001, "10.0.0.1");
    await pod(ns, "tiny", "tiny-2", 9002, "10.0.0.2");
    await ready1();
    await waitFor(() => b.readyEndpoints("tiny").length === 1);
    expect(b.readyEndpoints("tiny")).toEqual([{ id: "tiny-1", url: "http://10.0.0.1:9001", capacity: 4 }]);
    expect(b.status("tiny")).toMatchObject({ state: "ready", endpoints: [{ id: "tiny-1" }] });
    await ready1(false);
    await waitFor(() => b.readyEndpoints("tiny").length === 0, { message: "a pod that is not ready stayed an endpoint" });
    expect(podEndpoint({ metadata: { name: "p", deletionTimestamp: "2025-01-01T00:00:00Z" }, status: { podIP: "1.2.3.4", conditions: [{ type: "Ready", status: "True" }] } })).toBeUndefined();
  });

  it("maps the Model's phase to the router's states, with the operator's message", async () => {
    const ns = await namespace();
    await model(ns, "m");
    await model(ns, "z", { replicas: 0 });
    const b = await backend(ns);
    expect(b.status("z").state).toBe("not_loaded");
    expect(b.status("m").state).toBe("starting");
    await setStatus(ns, "m", { phase: "Downloading", conditions: [{ type: "Ready", status: "False", reason: "Downloading", message: "pod p is downloading: 50%", lastTransitionTime: "2025-01-01T00:00:00Z" }] });
    await waitFor(() => b.status("m").state === "downloading");
    expect(b.status("m").message).toBe("pod p is downloading: 50%");
    await setStatus(ns, "m", { phase: "Loading" });
    await waitFor(() => b.status("m").state === "loading");
    await setStatus(ns, "m", { phase: "Failed", conditions: [{ type: "Ready", status: "False", reason: "ModelLoadFailed", message: "not a GGUF file", lastTransitionTime: "2025-01-01T00:00:00Z" }] });
    await waitFor(() => b.status("m").state === "failed");
    expect(b.status("nope").state).toBe("not_loaded");
  });

  it("shows the operator's status.progress as local mode does: download bytes while downloading, the share loaded while loading, in /models/current too", async () => {
    const ns = await namespace();
    await model(ns, "m");
    await client.create<ConfigMap>(RESOURCES.configMaps, ns, { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "corral-router", namespace: ns }, data: { [STATE_KEY]: "m" } });
    const b = new KubernetesBackend({ client: new KubeClient(proxy.kubeConfig), namespace: ns, logger: pino({ level: "silent" }) });
    const router = await run(testRouterConfig({ rateLimitPoints: 0 }), { backend: b });
    try {
      const current = async () => (await (await fetch(`${router.url}/models/current`)).json()) as Record<string, unknown>;
      await setStatus(ns, "m", { phase: "Pending", progress: { stage: "scheduling" } });
      await waitFor(() => b.status("m").state === "starting");
      expect(b.status("m").progress).toBeNull();

      await setStatus(ns, "m", { phase: "Downloading", progress: { stage: "downloading", fraction: 0.42, bytesDone: 420_000, bytesTotal: 1_000_000 } });
      await waitFor(() => b.status("m").state === "downloading");
      expect(b.status("m").progress).toEqual({ bytes_done: 420_000, bytes_total: 1_000_000, fraction: 0.42 });
      expect(await current()).toMatchObject({ model_id: "m", current: true, state: "downloading", progress: { bytes_done: 420_000, bytes_total: 1_000_000, fraction: 0.42 } });

      // A source without a known size: the total is null, as the local backend reports it.
      await setStatus(ns, "m", { progress: { stage: "downloading", bytesDone: 3 * 1024 * 1024, bytesTotal: null } });
      await waitFor(() => b.status("m").progress?.bytes_total === null);
      expect(b.status("m").progress).toEqual({ bytes_done: 3 * 1024 * 1024, bytes_total: null, fraction: null });

      // Loading: the share loaded, as in local mode.
      await setStatus(ns, "m", { phase: "Loading", progress: { stage: "loading", fraction: 0.5 } });
      await waitFor(() => b.status("m").state === "loading");
      expect(b.status("m").progress).toEqual({ bytes_done: 0, bytes_total: null, fraction: 0.5 });
      expect(await current()).toMatchObject({ state: "loading", progress: { fraction: 0.5 } });
    } finally {
      await router.close();
    }
  });

  it("scales a Model from zero once, however many requests wait, and answers when a pod is ready", async () => {
    const ns = await namespace();
    await model(ns, "cold", { replicas: 0, minReplicas: 0 });
    const b = await backend(ns);
    const waiting = Array.from({ length: 5 }, () => b.ensureReady("cold", new AbortController().signal));
    await waitFor(async () => (await getModel(ns, "cold"))?.spec?.replicas === 1, { message: "not scaled up" });
    expect(proxy.requestLog.filter((e) => e.namespace === ns && e.verb === "patch" && e.subresource === "scale")).toHaveLength(1);
    expect(b.status("cold").state).toBe("starting");
    await (await pod(ns, "cold", "cold-1"))();
    await Promise.all(waiting);
    expect(b.readyEndpoints("cold")).toHaveLength(1);
  });

  it("gives up when the signal aborts, and at once for a Model that failed", async () => {
    const ns = await namespace();
    await model(ns, "slow");
    await model(ns, "broken");
    const b = await backend(ns);
    const controller = new AbortController();
    const waiting = b.ensureReady("slow", controller.signal);
    controller.abort(new Error("timed out"));
    await expect(waiting).rejects.toThrow("timed out");

    await setStatus(ns, "broken", { phase: "Failed", conditions: [{ type: "Ready", status: "False", reason: "CrashLoopBackOff", message: "pod x keeps exiting: out of memory", lastTransitionTime: "2025-01-01T00:00:00Z" }] });
    await waitFor(() => b.status("broken").state === "failed");
    const error = await b.ensureReady("broken", new AbortController().signal).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelStartError);
    expect((error as Error).message).toBe("model broken failed: pod x keeps exiting: out of memory");

    // A waiting request learns of the failure as soon as the operator reports it.
    const pending = b.ensureReady("slow", new AbortController().signal).catch((e: unknown) => e);
    await setStatus(ns, "slow", { phase: "Failed", conditions: [{ type: "Ready", status: "False", reason: "ModelLoadFailed", message: "bad file", lastTransitionTime: "2025-01-01T00:00:00Z" }] });
    expect(((await pending) as Error).message).toBe("model slow failed: bad file");
  });

  it("shares the current model between router replicas, and unload scales to zero", async () => {
    const ns = await namespace();
    await model(ns, "a");
    await model(ns, "b");
    const one = await backend(ns);
    const two = await backend(ns);
    expect(one.current()).toBeNull();
    await (await pod(ns, "a", "a-1"))();
    await one.load("a", new AbortController().signal);
    expect(one.current()).toBe("a");
    await waitFor(() => two.current() === "a", { message: "the other replica did not see the current model" });
    expect((await client.get<ConfigMap>(RESOURCES.configMaps, ns, "corral-router"))?.data).toEqual({ "current-model": "a" });

    await two.unload("a");
    expect((await getModel(ns, "a"))?.spec?.replicas).toBe(0);
    // Its pod is still there (the operator and the Deployment remove it): stopping, and not used.
    expect(two.status("a")).toMatchObject({ state: "stopping", endpoints: [] });
    await client.delete(RESOURCES.pods, ns, "a-1");
    await waitFor(() => two.status("a").state === "not_loaded", { message: "not not_loaded once its pod was gone" });
    await waitFor(() => one.current() === null, { message: "unload did not clear the current model everywhere" });
    expect(two.current()).toBeNull();
  });
});
