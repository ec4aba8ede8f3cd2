/**
 * The Kubernetes permissions Corral's processes need, derived from the calls they make. The Helm
 * chart's Roles (charts/corral/templates/rbac.yaml) spell out the same lists: Helm cannot import
 * TypeScript, so test/chart/chart.test.ts renders the chart and checks its Roles equal these, and
 * test/operator/rbac.test.ts checks these against every request the operator and the router's
 * Kubernetes backend send to a real API server.
 *
 * - list/watch: informers (client-side caches); nothing is read with a plain get except the Lease.
 * - create + patch: server-side apply (a PATCH that creates the object when absent is authorised
 *   as create as well).
 * - models/finalizers update: owner references with blockOwnerDeletion need it on the owner
 *   (the OwnerReferencesPermissionEnforcement admission plugin).
 */

export interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}

/** `corral operator`: in each watched namespace (a ClusterRole when it watches all namespaces). */
export const OPERATOR_RULES: readonly PolicyRule[] = [
  { apiGroups: ["corral.dev"], resources: ["models"], verbs: ["list", "watch"] },
  { apiGroups: ["corral.dev"], resources: ["models/status"], verbs: ["patch"] },
  { apiGroups: ["corral.dev"], resources: ["models/finalizers"], verbs: ["update"] },
  { apiGroups: ["apps"], resources: ["deployments"], verbs: ["list", "watch", "create", "patch"] },
  { apiGroups: [""], resources: ["services", "persistentvolumeclaims"], verbs: ["list", "watch", "create", "patch"] },
  { apiGroups: [""], resources: ["pods"], verbs: ["list", "watch"] },
  { apiGroups: [""], resources: ["events"], verbs: ["create", "patch"] },
];

/** `corral operator` leader election: in the Lease's namespace only. */
export const OPERATOR_LEADER_ELECTION_RULES: readonly PolicyRule[] = [
  { apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["get", "create", "update"] },
];

/** `corral router --backend kubernetes`: in its namespace. */
export const ROUTER_RULES: readonly PolicyRule[] = [
  { apiGroups: ["corral.dev"], resources: ["models"], verbs: ["list", "watch"] },
  { apiGroups: ["corral.dev"], resources: ["models/scale"], verbs: ["patch"] },
  { apiGroups: [""], resources: ["pods"], verbs: ["list", "watch"] },
  // The current model, shared by the router replicas (see router/backends/kubernetes.ts).
  { apiGroups: [""], resources: ["configmaps"], verbs: ["list", "watch", "create", "patch"] },
];

/** True when one of `rules` allows `verb` on `resource` (e.g. "models/status") of `apiGroup`. */
export function allows(rules: readonly PolicyRule[], apiGroup: string, resource: string, verb: string, name?: string): boolean {
  return rules.some(
    (rule) =>
      (rule.apiGroups.includes(apiGroup) || rule.apiGroups.includes("*")) &&
      (rule.resources.includes(resource) || rule.resources.includes("*")) &&
      (rule.verbs.includes(verb) || rule.verbs.includes("*")) &&
      (!rule.resourceNames || (name !== undefined && rule.resourceNames.includes(name))),
  );
}
