// The operator against a real API server (the test control plane; a whole cluster under
// `npm run test:e2e`): what a person applying Models sees in the API. On the control plane the
// tests play the kubelet (pod status) and inject faults through test/kube/fault-proxy.ts.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HttpMethod } from "@kubernetes/client-node";
import { RESOURCES, resourcePath } from "../../common/kube/client.js";
import type { Condition, Deployment, KubeObject, PersistentVolumeClaim, Pod, Service } from "../../common/kube/types.js";
import { MODELS, type Model } from "../../common/kube/model-resource.js";
import type { OperatorHandle } from "../../operator/run.js";
import type { RuntimeInfo } from "../../operator/status.js";
import { setPodReady } from "../kube/kubelet-status.js";
import {
  E2E_CLUSTER,
  NO_CLUSTER,
  T,
  createModel,
  getModel,
  gone,
  markPodsReady,
  startCluster,
  startOperator,
  waitFor,
  type TestCluster,
} from "./harness.js";

let cluster: TestCluster;
const operators: OperatorHandle[] = [];

beforeAll(async () => {
  if (NO_CLUSTER) return;
  cluster = await startCluster();
  // Started now, awaited by the deletion test at the end.
  cluster.modelsGarbageCollected().catch(() => undefined);
});
afterAll(async () => {
  await Promise.all(operators.map((op) => op.close()));
  await cluster?.close();
});

async function operator(namespace: string, ...rest: Parameters<typeof startOperator> extends [unknown, unknown, ...infer R] ? R : never) {
  const op = await startOperator(cluster, namespace, ...rest);
  operators.push(op);
  return op;
}

const deployment = (ns: string, name: string) => cluster.client.get<Deployment & { spec: Record<string, any> }>(RESOURCES.deployments, ns, name);
const service = (ns: string, name: string) => cluster.client.get<Service>(RESOURCES.services, ns, name);
const condition = (model: Model | undefined, type: string): Condition | undefined => model?.status?.conditions?.find((c) => c.type === type);
const argValue = (args: string[], flag: string) => args[args.indexOf(flag) + 1];

async function modelWhere(ns: string, name: string, check: (m: Model) => boolean, what: string, timeoutMs = 10_000 * T): Promise<Model> {
  return waitFor(
    async () => {
      const m = await getModel(cluster, ns, name);
      return m && check(m) ? m : undefined;
    },
    { timeoutMs, message: what },
  );
}

async function eventsFor(ns: string, name: string): Promise<{ reason: string; message: string; type: string }[]> {
  const list = await cluster.client.list<KubeObject & { reason: string; message: string; type: string; involvedObject: { name: string; kind: string } }>(
    RESOURCES.events,
    ns,
  );
  return list.items.filter((e) => e.involvedObject.kind === "Model" && e.involvedObject.name === name);
}

describe.skipIf(NO_CLUSTER)("a Model applied", () => {
  it("gets a Deployment running `corral runtime` and a Service, both owned by it", async () => {
    const ns = await cluster.namespace();
    await operator(ns);
    const model = await createModel(cluster, ns, "tiny", {
      modelId: "corral/tiny",
      parallel: 2,
      resources: { cpu: "1", memory: "1Gi" },
      env: [{ name: "HF_TOKEN", valueFrom: { secretKeyRef: { name: "hf", key: "token", optional: true } } }],
    });

    const d = await waitFor(() => deployment(ns, "tiny"), { timeoutMs: 10_000 * T, message: "no Deployment" });
    const s = await waitFor(() => service(ns, "tiny"), { timeoutMs: 10_000 * T, message: "no Service" });
    for (const child of [d, s]) {
      expect(child.metadata.ownerReferences).toEqual([
        { apiVersion: "corral.dev/v1alpha1", kind: "Model", name: "tiny", uid: model.metadata.uid, controller: true, blockOwnerDeletion: true },
      ]);
    }
    const c = d.spec.template.spec.containers[0];
    expect(c.image).toBe("corral:test");
    expect(c.command).toEqual(["corral"]);
    expect(argValue(c.args, "--model")).toBe("hf:corral/test/model.gguf");
    expect(argValue(c.args, "--model-id")).toBe("corral/tiny");
    expect(argValue(c.args, "--parallel")).toBe("2");
    expect(c.resources).toEqual({ requests: { cpu: "1", memory: "1Gi" }, limits: { cpu: "1", memory: "1Gi" } });
    expect(c.readinessProbe.httpGet.path).toBe("/readyz");
    expect(c.env).toContainEqual({ name: "HF_TOKEN", valueFrom: { secretKeyRef: { name: "hf", key: "token", optional: true } } });
    expect(d.spec.replicas).toBe(1);
    expect(s.spec?.selector).toEqual({ "corral.dev/model": "tiny" });
    expect(s.spec?.ports?.[0]).toMatchObject({ name: "http", port: 8080, targetPort: "http" });

    const m = await modelWhere(ns, "tiny", (x) => x.status?.observedGeneration === 1, "no status");
    expect(m.status).toMatchObject({ modelId: "corral/tiny", endpoint: `http://tiny.${ns}.svc:8080`, selector: "corral.dev/model=tiny", observedGeneration: 1 });
    // On a real cluster the test image does not exist: the pod cannot pull it (Failed, with the reason).
    expect(E2E_CLUSTER ? ["Pending", "Loading", "Failed"] : ["Pending", "Loading"]).toContain(m.status?.phase);
    expect(condition(m, "Ready")?.status).toBe("False");
    await waitFor(async () => (await eventsFor(ns, "tiny")).some((e) => e.reason === "Created" && e.message === "created Deployment tiny, Service tiny"), {
      timeoutMs: 5000 * T,
      message: "no Created event",
    });
  });

  it.skipIf(E2E_CLUSTER)("becomes Ready when a pod is, with the endpoint in the status and an event", async () => {
    const ns = await cluster.namespace();
    await operator(ns);
    await createModel(cluster, ns, "ready");
    await waitFor(async () => (await markPodsReady(cluster, ns, "ready")) > 0, { message: "no pod" });
    const m = await modelWhere(ns, "ready", (x) => x.status?.phase === "Ready", "not Ready");
    expect(m.status).toMatchObject({ replicas: 1, readyReplicas: 1, ready: "1/1" });
    expect(condition(m, "Ready")).toMatchObject({ status: "True", reason: "ReplicasReady" });
    expect(condition(m, "Ready")?.message).toContain(`http://ready.${ns}.svc:8080`);
    await modelWhere(ns, "ready", (x) => condition(x, "Progressing")?.reason === "RolloutComplete", "rollout not complete");
    await waitFor(async () => (await eventsFor(ns, "ready")).some((e) => e.reason === "Ready" && e.type === "Normal"), { message: "no Ready event" });
  });

  it.skipIf(E2E_CLUSTER)("reports download progress and a model that fails to load, from the pods' /info", async () => {
    const ns = await cluster.namespace();
    let info: RuntimeInfo = { state: "downloading", progress: { bytes_done: 512 * 1024 ** 2, bytes_total: 1024 ** 3 } };
    const probed: string[] = [];
    await operator(ns, { runtimePort: 18080 }, async (url) => {
      probed.push(url);
      return info;
    });
    await createModel(cluster, ns, "dl");
    const pod = await waitFor(async () => (await cluster.client.list<Pod>(RESOURCES.pods, ns)).items[0], { message: "no pod" });
    await setPodReady(cluster.client, ns, pod.metadata.name, false, { podIP: "127.0.0.1" });
    const m = await modelWhere(ns, "dl", (x) => x.status?.phase === "Downloading", "not Downloading");
    expect(condition(m, "Ready")?.message).toBe(`pod ${pod.metadata.name} is downloading hf:corral/test/model.gguf: 512.0 MiB of 1.0 GiB (50%)`);
    expect(probed[0]).toBe("http://127.0.0.1:18080");
    info = { state: "failed", failure: "file is not a GGUF model" };
    const failed = await modelWhere(ns, "dl", (x) => x.status?.phase === "Failed", "not Failed");
    expect(condition(failed, "Degraded")).toMatchObject({ status: "True", reason: "ModelLoadFailed" });
    await waitFor(async () => (await eventsFor(ns, "dl")).some((e) => e.type === "Warning" && e.message.includes("file is not a GGUF model")), {
      message: "no Warning event",
    });
  });
});

describe.skipIf(NO_CLUSTER)("changes", () => {
  it("a spec change rolls the Deployment and moves observedGeneration; a restart and a scale do not roll it", async () => {
    const ns = await cluster.namespace();
    const first = await operator(ns);
    await createModel(cluster, ns, "roll", { parallel: 2 });
    const before = await waitFor(() => deployment(ns, "roll"), { timeoutMs: 10_000 * T });
    await modelWhere(ns, "roll", (x) => x.status?.observedGeneration === 1, "no status");

    // Restart: the new operator finds the children as it wants them (the server's defaults
    // included) and writes none; through the proxy (where there is one) its requests are counted.
    // (The status may still catch up with the Deployment controller's latest status.)
    await first.close();
    cluster.proxy?.resetRequestLog();
    const second = await operator(ns, {}, undefined, cluster.proxy?.kubeConfig);
    await waitFor(() => second.synced() && second.isLeader(), { timeoutMs: 10_000 * T });
    await second.queue.idle();
    await new Promise((resolve) => setTimeout(resolve, 300));
    const afterRestart = (await deployment(ns, "roll"))!;
    expect(afterRestart.metadata.generation).toBe(before.metadata.generation);
    if (cluster.proxy) {
      const children = ["deployments.apps", "services", "persistentvolumeclaims"];
      const writes = cluster.proxy.requestLog.filter((r) => ["create", "update", "patch", "delete"].includes(r.verb) && children.includes(r.resource!));
      expect(writes.map((r) => `${r.verb} ${r.resource}/${r.name ?? ""}${r.subresource ? `/${r.subresource}` : ""}`)).toEqual([]);
    }

    // A spec change: new arguments, a new generation, a rollout event.
    const m = (await getModel(cluster, ns, "roll"))!;
    await cluster.client.replace(MODELS, { ...m, spec: { ...m.spec, parallel: 6 } });
    const after = await waitFor(
      async () => {
        const d = await deployment(ns, "roll");
        return d && argValue(d.spec.template.spec.containers[0].args, "--parallel") === "6" ? d : undefined;
      },
      { timeoutMs: 10_000 * T, message: "the Deployment did not roll" },
    );
    expect(after.metadata.generation).toBeGreaterThan(before.metadata.generation!);
    await modelWhere(ns, "roll", (x) => x.status?.observedGeneration === 2, "observedGeneration did not move to 2");
    await waitFor(async () => (await eventsFor(ns, "roll")).some((e) => e.reason === "RollingOut" && e.message.includes("generation 2")), {
      message: "no RollingOut event",
    });

    // Scaling changes replicas only: the pod template is untouched.
    await cluster.client.mergePatch(MODELS, ns, "roll", { spec: { replicas: 2 } }, { subresource: "scale" });
    const scaled = await waitFor(
      async () => {
        const d = await deployment(ns, "roll");
        return d?.spec.replicas === 2 ? d : undefined;
      },
      { timeoutMs: 10_000 * T, message: "not scaled" },
    );
    expect(scaled.spec.template).toEqual(after.spec.template);
  });

  it("`kubectl scale` (the scale subresource) scales, and zero replicas is ScaledToZero", async () => {
    const ns = await cluster.namespace();
    await operator(ns);
    await createModel(cluster, ns, "sc");
    await waitFor(() => deployment(ns, "sc"), { timeoutMs: 10_000 * T });
    const scale = await cluster.client.request<Record<string, any>>(HttpMethod.GET, resourcePath(MODELS, ns, "sc", "scale"));
    expect(scale).toMatchObject({ kind: "Scale", apiVersion: "autoscaling/v1", spec: { replicas: 1 } });
    // What `kubectl scale model/sc --replicas=3` sends.
    await cluster.client.mergePatch(MODELS, ns, "sc", { spec: { replicas: 3 } }, { subresource: "scale" });
    await waitFor(async () => (await deployment(ns, "sc"))?.spec.replicas === 3, { timeoutMs: 10_000 * T, message: "Deployment not at 3" });
    const m = await modelWhere(ns, "sc", (x) => x.status?.ready?.endsWith("/3") === true, "status not at 3");
    expect(m.spec.replicas).toBe(3);
    // The scale's status.replicas is the Model's status.replicas: the pods that exist, which
    // follow once the ReplicaSet controller has made them.
    await waitFor(
      async () => {
        const status = await cluster.client.request<Record<string, any>>(HttpMethod.GET, resourcePath(MODELS, ns, "sc", "scale"));
        expect(status.status).toMatchObject({ replicas: 3, selector: "corral.dev/model=sc" });
        return true;
      },
      { timeoutMs: 10_000 * T, message: "the scale's status is not at 3" },
    );

    await cluster.client.mergePatch(MODELS, ns, "sc", { spec: { replicas: 0 } }, { subresource: "scale" });
    const zero = await modelWhere(ns, "sc", (x) => x.status?.phase === "ScaledToZero", "not ScaledToZero");
    expect(condition(zero, "Ready")).toMatchObject({ status: "False", reason: "ScaledToZero" });
    expect((await deployment(ns, "sc"))!.spec.replicas).toBe(0);
  });

  it("minReplicas and maxReplicas bound what runs", async () => {
    const ns = await cluster.namespace();
    await operator(ns);
    await createModel(cluster, ns, "bounded", { replicas: 0, minReplicas: 1, maxReplicas: 2 });
    await waitFor(async () => (await deployment(ns, "bounded"))?.spec.replicas === 1, { timeoutMs: 10_000 * T, message: "not at minReplicas" });
    await cluster.client.mergePatch(MODELS, ns, "bounded", { spec: { replicas: 5 } });
    await waitFor(async () => (await deployment(ns, "bounded"))?.spec.replicas === 2, { timeoutMs: 10_000 * T, message: "not at maxReplicas" });
  });

});

describe.skipIf(NO_CLUSTER)("robustness", () => {
  it.skipIf(E2E_CLUSTER)("an operator restarted mid-reconcile makes no duplicates", async () => {
    const ns = await cluster.namespace();
    const proxy = cluster.proxy!;
    // The first operator gets the Deployment in, then every Service write fails.
    proxy.injectFault({ verb: "patch", resource: "services", namespace: ns, status: 500, message: "etcdserver: request timed out", times: 1000 });
    const first = await operator(ns, {}, undefined, proxy.kubeConfig);
    await createModel(cluster, ns, "dup", { replicas: 2 });
    await waitFor(() => deployment(ns, "dup"), { message: "no Deployment" });
    await waitFor(() => first.metrics.reconciles.get().then((m) => m.values.some((v) => v.labels.result === "error" && v.value > 0)), {
      message: "the Service write never failed",
    });
    await first.abandon();
    proxy.clearFaults();

    const second = await operator(ns, { identity: "second" });
    await waitFor(() => service(ns, "dup"), { timeoutMs: 10_000, message: "no Service after the restart" });
    await second.queue.idle();
    await waitFor(async () => (await markPodsReady(cluster, ns, "dup")) === 2, { message: "not 2 pods" });
    await modelWhere(ns, "dup", (x) => x.status?.phase === "Ready" && x.status.readyReplicas === 2, "not Ready");
    expect((await cluster.client.list(RESOURCES.deployments, ns)).items).toHaveLength(1);
    expect((await cluster.client.list(RESOURCES.services, ns)).items).toHaveLength(1);
    expect((await cluster.client.list(RESOURCES.pods, ns)).items).toHaveLength(2);
  });

  it("a Deployment of the same name that is not the Model's is reported, not taken over", async () => {
    const ns = await cluster.namespace();
    await cluster.client.create(RESOURCES.deployments, ns, {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "taken", namespace: ns },
      spec: {
        replicas: 0,
        selector: { matchLabels: { app: "other" } },
        template: { metadata: { labels: { app: "other" } }, spec: { containers: [{ name: "other", image: "nginx" }] } },
      },
    });
    await operator(ns);
    await createModel(cluster, ns, "taken");
    const m = await modelWhere(ns, "taken", (x) => x.status?.phase === "Failed", "not Failed");
    expect(condition(m, "Degraded")).toMatchObject({ status: "True", reason: "ChildConflict" });
    expect(condition(m, "Degraded")?.message).toBe(`Deployment ${ns}/taken already exists and is not managed by Corral: delete or rename it, or rename the Model`);
    expect((await deployment(ns, "taken"))!.spec.template.spec.containers[0].image).toBe("nginx");

    await cluster.client.delete(RESOURCES.deployments, ns, "taken");
    await waitFor(async () => (await deployment(ns, "taken"))?.spec.template.spec.containers[0].image === "corral:test", {
      timeoutMs: 10_000 * T,
      message: "the Model did not get its Deployment once the name was free",
    });
  });

  it.skipIf(E2E_CLUSTER)("reports what the API server refuses, telling a spec problem from a permission problem", async () => {
    const ns = await cluster.namespace();
    const proxy = cluster.proxy!;
    proxy.injectFault({ verb: "patch", resource: "deployments.apps", namespace: ns, name: "invalid", status: 422, reason: "Invalid", message: 'Deployment.apps "invalid" is invalid: spec.template.spec.priorityClassName: Invalid value', times: 1000 });
    proxy.injectFault({ verb: "patch", resource: "deployments.apps", namespace: ns, name: "denied", status: 403, reason: "Forbidden", message: 'deployments.apps "denied" is forbidden: User "system:serviceaccount:corral:operator" cannot patch resource', times: 1000 });
    await operator(ns, {}, undefined, proxy.kubeConfig);
    await createModel(cluster, ns, "invalid");
    await createModel(cluster, ns, "denied");
    const invalid = await modelWhere(ns, "invalid", (x) => x.status?.phase === "Failed", "not Failed");
    expect(condition(invalid, "Degraded")).toMatchObject({ status: "True", reason: "Rejected" });
    expect(condition(invalid, "Degraded")?.message).toContain("spec.template.spec.priorityClassName: Invalid value");
    const denied = await modelWhere(ns, "denied", (x) => x.status?.phase === "Failed", "not Failed");
    expect(condition(denied, "Degraded")).toMatchObject({ status: "True", reason: "Forbidden" });
    expect(condition(denied, "Degraded")?.message).toContain("Check the operator's RBAC");
    proxy.clearFaults();
  });

  it("serves health, readiness and metrics", async () => {
    const ns = await cluster.namespace();
    const op = await operator(ns);
    await waitFor(async () => (await fetch(`${op.url}/readyz`)).status === 200, { timeoutMs: 10_000 * T, message: "never ready" });
    const health = (await (await fetch(`${op.url}/healthz`)).json()) as Record<string, unknown>;
    expect(health).toMatchObject({ status: "alive", identity: op.identity });
    await createModel(cluster, ns, "metered");
    await modelWhere(ns, "metered", (x) => x.status !== undefined, "no status");
    const metrics = await (await fetch(`${op.url}/metrics`)).text();
    expect(metrics).toMatch(/corral_operator_reconciles_total\{result="success"\} [1-9]/);
    expect(metrics).toContain("corral_operator_leader 1");
    expect(metrics).toMatch(E2E_CLUSTER ? /corral_operator_models\{phase="\w+"\} 1/ : /corral_operator_models\{phase="Pending"\} 1/);
    expect(metrics).toMatch(/corral_operator_api_requests_total\{method="PATCH",code="200"\} [1-9]/);
  });
});

// Last: on a fresh control plane it waits for the garbage collector to discover the Model type.
describe.skipIf(NO_CLUSTER)("deletion", () => {
  it("deleting the Model deletes its Deployment, Service, pods and cache claim", async () => {
    const ns = await cluster.namespace();
    await operator(ns);
    await createModel(cluster, ns, "doomed", { cache: { size: "1Gi" } });
    await waitFor(() => deployment(ns, "doomed"), { timeoutMs: 10_000 * T });
    await waitFor(() => service(ns, "doomed"), { timeoutMs: 10_000 * T });
    const pvc = await waitFor(() => cluster.client.get<PersistentVolumeClaim>(RESOURCES.persistentVolumeClaims, ns, "doomed-cache"), { timeoutMs: 10_000 * T });
    expect(pvc.spec).toMatchObject({ accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } } });
    expect((await deployment(ns, "doomed"))!.spec.template.spec.volumes[0]).toEqual({ name: "models", persistentVolumeClaim: { claimName: "doomed-cache" } });

    // Before kube-controller-manager's garbage collector has discovered the Model type (it looks
    // every 30 s), a deleted Model's children stay: a cluster whose CRD was just installed.
    await cluster.modelsGarbageCollected();
    await cluster.client.delete(MODELS, ns, "doomed");
    await waitFor(
      async () =>
        (await gone(cluster, RESOURCES.deployments, ns, "doomed")) &&
        (await gone(cluster, RESOURCES.services, ns, "doomed")) &&
        (await gone(cluster, RESOURCES.persistentVolumeClaims, ns, "doomed-cache")),
      { timeoutMs: 20_000 * T, message: "children left behind" },
    );
    // Pods on a whole cluster take their grace period to go; the control plane's are never started.
    if (!E2E_CLUSTER) await waitFor(async () => (await cluster.client.list(RESOURCES.pods, ns)).items.length === 0, { timeoutMs: 10_000, message: "pods left behind" });
  });
});
