import { AppsV1Api, CoordinationV1Api, CoreV1Api, type V1Deployment, type V1Pod } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { type FakeKube, startFakeKube, waitFor } from "./index.js";
import { apiFailure } from "./test-helpers.js";

let fk: FakeKube;
let core: CoreV1Api;
let apps: AppsV1Api;

beforeAll(async () => {
  fk = await startFakeKube({ namespaces: ["crud"] });
  core = fk.kubeConfig.makeApiClient(CoreV1Api);
  apps = fk.kubeConfig.makeApiClient(AppsV1Api);
});

afterAll(async () => {
  await fk.close();
});

function deployment(name: string, extra: Partial<V1Deployment["spec"]> = {}): V1Deployment {
  return {
    metadata: { name, labels: { app: name } },
    spec: {
      selector: { matchLabels: { app: name } },
      template: { metadata: { labels: { app: name } }, spec: { containers: [{ name: "main", image: "nginx:1.27" }] } },
      ...extra,
    },
  };
}

function pod(name: string, labels: Record<string, string> = {}): V1Pod {
  return { metadata: { name, labels }, spec: { containers: [{ name: "c", image: "busybox:1.36" }] } };
}

describe("create, get, list, delete", () => {
  it("fills in server fields and defaults on create", async () => {
    const d = await apps.createNamespacedDeployment({ namespace: "crud", body: deployment("web") });
    expect(d.metadata?.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(d.metadata?.namespace).toBe("crud");
    expect(d.metadata?.generation).toBe(1);
    expect(Number(d.metadata?.resourceVersion)).toBeGreaterThan(0);
    expect(d.metadata?.creationTimestamp).toBeInstanceOf(Date);
    expect(d.spec?.replicas).toBe(1);
    expect(d.spec?.strategy?.type).toBe("RollingUpdate");
    expect(d.spec?.revisionHistoryLimit).toBe(10);
    expect(d.spec?.progressDeadlineSeconds).toBe(600);
    expect(d.spec?.template.spec?.containers[0]?.imagePullPolicy).toBe("IfNotPresent");
    expect(d.spec?.template.spec?.restartPolicy).toBe("Always");
    const got = await apps.readNamespacedDeployment({ namespace: "crud", name: "web" });
    expect(got.metadata?.resourceVersion).toBe(d.metadata?.resourceVersion);
  });

  it("generates names from generateName", async () => {
    const p = await core.createNamespacedPod({ namespace: "crud", body: { ...pod(""), metadata: { generateName: "gen-" } } });
    expect(p.metadata?.name).toMatch(/^gen-[bcdfghjklmnpqrstvwxz2456789]{5}$/);
    expect(p.status?.phase).toBe("Pending");
  });

  it("answers 404 with the apiserver's Status", async () => {
    const { code, status } = await apiFailure(() => apps.readNamespacedDeployment({ namespace: "crud", name: "nope" }));
    expect(code).toBe(404);
    expect(status).toEqual({
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: 'deployments.apps "nope" not found',
      reason: "NotFound",
      details: { name: "nope", group: "apps", kind: "deployments" },
      code: 404,
    });
    const corePod = await apiFailure(() => core.readNamespacedPod({ namespace: "crud", name: "nope" }));
    expect(corePod.status.message).toBe('pods "nope" not found');
    expect(corePod.status.details).toEqual({ name: "nope", kind: "pods" });
  });

  it("answers 409 AlreadyExists", async () => {
    await core.createNamespacedConfigMap({ namespace: "crud", body: { metadata: { name: "cm1" }, data: { a: "1" } } });
    const { code, status } = await apiFailure(() =>
      core.createNamespacedConfigMap({ namespace: "crud", body: { metadata: { name: "cm1" } } }),
    );
    expect(code).toBe(409);
    expect(status.reason).toBe("AlreadyExists");
    expect(status.message).toBe('configmaps "cm1" already exists');
    expect(status.details).toEqual({ name: "cm1", kind: "configmaps" });
  });

  it("refuses objects in a namespace that does not exist", async () => {
    const { code, status } = await apiFailure(() => core.createNamespacedPod({ namespace: "missing", body: pod("p") }));
    expect(code).toBe(404);
    expect(status.message).toBe('namespaces "missing" not found');
  });

  it("validates built-in objects with 422", async () => {
    const { code, status } = await apiFailure(() =>
      apps.createNamespacedDeployment({
        namespace: "crud",
        body: {
          metadata: { name: "Bad_Name" },
          spec: {
            selector: { matchLabels: { app: "x" } },
            template: { metadata: { labels: { app: "y" } }, spec: { containers: [{ name: "c", image: "i" }] } },
          },
        },
      }),
    );
    expect(code).toBe(422);
    expect(status.reason).toBe("Invalid");
    expect(status.message).toBe(
      `Deployment.apps "Bad_Name" is invalid: [metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*'), spec.template.metadata.labels: Invalid value: map[string]string{"app":"y"}: \`selector\` does not match template \`labels\`]`,
    );
    expect(status.details?.causes?.[1]).toEqual({
      reason: "FieldValueInvalid",
      message: 'Invalid value: map[string]string{"app":"y"}: `selector` does not match template `labels`',
      field: "spec.template.metadata.labels",
    });
  });

  it("lists with label selectors", async () => {
    await core.createNamespacedPod({ namespace: "crud", body: pod("l1", { tier: "web", env: "prod" }) });
    await core.createNamespacedPod({ namespace: "crud", body: pod("l2", { tier: "db", env: "prod" }) });
    await core.createNamespacedPod({ namespace: "crud", body: pod("l3", { tier: "web" }) });
    const names = async (labelSelector: string) =>
      (await core.listNamespacedPod({ namespace: "crud", labelSelector })).items.map((p) => p.metadata?.name).sort();
    expect(await names("tier=web")).toEqual(["l1", "l3"]);
    expect(await names("tier==web,env=prod")).toEqual(["l1"]);
    expect(await names("tier!=web,tier")).toEqual(["l2"]);
    expect(await names("tier in (db, web),env")).toEqual(["l1", "l2"]);
    expect(await names("tier notin (web),tier")).toEqual(["l2"]);
    expect(await names("tier,!env")).toEqual(["l3"]);
    const bad = await apiFailure(() => core.listNamespacedPod({ namespace: "crud", labelSelector: "tier in web" }));
    expect(bad.code).toBe(400);
  });

  it("lists with field selectors, and refuses unknown field labels", async () => {
    const list = await core.listNamespacedPod({ namespace: "crud", fieldSelector: "metadata.name=l2" });
    expect(list.items.map((p) => p.metadata?.name)).toEqual(["l2"]);
    const pending = await core.listPodForAllNamespaces({ fieldSelector: "status.phase=Pending,metadata.namespace=crud" });
    expect(pending.items.length).toBeGreaterThanOrEqual(3);
    const notRunning = await core.listNamespacedPod({ namespace: "crud", fieldSelector: "status.phase!=Running" });
    expect(notRunning.items.length).toBe(pending.items.length);
    const bad = await apiFailure(() => core.listNamespacedPod({ namespace: "crud", fieldSelector: "spec.foo=bar" }));
    expect(bad.code).toBe(400);
    expect(bad.status.message).toBe("field label not supported: spec.foo");
  });

  it("pages lists with limit and continue", async () => {
    const first = await core.listNamespacedPod({ namespace: "crud", limit: 2 });
    expect(first.items).toHaveLength(2);
    expect(first.metadata?._continue).toBeTruthy();
    expect(first.metadata?.remainingItemCount).toBeGreaterThan(0);
    const rest = await core.listNamespacedPod({ namespace: "crud", limit: 100, _continue: first.metadata!._continue! });
    const all = await core.listNamespacedPod({ namespace: "crud" });
    expect([...first.items, ...rest.items].map((p) => p.metadata?.name)).toEqual(all.items.map((p) => p.metadata?.name));
  });

  it("deletes: Pods answer with the object, Deployments with a Status", async () => {
    await core.createNamespacedPod({ namespace: "crud", body: pod("gone") });
    const deletedPod = await core.deleteNamespacedPod({ namespace: "crud", name: "gone" });
    expect(deletedPod.metadata?.name).toBe("gone");
    await apps.createNamespacedDeployment({ namespace: "crud", body: deployment("gone") });
    const st = await apps.deleteNamespacedDeployment({ namespace: "crud", name: "gone" });
    expect(st.status).toBe("Success");
    expect(st.details?.name).toBe("gone");
    expect(st.details?.kind).toBe("deployments");
    expect(fk.get("deployments.apps", "crud", "gone")).toBeUndefined();
  });

  it("keeps objects with finalizers until the finalizers are removed", async () => {
    await core.createNamespacedConfigMap({ namespace: "crud", body: { metadata: { name: "fin", finalizers: ["corral.dev/cleanup"] } } });
    await core.deleteNamespacedConfigMap({ namespace: "crud", name: "fin" });
    const terminating = await core.readNamespacedConfigMap({ namespace: "crud", name: "fin" });
    expect(terminating.metadata?.deletionTimestamp).toBeInstanceOf(Date);
    // new finalizers cannot be added while deleting
    terminating.metadata!.finalizers = ["corral.dev/cleanup", "corral.dev/other"];
    const refused = await apiFailure(() => core.replaceNamespacedConfigMap({ namespace: "crud", name: "fin", body: terminating }));
    expect(refused.code).toBe(422);
    expect(refused.status.message).toContain("no new finalizers can be added if the object is being deleted");
    terminating.metadata!.finalizers = [];
    await core.replaceNamespacedConfigMap({ namespace: "crud", name: "fin", body: terminating });
    const gone = await apiFailure(() => core.readNamespacedConfigMap({ namespace: "crud", name: "fin" }));
    expect(gone.code).toBe(404);
  });

  it("serves discovery for kubectl and KubernetesObjectApi", async () => {
    const res = await fetch(`${fk.url}/apis/apps/v1`);
    const list = (await res.json()) as { resources: { name: string; kind: string; group?: string; verbs: string[] }[] };
    expect(list.resources.find((r) => r.name === "deployments")?.verbs).toContain("watch");
    expect(list.resources.find((r) => r.name === "deployments/status")?.kind).toBe("Deployment");
    expect(list.resources.find((r) => r.name === "deployments/scale")).toMatchObject({ group: "autoscaling", kind: "Scale" });
    const groups = (await (await fetch(`${fk.url}/apis`)).json()) as { groups: { name: string }[] };
    expect(groups.groups.map((g) => g.name)).toEqual(
      expect.arrayContaining(["apps", "coordination.k8s.io", "discovery.k8s.io", "events.k8s.io", "apiextensions.k8s.io"]),
    );
    const version = (await (await fetch(`${fk.url}/version`)).json()) as { major: string };
    expect(version.major).toBe("1");
    expect((await fetch(`${fk.url}/nope`)).status).toBe(404);
  });

  it("answers 405 for a method a path does not allow", async () => {
    const res = await fetch(`${fk.url}/api/v1/namespaces/crud/pods/l1`, { method: "POST", body: "{}" });
    expect(res.status).toBe(405);
    expect(((await res.json()) as { reason: string }).reason).toBe("MethodNotAllowed");
  });
});

describe("update and optimistic concurrency", () => {
  it("answers 409 Conflict on a stale resourceVersion", async () => {
    const d = await apps.createNamespacedDeployment({ namespace: "crud", body: deployment("cc") });
    const stale = structuredClone(d);
    d.spec!.replicas = 2;
    await apps.replaceNamespacedDeployment({ namespace: "crud", name: "cc", body: d });
    stale.spec!.replicas = 3;
    const { code, status } = await apiFailure(() => apps.replaceNamespacedDeployment({ namespace: "crud", name: "cc", body: stale }));
    expect(code).toBe(409);
    expect(status).toEqual({
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message:
        'Operation cannot be fulfilled on deployments.apps "cc": the object has been modified; please apply your changes to the latest version and try again',
      reason: "Conflict",
      details: { name: "cc", group: "apps", kind: "deployments" },
      code: 409,
    });
  });

  it("does not write an update that changes nothing", async () => {
    const d = await apps.readNamespacedDeployment({ namespace: "crud", name: "cc" });
    const again = await apps.replaceNamespacedDeployment({ namespace: "crud", name: "cc", body: d });
    expect(again.metadata?.resourceVersion).toBe(d.metadata?.resourceVersion);
  });

  it("bumps generation on spec (and, for Deployments, annotation) changes only", async () => {
    let d = await apps.createNamespacedDeployment({ namespace: "crud", body: deployment("gen") });
    expect(d.metadata?.generation).toBe(1);
    d.metadata!.labels = { ...d.metadata!.labels, extra: "x" };
    d = await apps.replaceNamespacedDeployment({ namespace: "crud", name: "gen", body: d });
    expect(d.metadata?.generation).toBe(1);
    d.spec!.replicas = 3;
    d = await apps.replaceNamespacedDeployment({ namespace: "crud", name: "gen", body: d });
    expect(d.metadata?.generation).toBe(2);
    // the deployment strategy counts annotation changes as generation changes (they reach the ReplicaSet)
    d.metadata!.annotations = { note: "x" };
    d = await apps.replaceNamespacedDeployment({ namespace: "crud", name: "gen", body: d });
    expect(d.metadata?.generation).toBe(3);
    d.status = { observedGeneration: 3, replicas: 3 };
    d = await apps.replaceNamespacedDeploymentStatus({ namespace: "crud", name: "gen", body: d });
    expect(d.metadata?.generation).toBe(3);
    expect(d.status?.observedGeneration).toBe(3);
  });

  it("ignores status on main-resource writes and everything but status on /status", async () => {
    let d = await apps.readNamespacedDeployment({ namespace: "crud", name: "gen" });
    const rvBefore = d.metadata?.resourceVersion;
    d.status = { observedGeneration: 99 };
    d = await apps.replaceNamespacedDeployment({ namespace: "crud", name: "gen", body: d });
    expect(d.status?.observedGeneration).toBe(3);
    expect(d.metadata?.resourceVersion).toBe(rvBefore);
    d.spec!.replicas = 7;
    d.metadata!.labels = { changed: "yes" };
    d.status = { observedGeneration: 3, replicas: 1 };
    d = await apps.replaceNamespacedDeploymentStatus({ namespace: "crud", name: "gen", body: d });
    expect(d.spec?.replicas).toBe(3);
    expect(d.metadata?.labels?.changed).toBeUndefined();
    expect(d.status?.replicas).toBe(1);
    // pods: tests mark them ready through the status subresource
    const p = await core.readNamespacedPod({ namespace: "crud", name: "l1" });
    p.status = { phase: "Running", podIP: "10.1.2.3", conditions: [{ type: "Ready", status: "True" }] };
    const after = await core.replaceNamespacedPodStatus({ namespace: "crud", name: "l1", body: p });
    expect(after.status?.podIP).toBe("10.1.2.3");
    expect(after.status?.phase).toBe("Running");
  });

  it("serves the scale subresource of deployments", async () => {
    const scale = await apps.readNamespacedDeploymentScale({ namespace: "crud", name: "gen" });
    expect(scale).toMatchObject({ kind: "Scale", apiVersion: "autoscaling/v1", spec: { replicas: 3 }, status: { replicas: 1, selector: "app=gen" } });
    scale.spec!.replicas = 5;
    const updated = await apps.replaceNamespacedDeploymentScale({ namespace: "crud", name: "gen", body: scale });
    expect(updated.spec?.replicas).toBe(5);
    const d = await apps.readNamespacedDeployment({ namespace: "crud", name: "gen" });
    expect(d.spec?.replicas).toBe(5);
    expect(d.metadata?.generation).toBe(4);
    const stale = await apiFailure(() => apps.replaceNamespacedDeploymentScale({ namespace: "crud", name: "gen", body: scale }));
    expect(stale.code).toBe(409);
  });

  it("stores leases (leader election)", async () => {
    const coord = fk.kubeConfig.makeApiClient(CoordinationV1Api);
    const now = new Date();
    const lease = await coord.createNamespacedLease({
      namespace: "crud",
      body: { metadata: { name: "corral-operator" }, spec: { holderIdentity: "a", leaseDurationSeconds: 15, acquireTime: now, renewTime: now } },
    });
    expect(lease.spec?.holderIdentity).toBe("a");
    lease.spec!.holderIdentity = "b";
    const taken = await coord.replaceNamespacedLease({ namespace: "crud", name: "corral-operator", body: lease });
    expect(taken.spec?.holderIdentity).toBe("b");
    const conflict = await apiFailure(() => coord.replaceNamespacedLease({ namespace: "crud", name: "corral-operator", body: lease }));
    expect(conflict.code).toBe(409);
  });
});

describe("cluster details", () => {
  it("creates the default ServiceAccount and kube-root-ca.crt in each namespace", async () => {
    await core.createNamespace({ body: { metadata: { name: "fresh" } } });
    await waitFor(() => fk.get("serviceaccounts", "fresh", "default") && fk.get("configmaps", "fresh", "kube-root-ca.crt"));
  });

  it("deletes collections by label", async () => {
    await core.createNamespacedConfigMap({ namespace: "crud", body: { metadata: { name: "dc1", labels: { batch: "x" } } } });
    await core.createNamespacedConfigMap({ namespace: "crud", body: { metadata: { name: "dc2", labels: { batch: "x" } } } });
    await core.deleteCollectionNamespacedConfigMap({ namespace: "crud", labelSelector: "batch=x" });
    expect((await core.listNamespacedConfigMap({ namespace: "crud", labelSelector: "batch=x" })).items).toEqual([]);
  });

  it("allocates node ports and keeps allocated values on update", async () => {
    const svc = await core.createNamespacedService({
      namespace: "crud",
      body: { metadata: { name: "np" }, spec: { type: "NodePort", selector: { app: "x" }, ports: [{ port: 80, targetPort: 8080 }] } },
    });
    const nodePort = svc.spec?.ports?.[0]?.nodePort;
    expect(nodePort).toBeGreaterThanOrEqual(30000);
    const replaced = await core.replaceNamespacedService({
      namespace: "crud",
      name: "np",
      body: { metadata: { name: "np", labels: { v: "2" } }, spec: { type: "NodePort", selector: { app: "x" }, ports: [{ port: 80, targetPort: 8080 }] } },
    });
    expect(replaced.spec?.clusterIP).toBe(svc.spec?.clusterIP);
    expect(replaced.spec?.ports?.[0]?.nodePort).toBe(nodePort);
  });

  it("answers a watch from a future resourceVersion with 504, and accepts watch=1", async () => {
    const future = Number(fk.resourceVersion()) + 1000;
    const res = await fetch(`${fk.url}/api/v1/namespaces/crud/pods?watch=1&resourceVersion=${future}`);
    expect(res.status).toBe(504);
    expect(((await res.json()) as { message: string }).message).toBe(`Too large resource version: ${future}, current: ${fk.resourceVersion()}`);
    const ctl = new AbortController();
    const ok = await fetch(`${fk.url}/api/v1/namespaces/crud/pods?watch=1&resourceVersion=${fk.resourceVersion()}`, { signal: ctl.signal });
    expect(ok.status).toBe(200);
    expect(ok.headers.get("content-type")).toBe("application/json");
    ctl.abort();
  });
});

describe("test helpers", () => {
  it("counts requests per verb and injects faults", async () => {
    fk.resetRequestLog();
    await core.listNamespacedPod({ namespace: "crud" });
    await core.readNamespacedPod({ namespace: "crud", name: "l1" });
    expect(fk.requestCounts("pods")).toEqual({ list: 1, get: 1 });
    expect(fk.requestCount).toBe(2);
    fk.injectFault({ verb: "get", resource: "pods", status: 500, times: 1 });
    const failed = await apiFailure(() => core.readNamespacedPod({ namespace: "crud", name: "l1" }));
    expect(failed.code).toBe(500);
    await core.readNamespacedPod({ namespace: "crud", name: "l1" });
  });

  it("reads and writes the store directly", async () => {
    const p = fk.setPodReady("crud", "l2", true, { podIP: "10.0.0.42" });
    expect(p.status.podIP).toBe("10.0.0.42");
    const read = await core.readNamespacedPod({ namespace: "crud", name: "l2" });
    expect(read.status?.conditions?.find((c) => c.type === "Ready")?.status).toBe("True");
    expect(fk.list("pods", "crud").length).toBeGreaterThan(2);
    expect(fk.get("Pod", "crud", "l2")?.status.podIP).toBe("10.0.0.42");
  });
});
