// common/kube/rbac.ts allows every call the operator and the router's Kubernetes backend make, and no
// rule is wider than those calls. The evidence is the real API server's audit log: each process
// runs in-process as its own ServiceAccount (a TokenRequest token), bound to Roles made from
// common/kube/rbac.ts (the chart's Roles are the same lists: test/chart/chart.test.ts compares them,
// and test/chart/cluster.test.ts runs this life cycle as the chart's ServiceAccounts), through a
// Model's whole life; the real RBAC authorizer answers every call.

import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KubeClient, RESOURCES, errorCode, type ResourceType } from "../../common/kube/client.js";
import { OPERATOR_LEADER_ELECTION_RULES, OPERATOR_RULES, ROUTER_RULES, allows, type PolicyRule } from "../../common/kube/rbac.js";
import { installCrd, realKube } from "../kube/cluster.js";
import { auditEntries, forbidden, modelLifeCycle, serviceAccountKubeConfig, type AuditEntry, type ServiceAccountKube } from "../kube/chart.js";
import { testOperatorConfig } from "../helpers/config.js";

const kube = realKube();

const RBAC = (plural: string, kind: string): ResourceType => ({ group: "rbac.authorization.k8s.io", version: "v1", plural, kind, namespaced: true });
const ROLES = RBAC("roles", "Role");
const ROLE_BINDINGS = RBAC("rolebindings", "RoleBinding");
const SERVICE_ACCOUNTS: ResourceType = { group: "", version: "v1", plural: "serviceaccounts", kind: "ServiceAccount", namespaced: true };

/** The RBAC attributes of an audited request: API group, resource[/subresource], verbs authorised. */
export function attributes(entry: AuditEntry): { group: string; resource: string; verbs: string[] } | undefined {
  if (!entry.resource) return undefined; // discovery and other non-resource URLs
  const resource = entry.subresource ? `${entry.resource}/${entry.subresource}` : entry.resource;
  // A server-side apply that created its object is authorised as create too.
  const verbs = entry.verb === "patch" && entry.code === 201 ? ["patch", "create"] : [entry.verb];
  return { group: entry.apiGroup, resource, verbs };
}

/** Calls that none of `rules` allows. */
export function uncovered(entries: readonly AuditEntry[], rules: readonly PolicyRule[]): string[] {
  const missing = new Set<string>();
  for (const entry of entries) {
    const a = attributes(entry);
    if (!a) continue;
    for (const verb of a.verbs) if (!allows(rules, a.group, a.resource, verb, entry.name)) missing.add(`${verb} ${a.group || "core"}/${a.resource}`);
  }
  return [...missing];
}

/** Rule verbs no call used (rules needed by admission only are listed in `except`). */
function unusedRules(entries: readonly AuditEntry[], rules: readonly PolicyRule[], except: string[] = []): string[] {
  const used = new Set(entries.flatMap((e) => (attributes(e)?.verbs ?? []).map((v) => `${v} ${attributes(e)!.group}/${attributes(e)!.resource}`)));
  const unused: string[] = [];
  for (const rule of rules) {
    for (const resource of rule.resources) {
      if (except.includes(resource)) continue;
      for (const verb of rule.verbs) if (!used.has(`${verb} ${rule.apiGroups[0]}/${resource}`)) unused.push(`${verb} ${rule.apiGroups[0] || "core"}/${resource}`);
    }
  }
  return unused;
}

describe.skipIf(!kube)("common/kube/rbac.ts against the real authorizer", () => {
  const namespace = `rbac-${randomBytes(3).toString("hex")}`;
  const admin = kube && new KubeClient(kube.kubeConfig);
  let operatorSA: ServiceAccountKube;
  let routerSA: ServiceAccountKube;

  /** A ServiceAccount bound to one Role per list of rules, all made from common/kube/rbac.ts. */
  async function boundServiceAccount(name: string, roles: Record<string, readonly PolicyRule[]>): Promise<ServiceAccountKube> {
    const apply = (rt: ResourceType, object: object) => admin!.apply(rt, object as never, { fieldManager: "corral-tests", force: true });
    await apply(SERVICE_ACCOUNTS, { apiVersion: "v1", kind: "ServiceAccount", metadata: { name, namespace } });
    for (const [role, rules] of Object.entries(roles)) {
      await apply(ROLES, { apiVersion: "rbac.authorization.k8s.io/v1", kind: "Role", metadata: { name: role, namespace }, rules });
      await apply(ROLE_BINDINGS, {
        apiVersion: "rbac.authorization.k8s.io/v1",
        kind: "RoleBinding",
        metadata: { name: role, namespace },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: role },
        subjects: [{ kind: "ServiceAccount", name, namespace }],
      });
    }
    return serviceAccountKubeConfig(kube!, namespace, name);
  }

  beforeAll(async () => {
    await admin!.create(RESOURCES.namespaces, undefined, { apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } });
    await installCrd(admin!);
    operatorSA = await boundServiceAccount("corral-operator", { "corral-operator": OPERATOR_RULES, "corral-operator-leader-election": OPERATOR_LEADER_ELECTION_RULES });
    routerSA = await boundServiceAccount("corral-router", { "corral-router": ROUTER_RULES });
  });
  afterAll(async () => {
    await admin?.delete(RESOURCES.namespaces, undefined, namespace).catch(() => undefined);
  });

  it("a refused call shows in the audit log as the ServiceAccount's 403", async () => {
    const client = new KubeClient(routerSA.kubeConfig);
    const error = await client.list(RESOURCES.deployments, namespace).then(() => undefined, (e: unknown) => e);
    expect(errorCode(error)).toBe(403);
    const refused = forbidden(auditEntries(kube!, { user: routerSA.username }));
    expect(refused).toEqual([`${routerSA.username}: list apps/deployments /apis/apps/v1/namespaces/${namespace}/deployments?limit=500 -> 403`]);
  });

  it("every call of a Model's whole life is allowed, and every rule is used", async () => {
    const started = Date.now();
    const report = await modelLifeCycle({
      kube: kube!,
      namespace,
      operator: { kubeConfig: operatorSA.kubeConfig, config: testOperatorConfig({ namespaces: [namespace], leaseNamespace: namespace, leaseName: "corral-operator", image: "corral:test" }) },
      router: { kubeConfig: routerSA.kubeConfig },
    });
    console.log(`[rbac] a Model's life in ${((Date.now() - started) / 1000).toFixed(1)} s; steps (ms) ${JSON.stringify(report.steps)}`);
    const operatorCalls = auditEntries(kube!, { user: operatorSA.username, since: started });
    const routerCalls = auditEntries(kube!, { user: routerSA.username, since: started });
    expect(operatorCalls.length).toBeGreaterThan(10);
    expect(routerCalls.length).toBeGreaterThan(3);
    // The real authorizer refused nothing…
    expect(forbidden([...operatorCalls, ...routerCalls]), "calls the real authorizer refused").toEqual([]);
    // …and each call is one the lists allow (so the lists, not some wider binding, are what is proven).
    const operatorRules = [...OPERATOR_RULES, ...OPERATOR_LEADER_ELECTION_RULES];
    expect(uncovered(operatorCalls, operatorRules)).toEqual([]);
    expect(uncovered(routerCalls, ROUTER_RULES)).toEqual([]);
    // The rules are not wider than the calls: every verb of every rule was used at least once
    // (models/finalizers is needed by admission for blockOwnerDeletion, not sent as a request).
    expect(unusedRules(operatorCalls, operatorRules, ["models/finalizers"])).toEqual([]);
    expect(unusedRules(routerCalls, ROUTER_RULES)).toEqual([]);
  }, 180_000);
});
