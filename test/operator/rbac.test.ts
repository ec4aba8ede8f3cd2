// common/rbac.ts must allow every request the operator sends, and nothing needs more: the fake
// API server logs each request; a whole Model life cycle is driven in-process (not over HTTP), so
// every logged request is the operator's.

import { afterAll, beforeAll, expect, it } from "vitest";
import { pino } from "pino";
import { OPERATOR_LEADER_ELECTION_RULES, OPERATOR_RULES, ROUTER_RULES, allows, type PolicyRule } from "../../common/rbac.js";
import { KubernetesBackend } from "../../router/backends/kubernetes.js";
import { loadModelCrd } from "../../common/model-resource.js";
import { startFakeKube, waitFor, type FakeKube, type RequestLogEntry } from "../fake-kube/index.js";
import { startOperator, type TestCluster } from "./harness.js";
import { KubeClient } from "../../common/kube-client.js";

let fake: FakeKube;
let cluster: TestCluster;

beforeAll(async () => {
  fake = await startFakeKube({ deploymentController: true, crdInitDelayMs: 0, namespaces: ["rbac"] });
  fake.create(loadModelCrd());
  fake.flushControllers();
  cluster = { kubeConfig: fake.kubeConfig, client: new KubeClient(fake.kubeConfig), fake, namespace: async () => "rbac", close: () => fake.close() };
});
afterAll(async () => fake?.close());

/** The RBAC attributes of a logged request: API group, resource[/subresource], verb. */
export function attributes(entry: RequestLogEntry): { group: string; resource: string; verbs: string[] } | undefined {
  if (!entry.resource || entry.verb === "discovery" || entry.verb === "other") return undefined;
  const [plural, ...group] = entry.resource.split(".");
  const resource = entry.subresource ? `${plural}/${entry.subresource}` : plural!;
  // A server-side apply that created its object is authorised as create too.
  const verbs = entry.verb === "patch" && entry.status === 201 ? ["patch", "create"] : [entry.verb];
  return { group: group.join("."), resource, verbs };
}

export function uncovered(log: readonly RequestLogEntry[], rules: readonly PolicyRule[]): string[] {
  const missing = new Set<string>();
  for (const entry of log) {
    const a = attributes(entry);
    if (!a) continue;
    for (const verb of a.verbs) if (!allows(rules, a.group, a.resource, verb)) missing.add(`${verb} ${a.group || "core"}/${a.resource}`);
  }
  return [...missing];
}

/** Rules none of whose verbs the log used (rules needed by admission only are listed in `except`). */
function unusedRules(log: readonly RequestLogEntry[], rules: readonly PolicyRule[], except: string[] = []): string[] {
  const used = new Set(log.flatMap((e) => (attributes(e)?.verbs ?? []).map((v) => `${v} ${attributes(e)!.group}/${attributes(e)!.resource}`)));
  const unused: string[] = [];
  for (const rule of rules) {
    for (const resource of rule.resources) {
      if (except.includes(resource)) continue;
      for (const verb of rule.verbs) if (!used.has(`${verb} ${rule.apiGroups[0]}/${resource}`)) unused.push(`${verb} ${rule.apiGroups[0] || "core"}/${resource}`);
    }
  }
  return unused;
}

it("the router's rules cover every request of the Kubernetes backend", async () => {
  fake.create({ apiVersion: "v1", kind: "Namespace", metadata: { name: "rbac-router" } });
  fake.create({ apiVersion: "corral.dev/v1alpha1", kind: "Model", metadata: { name: "r", namespace: "rbac-router" }, spec: { source: "hf:a/b/c.gguf", replicas: 0 } });
  fake.resetRequestLog();
  const backend = new KubernetesBackend({ client: new KubeClient(fake.kubeConfig), namespace: "rbac-router", logger: pino({ level: "silent" }) });
  await backend.start();
  try {
    const loading = backend.load("r", new AbortController().signal);
    await waitFor(() => fake.get("models.corral.dev", "rbac-router", "r")?.spec?.replicas === 1, { message: "not scaled up" });
    fake.create({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "r-1", namespace: "rbac-router", labels: { "corral.dev/model": "r" } },
      spec: { containers: [{ name: "runtime", image: "x", ports: [{ name: "http", containerPort: 8080 }] }] },
    });
    fake.setPodReady("rbac-router", "r-1", true, { podIP: "127.0.0.1" });
    await loading;
    await backend.unload("r");
    await backend.load("r", AbortSignal.timeout(50)).catch(() => undefined); // the ConfigMap exists now: patched
  } finally {
    await backend.close();
  }
  expect(uncovered(fake.requestLog, ROUTER_RULES)).toEqual([]);
  expect(unusedRules(fake.requestLog, ROUTER_RULES)).toEqual([]);
});

it("the operator's rules cover every request of a Model's whole life", async () => {
  fake.resetRequestLog();
  const op = await startOperator(cluster, "rbac", { identity: "rbac" });
  try {
    fake.create({ apiVersion: "corral.dev/v1alpha1", kind: "Model", metadata: { name: "m", namespace: "rbac" }, spec: { source: "hf:a/b/c.gguf", cache: { size: "1Gi" } } });
    await waitFor(() => fake.list("pods", "rbac").length === 1, { message: "no pod" });
    fake.setPodReady("rbac", fake.list("pods", "rbac")[0]!.metadata.name, true, { podIP: "127.0.0.1" });
    await waitFor(() => fake.get("models.corral.dev", "rbac", "m")?.status?.phase === "Ready", { message: "not Ready" });
    const model = fake.get("models.corral.dev", "rbac", "m")!;
    fake.update({ ...model, spec: { ...model.spec, parallel: 2, replicas: 0 } });
    await waitFor(() => fake.get("models.corral.dev", "rbac", "m")?.status?.phase === "ScaledToZero", { message: "not scaled to zero" });
    // Scaled to zero a second time: the same event again, counted on the first one.
    fake.update({ ...fake.get("models.corral.dev", "rbac", "m")!, spec: { ...fake.get("models.corral.dev", "rbac", "m")!.spec, replicas: 1 } });
    await waitFor(() => fake.get("models.corral.dev", "rbac", "m")?.status?.phase !== "ScaledToZero", { message: "not scaled up" });
    fake.update({ ...fake.get("models.corral.dev", "rbac", "m")!, spec: { ...fake.get("models.corral.dev", "rbac", "m")!.spec, replicas: 0 } });
    await waitFor(() => fake.list("events", "rbac").some((e) => e.reason === "ScaledToZero" && e.count === 2), { message: "no repeated event" });
    fake.delete("models.corral.dev", "rbac", "m");
  } finally {
    await op.close();
  }
  const log = fake.requestLog;
  expect(log.length).toBeGreaterThan(10);
  expect(uncovered(log, [...OPERATOR_RULES, ...OPERATOR_LEADER_ELECTION_RULES])).toEqual([]);
  // And the rules are not wider than the calls: every rule's verb was used at least once
  // (models/finalizers is needed by admission for blockOwnerDeletion, not sent as a request).
  expect(unusedRules(log, [...OPERATOR_RULES, ...OPERATOR_LEADER_ELECTION_RULES], ["models/finalizers"])).toEqual([]);
});
