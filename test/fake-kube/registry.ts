// The resource types the fake serves: built-ins and those registered by CRDs, and the
// discovery documents that describe them.

import { BUILTIN_HOOKS, type BuiltinHooks, coreToEventsV1, eventsV1ToCore, type NameRule } from "./builtins.js";
import { BuiltinType, SchemaType, type TypeNode } from "./managed.js";
import type { JSONSchema } from "./schema.js";
import type { Obj } from "./store.js";

export interface ScaleSpec {
  specReplicasPath: string;
  statusReplicasPath: string;
  labelSelectorPath?: string;
}

/** How metadata.generation moves on update. */
export type GenerationPolicy = "none" | "spec" | "specAndAnnotations" | "allButMetadataAndStatus";

export interface ResourceType {
  group: string;
  version: string;
  resource: string;
  kind: string;
  listKind: string;
  singular: string;
  namespaced: boolean;
  shortNames: string[];
  categories: string[];
  /** Has a /status subresource (main-resource writes ignore status). */
  status: boolean;
  scale?: ScaleSpec;
  generation: GenerationPolicy;
  /** Field selector labels beyond metadata.name and metadata.namespace. */
  fieldLabels: string[];
  returnDeletedObject: boolean;
  allowUnconditionalUpdate: boolean;
  /** Strategic merge patch is only served for built-in types. */
  strategicMerge: boolean;
  nameRule: NameRule;
  hooks: BuiltinHooks;
  /** Objects of all versions of a resource share one storage key. */
  storageKey: string;
  storageApiVersion: string;
  /** Converts a stored object to this version, and back. */
  toVersion(obj: Obj): Obj;
  toStorage(obj: Obj): Obj;
  typeNode: TypeNode;
  custom?: {
    crdName: string;
    schema?: JSONSchema;
  };
}

export function apiVersionOf(rt: { group: string; version: string }): string {
  return rt.group ? `${rt.group}/${rt.version}` : rt.version;
}

interface BuiltinSpec {
  group: string;
  version: string;
  resource: string;
  kind: string;
  namespaced?: boolean;
  shortNames?: string[];
  categories?: string[];
  status?: boolean;
  scale?: boolean;
  generation?: GenerationPolicy;
  fieldLabels?: string[];
  returnDeletedObject?: boolean;
  storageKey?: string;
  toVersion?: (o: Obj) => Obj;
  toStorage?: (o: Obj) => Obj;
}

const POD_FIELDS = [
  "spec.nodeName",
  "spec.restartPolicy",
  "spec.schedulerName",
  "spec.serviceAccountName",
  "spec.hostNetwork",
  "status.phase",
  "status.podIP",
  "status.nominatedNodeName",
];
const EVENT_FIELDS = [
  "involvedObject.kind",
  "involvedObject.namespace",
  "involvedObject.name",
  "involvedObject.uid",
  "involvedObject.apiVersion",
  "involvedObject.resourceVersion",
  "involvedObject.fieldPath",
  "reason",
  "reportingComponent",
  "source",
  "type",
];

const BUILTINS: BuiltinSpec[] = [
  { group: "", version: "v1", resource: "namespaces", kind: "Namespace", namespaced: false, shortNames: ["ns"], status: true, fieldLabels: ["status.phase"], returnDeletedObject: true },
  { group: "", version: "v1", resource: "pods", kind: "Pod", shortNames: ["po"], categories: ["all"], status: true, fieldLabels: POD_FIELDS, returnDeletedObject: true },
  { group: "", version: "v1", resource: "services", kind: "Service", shortNames: ["svc"], categories: ["all"], status: true, returnDeletedObject: true },
  { group: "", version: "v1", resource: "persistentvolumeclaims", kind: "PersistentVolumeClaim", shortNames: ["pvc"], status: true },
  { group: "", version: "v1", resource: "events", kind: "Event", shortNames: ["ev"], fieldLabels: EVENT_FIELDS },
  { group: "", version: "v1", resource: "configmaps", kind: "ConfigMap", shortNames: ["cm"] },
  { group: "", version: "v1", resource: "secrets", kind: "Secret", fieldLabels: ["type"] },
  { group: "", version: "v1", resource: "serviceaccounts", kind: "ServiceAccount", shortNames: ["sa"], returnDeletedObject: true },
  { group: "", version: "v1", resource: "endpoints", kind: "Endpoints", shortNames: ["ep"] },
  { group: "", version: "v1", resource: "nodes", kind: "Node", namespaced: false, shortNames: ["no"], status: true, returnDeletedObject: true },
  { group: "apps", version: "v1", resource: "deployments", kind: "Deployment", shortNames: ["deploy"], categories: ["all"], status: true, scale: true, generation: "specAndAnnotations" },
  { group: "apps", version: "v1", resource: "replicasets", kind: "ReplicaSet", shortNames: ["rs"], categories: ["all"], status: true, scale: true, generation: "spec" },
  { group: "apps", version: "v1", resource: "statefulsets", kind: "StatefulSet", shortNames: ["sts"], categories: ["all"], status: true, scale: true, generation: "spec" },
  { group: "coordination.k8s.io", version: "v1", resource: "leases", kind: "Lease" },
  { group: "discovery.k8s.io", version: "v1", resource: "endpointslices", kind: "EndpointSlice", fieldLabels: [] },
  {
    group: "events.k8s.io",
    version: "v1",
    resource: "events",
    kind: "Event",
    shortNames: ["ev"],
    storageKey: "/events",
    toVersion: coreToEventsV1,
    toStorage: eventsV1ToCore,
    fieldLabels: [],
  },
  {
    group: "apiextensions.k8s.io",
    version: "v1",
    resource: "customresourcedefinitions",
    kind: "CustomResourceDefinition",
    namespaced: false,
    shortNames: ["crd", "crds"],
    categories: ["api-extensions"],
    status: true,
    generation: "spec",
  },
];

function builtinType(s: BuiltinSpec): ResourceType {
  const storageKey = s.storageKey ?? `${s.group}/${s.resource}`;
  const hooks = BUILTIN_HOOKS[storageKey] ?? BUILTIN_HOOKS[`${s.group}/${s.resource}`] ?? {};
  const apiVersion = s.group ? `${s.group}/${s.version}` : s.version;
  const storageApiVersion = s.storageKey === "/events" ? "v1" : apiVersion;
  return {
    group: s.group,
    version: s.version,
    resource: s.resource,
    kind: s.kind,
    listKind: `${s.kind}List`,
    singular: s.kind.toLowerCase(),
    namespaced: s.namespaced ?? true,
    shortNames: s.shortNames ?? [],
    categories: s.categories ?? [],
    status: s.status ?? false,
    ...(s.scale ? { scale: { specReplicasPath: ".spec.replicas", statusReplicasPath: ".status.replicas", labelSelectorPath: ".status.selector" } } : {}),
    generation: s.generation ?? "none",
    fieldLabels: s.fieldLabels ?? [],
    returnDeletedObject: s.returnDeletedObject ?? false,
    allowUnconditionalUpdate: true,
    strategicMerge: true,
    nameRule: hooks.nameRule ?? "subdomain",
    hooks,
    storageKey,
    storageApiVersion,
    toVersion: s.toVersion ?? ((o) => ({ ...o, apiVersion })),
    toStorage: s.toStorage ?? ((o) => ({ ...o, apiVersion })),
    typeNode: new BuiltinType(),
  };
}

export function builtinTypes(): ResourceType[] {
  return BUILTINS.map(builtinType);
}

interface CrdVersion {
  name: string;
  served?: boolean;
  storage?: boolean;
  schema?: { openAPIV3Schema?: JSONSchema };
  subresources?: { status?: object; scale?: ScaleSpec };
}

/** The resource types a CRD registers: one per served version. */
export function crdTypes(crd: Record<string, any>): ResourceType[] { // eslint-disable-line @typescript-eslint/no-explicit-any
  const spec = crd.spec ?? {};
  const names = spec.names ?? {};
  const group: string = spec.group;
  const versions: CrdVersion[] = spec.versions ?? [];
  const storage = versions.find((v) => v.storage) ?? versions[0];
  if (!storage) return [];
  const storageApiVersion = `${group}/${storage.name}`;
  const storageKey = `${group}/${names.plural}`;
  return versions
    .filter((v) => v.served !== false)
    .map((v) => {
      const apiVersion = `${group}/${v.name}`;
      const schema = v.schema?.openAPIV3Schema;
      const scale = v.subresources?.scale;
      return {
        group,
        version: v.name,
        resource: names.plural,
        kind: names.kind,
        listKind: names.listKind ?? `${names.kind}List`,
        singular: names.singular ?? String(names.kind).toLowerCase(),
        namespaced: spec.scope !== "Cluster",
        shortNames: names.shortNames ?? [],
        categories: names.categories ?? [],
        status: v.subresources?.status !== undefined,
        ...(scale ? { scale } : {}),
        generation: "allButMetadataAndStatus",
        fieldLabels: [],
        returnDeletedObject: false,
        allowUnconditionalUpdate: false,
        strategicMerge: false,
        nameRule: "subdomain",
        hooks: {},
        storageKey,
        storageApiVersion,
        // conversion strategy None: only apiVersion changes
        toVersion: (o) => ({ ...o, apiVersion }),
        toStorage: (o) => ({ ...o, apiVersion: storageApiVersion }),
        typeNode: new SchemaType(schema, true),
        custom: { crdName: crd.metadata?.name, ...(schema ? { schema } : {}) },
      } satisfies ResourceType;
    });
}

export class Registry {
  private readonly types: ResourceType[] = builtinTypes();

  all(): readonly ResourceType[] {
    return this.types;
  }

  find(group: string, version: string, resource: string): ResourceType | undefined {
    return this.types.find((t) => t.group === group && t.version === version && t.resource === resource);
  }

  /** By "resource", "resource.group", kind or short name, for test helpers. */
  lookup(name: string): ResourceType | undefined {
    const lower = name.toLowerCase();
    const dot = lower.indexOf(".");
    const res = dot < 0 ? lower : lower.slice(0, dot);
    const group = dot < 0 ? undefined : lower.slice(dot + 1);
    const candidates = this.types.filter(
      (t) =>
        (group === undefined || t.group === group) &&
        (t.resource === res || t.singular === res || t.kind.toLowerCase() === res || t.shortNames.includes(res)),
    );
    // prefer the core group, then the storage version
    candidates.sort((a, b) => (a.group === "" ? -1 : 0) - (b.group === "" ? -1 : 0));
    return candidates.find((t) => apiVersionOf(t) === t.storageApiVersion) ?? candidates[0];
  }

  forStorageKey(storageKey: string): ResourceType[] {
    return this.types.filter((t) => t.storageKey === storageKey);
  }

  /** Replaces the types of one CRD. */
  setCrdTypes(crdName: string, types: ResourceType[]): void {
    this.removeCrd(crdName);
    this.types.push(...types);
  }

  removeCrd(crdName: string): void {
    for (let i = this.types.length - 1; i >= 0; i--) {
      if (this.types[i]!.custom?.crdName === crdName) this.types.splice(i, 1);
    }
  }

  groupVersions(): { group: string; versions: string[] }[] {
    const groups = new Map<string, string[]>();
    for (const t of this.types) {
      if (t.group === "") continue;
      const vs = groups.get(t.group) ?? [];
      if (!vs.includes(t.version)) vs.push(t.version);
      groups.set(t.group, vs);
    }
    return [...groups.entries()].map(([group, versions]) => ({ group, versions: sortVersions(versions) }));
  }
}

/** Kubernetes version priority: GA > beta > alpha, higher numbers first. */
export function sortVersions(vs: string[]): string[] {
  const rank = (v: string) => {
    const m = v.match(/^v(\d+)(?:(alpha|beta)(\d+))?$/);
    if (!m) return [3, 0, 0, v] as const;
    const stage = m[2] === undefined ? 0 : m[2] === "beta" ? 1 : 2;
    return [stage, -Number(m[1]), -Number(m[3] ?? 0), v] as const;
  };
  return [...vs].sort((a, b) => {
    const ra = rank(a);
    const rb = rank(b);
    for (let i = 0; i < 3; i++) if (ra[i] !== rb[i]) return (ra[i] as number) - (rb[i] as number);
    return a.localeCompare(b);
  });
}

const VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

export function apiResourceList(registry: Registry, group: string, version: string): Record<string, unknown> {
  const resources: Record<string, unknown>[] = [];
  for (const t of registry.all()) {
    if (t.group !== group || t.version !== version) continue;
    const r: Record<string, unknown> = {
      name: t.resource,
      singularName: t.singular,
      namespaced: t.namespaced,
      kind: t.kind,
      verbs: VERBS,
    };
    if (t.shortNames.length > 0) r.shortNames = t.shortNames;
    if (t.categories.length > 0) r.categories = t.categories;
    resources.push(r);
    if (t.status) {
      resources.push({ name: `${t.resource}/status`, singularName: "", namespaced: t.namespaced, kind: t.kind, verbs: ["get", "patch", "update"] });
    }
    if (t.scale) {
      resources.push({
        name: `${t.resource}/scale`,
        singularName: "",
        namespaced: t.namespaced,
        group: "autoscaling",
        version: "v1",
        kind: "Scale",
        verbs: ["get", "patch", "update"],
      });
    }
  }
  return { kind: "APIResourceList", apiVersion: "v1", groupVersion: group ? `${group}/${version}` : version, resources };
}

export function apiGroup(registry: Registry, group: string): Record<string, unknown> | undefined {
  const gv = registry.groupVersions().find((g) => g.group === group);
  if (!gv) return undefined;
  const versions = gv.versions.map((v) => ({ groupVersion: `${group}/${v}`, version: v }));
  return { kind: "APIGroup", apiVersion: "v1", name: group, versions, preferredVersion: versions[0] };
}

export function apiGroupList(registry: Registry): Record<string, unknown> {
  const groups = registry.groupVersions().map(({ group }) => {
    const g = apiGroup(registry, group)!;
    return { name: g.name, versions: g.versions, preferredVersion: g.preferredVersion };
  });
  return { kind: "APIGroupList", apiVersion: "v1", groups };
}

/** /openapi/v3: one document per group version. */
export function openApiV3Root(registry: Registry): Record<string, unknown> {
  const paths: Record<string, unknown> = {};
  const gvs = new Set(registry.all().map((t) => (t.group ? `apis/${t.group}/${t.version}` : `api/${t.version}`)));
  for (const gv of [...gvs].sort()) paths[gv] = { serverRelativeURL: `/openapi/v3/${gv}?hash=fake` };
  return { paths };
}

/**
 * A minimal OpenAPI v3 document for a group version: the item paths with their verbs, the
 * x-kubernetes-group-version-kind extension and the fieldValidation / fieldManager / dryRun query
 * parameters. Enough for kubectl to see that the server validates fields itself; no schemas.
 */
export function openApiV3Doc(registry: Registry, group: string, version: string): Record<string, unknown> | undefined {
  const types = registry.all().filter((t) => t.group === group && t.version === version);
  if (types.length === 0) return undefined;
  const prefix = group ? `/apis/${group}/${version}` : `/api/${version}`;
  const params = ["fieldValidation", "fieldManager", "dryRun"].map((name) => ({ name, in: "query", schema: { type: "string" } }));
  const paths: Record<string, unknown> = {};
  for (const t of types) {
    const gvk = { group: t.group, version: t.version, kind: t.kind };
    const op = (id: string, withParams: boolean) => ({
      operationId: `${id}${t.kind}`,
      "x-kubernetes-group-version-kind": gvk,
      ...(withParams ? { parameters: params } : {}),
      responses: { "200": { description: "OK" } },
    });
    const base = t.namespaced ? `${prefix}/namespaces/{namespace}/${t.resource}` : `${prefix}/${t.resource}`;
    paths[base] = { get: op("list", false), post: op("create", true), delete: op("deletecollection", false) };
    paths[`${base}/{name}`] = { get: op("read", false), put: op("replace", true), patch: op("patch", true), delete: op("delete", false) };
  }
  return { openapi: "3.0.0", info: { title: "Kubernetes (fake-kube)", version: `${group || "core"}/${version}` }, paths };
}
