// The Kubernetes backend against the fake API server, with no operator: the tests play the
// operator's part (Model status, pods) and check what the router would see and do.

import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { pino } from "pino";
import { KubeClient } from "../../common/kube-client.js";
import { loadModelCrd } from "../../common/model-resource.js";
import { startFakeKube, waitFor, type FakeKube } from "../../test/fake-kube/index.js";
import { KubernetesBackend, podEndpoint } from "./kubernetes.js";
import { ModelStartError } from "./types.js";

let fake: FakeKube;
let counter = 0;
const backends: KubernetesBackend[] = [];

beforeAll(async () => {
  fake = await startFakeKube({ crdInitDelayMs: 0 });
  fake.create(loadModelCrd());
  fake.flushControllers();
});
afterEach(async () => {
  await Promise.all(backends.splice(0).map((b) => b.close()));
});
afterAll(async () => fake?.close());

async function namespace(): Promise<string> {
  const name = `kb-${++counter}`;
  fake.create({ apiVersion: "v1", kind: "Namespace", metadata: { name } });
  return name;
}

async function backend(ns: string): Promise<KubernetesBackend> {
  const b = new KubernetesBackend({ client: new KubeClient(fake.kubeConfig), namespace: ns, logger: pino({ level: "silent" }) });
  backends.push(b);
  await b.start();
  return b;
}

function model(ns: string, name: string, spec: Record<string, unknown> = {}) {
  return fake.create({ apiVersion: "corral.dev/v1alpha1", kind: "Model", metadata: { name, namespace: ns }, spec: { source: "hf:a/b/c.gguf", ...spec } });
}

function setStatus(ns: string, name: string, status: Record<string, unknown>) {
  const m = fake.get("models.corral.dev", ns, name)!;
  fake.update({ ...m, status: { observedGeneration: m.metadata.generation, ...status } }, { subresource: "status" });
}

function pod(ns: string, modelName: string, name: string, port = 8080, ip = "10.1.2.3") {
  fake.create({
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace: ns, labels: { "corral.dev/model": modelName } },
    spec: { containers: [{ name: "runtime", image: "corral:test", ports: [{ name: "http", containerPort: port }] }] },
  });
  return (ready = true) => fake.setPodReady(ns, name, ready, { podIP: ip });
}

describe("KubernetesBackend", () => {
  it("lists the namespace's Models by model id; the older of two Models with one id wins", async () => {
    const ns = await namespace();
    model(ns, "qwen", { modelId: "Qwen/Qwen2.5-0.5B-Instruct" });
    model(ns, "tiny");
    const b = await backend(ns);
    expect(b.healthy()).toBe(true);
    expect(b.list().map((e) => e.model_id)).toEqual(["Qwen/Qwen2.5-0.5B-Instruct", "tiny"]);
    expect(b.lookup("tiny")).toEqual({ model_id: "tiny", source: "hf:a/b/c.gguf", description: null, size_bytes: null });
    expect(b.lookup("qwen")).toBeUndefined();
    model(ns, "tiny-copy", { modelId: "tiny", source: "hf:x/y/z.gguf" });
    await waitFor(() => b.list().length === 2 && fake.list("models.corral.dev", ns).length === 3);
    expect(b.lookup("tiny")?.source).toBe("hf:a/b/c.gguf");
    fake.delete("models.corral.dev", ns, "tiny");
    await waitFor(() => b.lookup("tiny")?.source === "hf:x/y/z.gguf", { message: "the remaining Model did not take over the id" });
  });

  it("has the ready pods of a Model as endpoints, at their runtime port", async () => {
    const ns = await namespace();
    model(ns, "tiny");
    const b = await backend(ns);
    const ready1 = pod(ns, "tiny", "tiny-1", 9001, "10.0.0.1");
    pod(ns, "tiny", "tiny-2", 9002, "10.0.0.2");
    ready1();
    await waitFor(() => b.readyEndpoints("tiny").length === 1);
    expect(b.readyEndpoints("tiny")).toEqual([{ id: "tiny-1", url: "http://10.0.0.1:9001" }]);
    expect(b.status("tiny")).toMatchObject({ state: "ready", endpoints: [{ id: "tiny-1" }] });
    ready1(false);
    await waitFor(() => b.readyEndpoints("tiny").length === 0, { message: "a pod that is not ready stayed an endpoint" });
    expect(podEndpoint({ metadata: { name: "p", deletionTimestamp: "2025-01-01T00:00:00Z" }, status: { podIP: "1.2.3.4", conditions: [{ type: "Ready", status: "True" }] } })).toBeUndefined();
  });

  it("maps the Model's phase to the router's states, with the operator's message", async () => {
    const ns = await namespace();
    model(ns, "m");
    model(ns, "z", { replicas: 0 });
    const b = await backend(ns);
    expect(b.status("z").state).toBe("not_loaded");
    expect(b.status("m").state).toBe("starting");
    setStatus(ns, "m", { phase: "Downloading", conditions: [{ type: "Ready", status: "False", reason: "Downloading", message: "pod p is downloading: 50%", lastTransitionTime: "2025-01-01T00:00:00Z" }] });
    await waitFor(() => b.status("m").state === "downloading");
    expect(b.status("m").message).toBe("pod p is downloading: 50%");
    setStatus(ns, "m", { phase: "Loading" });
    await waitFor(() => b.status("m").state === "loading");
    setStatus(ns, "m", { phase: "Failed", conditions: [{ type: "Ready", status: "False", reason: "ModelLoadFailed", message: "not a GGUF file", lastTransitionTime: "2025-01-01T00:00:00Z" }] });
    await waitFor(() => b.status("m").state === "failed");
    expect(b.status("nope").state).toBe("not_loaded");
  });

  it("scales a Model from zero once, however many requests wait, and answers when a pod is ready", async () => {
    const ns = await namespace();
    model(ns, "cold", { replicas: 0, minReplicas: 0 });
    const b = await backend(ns);
    fake.resetRequestLog();
    const waiting = Array.from({ length: 5 }, () => b.ensureReady("cold", new AbortController().signal));
    await waitFor(() => fake.get("models.corral.dev", ns, "cold")?.spec?.replicas === 1, { message: "not scaled up" });
    expect(fake.requestLog.filter((e) => e.verb === "patch" && e.subresource === "scale")).toHaveLength(1);
    expect(b.status("cold").state).toBe("starting");
    pod(ns, "cold", "cold-1")();
    await Promise.all(waiting);
    expect(b.readyEndpoints("cold")).toHaveLength(1);
  });

  it("gives up when the signal aborts, and at once for a Model that failed", async () => {
    const ns = await namespace();
    model(ns, "slow");
    model(ns, "broken");
    const b = await backend(ns);
    const controller = new AbortController();
    const waiting = b.ensureReady("slow", controller.signal);
    controller.abort(new Error("timed out"));
    await expect(waiting).rejects.toThrow("timed out");

    setStatus(ns, "broken", { phase: "Failed", conditions: [{ type: "Ready", status: "False", reason: "CrashLoopBackOff", message: "pod x keeps exiting: out of memory", lastTransitionTime: "2025-01-01T00:00:00Z" }] });
    await waitFor(() => b.status("broken").state === "failed");
    const error = await b.ensureReady("broken", new AbortController().signal).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelStartError);
    expect((error as Error).message).toBe("model broken failed: pod x keeps exiting: out of memory");

    // A waiting request learns of the failure as soon as the operator reports it.
    const pending = b.ensureReady("slow", new AbortController().signal).catch((e: unknown) => e);
    setStatus(ns, "slow", { phase: "Failed", conditions: [{ type: "Ready", status: "False", reason: "ModelLoadFailed", message: "bad file", lastTransitionTime: "2025-01-01T00:00:00Z" }] });
    expect(((await pending) as Error).message).toBe("model slow failed: bad file");
  });

  it("shares the current model between router replicas, and unload scales to zero", async () => {
    const ns = await namespace();
    model(ns, "a");
    model(ns, "b");
    const one = await backend(ns);
    const two = await backend(ns);
    expect(one.current()).toBeNull();
    pod(ns, "a", "a-1")();
    await one.load("a", new AbortController().signal);
    expect(one.current()).toBe("a");
    await waitFor(() => two.current() === "a", { message: "the other replica did not see the current model" });
    expect(fake.get("configmaps", ns, "corral-router")?.data).toEqual({ "current-model": "a" });

    await two.unload("a");
    expect(fake.get("models.corral.dev", ns, "a")?.spec?.replicas).toBe(0);
    // Its pod is still there (the operator and the Deployment remove it): stopping, and not used.
    expect(two.status("a")).toMatchObject({ state: "stopping", endpoints: [] });
    fake.delete("pods", ns, "a-1");
    await waitFor(() => two.status("a").state === "not_loaded", { message: "not not_loaded once its pod was gone" });
    await waitFor(() => one.current() === null, { message: "unload did not clear the current model everywhere" });
    expect(two.current()).toBeNull();
  });
});
