// Field ownership for server-side apply (an approximation of structured-merge-diff):
// managers own leaf fields; apply merges the applied configuration over the live object,
// reports conflicts with other managers, and removes fields the manager stopped applying.

import { ApiError, failure } from "./errors.js";
import { type JSONSchema, deepEqual, isPlainObject, schemaChild } from "./schema.js";

export type ListInfo = { kind: "map"; keys: string[] } | { kind: "set" } | { kind: "atomic" };

/** Type information needed to merge: how lists are merged and which maps are atomic. */
export interface TypeNode {
  child(field: string): TypeNode;
  items(): TypeNode;
  list(): ListInfo;
  atomic(): boolean;
}

/** List semantics of built-in types (patchMergeKey / listType markers of k8s.io/api). */
export function builtinListInfo(names: readonly string[]): ListInfo {
  const f = names[names.length - 1];
  const inContainer = names.some((n) => n === "containers" || n === "initContainers" || n === "ephemeralContainers");
  switch (f) {
    case "containers":
    case "initContainers":
    case "ephemeralContainers":
    case "volumes":
    case "env":
    case "imagePullSecrets":
    case "resourceClaims":
      return { kind: "map", keys: ["name"] };
    case "volumeMounts":
      return { kind: "map", keys: ["mountPath"] };
    case "volumeDevices":
      return { kind: "map", keys: ["devicePath"] };
    case "ports":
      if (inContainer) return { kind: "map", keys: ["containerPort"] };
      if (names.length >= 2 && names[names.length - 2] === "spec") return { kind: "map", keys: ["port"] };
      return { kind: "atomic" };
    case "conditions":
      return { kind: "map", keys: ["type"] };
    case "ownerReferences":
      return { kind: "map", keys: ["uid"] };
    case "hostAliases":
      return { kind: "map", keys: ["ip"] };
    case "topologySpreadConstraints":
      return { kind: "map", keys: ["topologyKey"] };
    case "finalizers":
      return { kind: "set" };
    default:
      return { kind: "atomic" };
  }
}

export class BuiltinType implements TypeNode {
  constructor(private readonly names: readonly string[] = []) {}
  child(field: string): TypeNode {
    return new BuiltinType([...this.names, field]);
  }
  items(): TypeNode {
    return this;
  }
  list(): ListInfo {
    return builtinListInfo(this.names);
  }
  atomic(): boolean {
    return false;
  }
}

const META_TYPE = new BuiltinType(["metadata"]);

export class SchemaType implements TypeNode {
  constructor(
    private readonly schema: JSONSchema | undefined,
    private readonly root = false,
  ) {}
  child(field: string): TypeNode {
    if (this.root && field === "metadata") return META_TYPE;
    return new SchemaType(schemaChild(this.schema, field));
  }
  items(): TypeNode {
    return new SchemaType(this.schema?.items);
  }
  list(): ListInfo {
    const lt = this.schema?.["x-kubernetes-list-type"];
    if (lt === "map") return { kind: "map", keys: this.schema?.["x-kubernetes-list-map-keys"] ?? [] };
    if (lt === "set") return { kind: "set" };
    return { kind: "atomic" };
  }
  atomic(): boolean {
    return this.schema?.["x-kubernetes-map-type"] === "atomic";
  }
}

// ---------------------------------------------------------------------------
// Paths

export type PathElement = { f: string } | { k: Record<string, unknown> } | { v: unknown };
export type Path = PathElement[];

function keyOf(item: unknown, keys: string[]): Record<string, unknown> | undefined {
  if (!isPlainObject(item)) return undefined;
  const k: Record<string, unknown> = {};
  for (const key of keys) {
    if (!Object.prototype.hasOwnProperty.call(item, key)) return undefined;
    k[key] = item[key];
  }
  return k;
}

function sortedJson(v: unknown): string {
  if (isPlainObject(v)) {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${sortedJson(v[k])}`)
      .join(",")}}`;
  }
  if (Array.isArray(v)) return `[${v.map(sortedJson).join(",")}]`;
  return JSON.stringify(v);
}

export function pathKey(p: Path): string {
  return p
    .map((e) => ("f" in e ? `f:${e.f}` : "k" in e ? `k:${sortedJson(e.k)}` : `v:${sortedJson(e.v)}`))
    .join("\u0000");
}

function parsePathKey(s: string): Path {
  return s.split("\u0000").map((part) => {
    const kind = part.slice(0, 2);
    const rest = part.slice(2);
    if (kind === "f:") return { f: rest };
    if (kind === "k:") return { k: JSON.parse(rest) as Record<string, unknown> };
    return { v: JSON.parse(rest) as unknown };
  });
}

/** fieldpath.Path.String(): `.spec.containers[name="app"].image`. */
export function pathString(p: Path): string {
  let s = "";
  for (const e of p) {
    if ("f" in e) s += `.${e.f}`;
    else if ("k" in e) {
      s += `[${Object.keys(e.k)
        .sort()
        .map((k) => `${k}=${JSON.stringify(e.k[k])}`)
        .join(",")}]`;
    } else s += `[=${JSON.stringify(e.v)}]`;
  }
  return s;
}

interface Leaf {
  path: Path;
  value: unknown;
  marker: boolean;
}

/** The owned paths of a value: leaves, plus one marker path per keyed-list element. */
export function leaves(v: unknown, t: TypeNode, prefix: Path = []): Leaf[] {
  const out: Leaf[] = [];
  walk(v, t, prefix, out);
  return out;
}

function walk(v: unknown, t: TypeNode, prefix: Path, out: Leaf[]): void {
  if (isPlainObject(v) && !t.atomic() && Object.keys(v).length > 0) {
    for (const [k, x] of Object.entries(v)) walk(x, t.child(k), [...prefix, { f: k }], out);
    return;
  }
  if (Array.isArray(v)) {
    const li = t.list();
    if (li.kind === "map") {
      for (const item of v) {
        const k = keyOf(item, li.keys);
        if (!k) {
          out.push({ path: prefix, value: v, marker: false });
          return;
        }
      }
      for (const item of v) {
        const p: Path = [...prefix, { k: keyOf(item, li.keys)! }];
        out.push({ path: p, value: undefined, marker: true });
        if (isPlainObject(item)) {
          for (const [f, x] of Object.entries(item)) walk(x, t.items().child(f), [...p, { f }], out);
        }
      }
      return;
    }
    if (li.kind === "set" && v.length > 0) {
      for (const item of v) out.push({ path: [...prefix, { v: item }], value: item, marker: false });
      return;
    }
  }
  if (prefix.length > 0) out.push({ path: prefix, value: v, marker: false });
}

/** Looks up the value at a path; `found` tells absent from null. */
export function valueAt(obj: unknown, p: Path): { found: boolean; value?: unknown } {
  let cur: unknown = obj;
  for (const e of p) {
    if ("f" in e) {
      if (!isPlainObject(cur) || !Object.prototype.hasOwnProperty.call(cur, e.f)) return { found: false };
      cur = cur[e.f];
    } else if ("k" in e) {
      if (!Array.isArray(cur)) return { found: false };
      const item = cur.find((x) => isPlainObject(x) && Object.entries(e.k).every(([k, v]) => deepEqual(x[k], v)));
      if (item === undefined) return { found: false };
      cur = item;
    } else {
      if (!Array.isArray(cur)) return { found: false };
      const idx = cur.findIndex((x) => deepEqual(x, e.v));
      if (idx < 0) return { found: false };
      cur = cur[idx];
    }
  }
  return { found: true, value: cur };
}

/** Removes the field / list element at a path, in place. */
export function removeAt(obj: unknown, p: Path): void {
  if (p.length === 0) return;
  const parent = valueAt(obj, p.slice(0, -1));
  if (!parent.found) return;
  const last = p[p.length - 1]!;
  const container = parent.value;
  if ("f" in last) {
    if (isPlainObject(container)) delete container[last.f];
  } else if (Array.isArray(container)) {
    const idx =
      "k" in last
        ? container.findIndex((x) => isPlainObject(x) && Object.entries(last.k).every(([k, v]) => deepEqual(x[k], v)))
        : container.findIndex((x) => deepEqual(x, last.v));
    if (idx >= 0) container.splice(idx, 1);
  }
}

// ---------------------------------------------------------------------------
// Merging an applied configuration (also the basis of strategic merge patch)

export function mergeApplied(live: unknown, applied: unknown, t: TypeNode): unknown {
  if (isPlainObject(applied) && !t.atomic()) {
    const out: Record<string, unknown> = isPlainObject(live) ? { ...live } : {};
    for (const [k, v] of Object.entries(applied)) {
      out[k] = mergeApplied(out[k], v, t.child(k));
    }
    return out;
  }
  if (Array.isArray(applied) && Array.isArray(live)) {
    const li = t.list();
    if (li.kind === "map" && applied.every((x) => keyOf(x, li.keys)) && live.every((x) => keyOf(x, li.keys))) {
      const out = [...live];
      for (const item of applied) {
        const k = keyOf(item, li.keys)!;
        const idx = out.findIndex((x) => deepEqual(keyOf(x, li.keys), k));
        if (idx >= 0) out[idx] = mergeApplied(out[idx], item, t.items());
        else out.push(structuredClone(item));
      }
      return out;
    }
    if (li.kind === "set") {
      const out = [...live];
      for (const item of applied) if (!out.some((x) => deepEqual(x, item))) out.push(item);
      return out;
    }
  }
  return structuredClone(applied);
}

// ---------------------------------------------------------------------------
// Managed fields entries

export interface ManagedEntry {
  manager: string;
  operation: "Apply" | "Update";
  apiVersion: string;
  time: string;
  subresource?: string;
  fields: Set<string>;
}

export function nowRfc3339(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** Builds the FieldsV1 JSON of a set of paths. */
export function fieldsV1(fields: Set<string>): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  for (const key of [...fields].sort()) {
    const p = parsePathKey(key);
    let node = root;
    for (const e of p) {
      const k = "f" in e ? `f:${e.f}` : "k" in e ? `k:${sortedJson(e.k)}` : `v:${sortedJson(e.v)}`;
      node[k] ??= {};
      node = node[k] as Record<string, unknown>;
    }
    if (p.length > 0 && "k" in p[p.length - 1]!) node["."] = {};
  }
  return root;
}

export function renderManagedFields(entries: ManagedEntry[]): unknown[] {
  return entries
    .filter((e) => e.fields.size > 0)
    .map((e) => {
      const out: Record<string, unknown> = {
        manager: e.manager,
        operation: e.operation,
        apiVersion: e.apiVersion,
        time: e.time,
        fieldsType: "FieldsV1",
        fieldsV1: fieldsV1(e.fields),
      };
      if (e.subresource) out.subresource = e.subresource;
      return out;
    });
}

/** Which paths a write on (sub)resource may own. */
export type OwnershipScope = "main" | "status" | "scale";

const IGNORED_META = new Set([
  "name",
  "namespace",
  "uid",
  "resourceVersion",
  "generation",
  "creationTimestamp",
  "deletionTimestamp",
  "deletionGracePeriodSeconds",
  "selfLink",
  "managedFields",
]);

function inScope(p: Path, scope: OwnershipScope, hasStatus: boolean): boolean {
  const first = p[0];
  if (!first || !("f" in first)) return false;
  if (first.f === "apiVersion" || first.f === "kind") return false;
  if (first.f === "metadata") {
    const second = p[1];
    if (!second || !("f" in second) || IGNORED_META.has(second.f)) return false;
  }
  if (scope === "status") return first.f === "status";
  if (hasStatus && first.f === "status") return false;
  return true;
}

export function ownedLeaves(obj: unknown, t: TypeNode, scope: OwnershipScope, hasStatus: boolean): Leaf[] {
  return leaves(obj, t).filter((l) => inScope(l.path, scope, hasStatus));
}

function entryFor(
  entries: ManagedEntry[],
  manager: string,
  operation: "Apply" | "Update",
  subresource: string | undefined,
  apiVersion: string,
): ManagedEntry {
  let e = entries.find((x) => x.manager === manager && x.operation === operation && x.subresource === subresource);
  if (!e) {
    e = { manager, operation, apiVersion, time: nowRfc3339(), fields: new Set(), ...(subresource ? { subresource } : {}) };
    entries.push(e);
  }
  e.apiVersion = apiVersion;
  e.time = nowRfc3339();
  return e;
}

/** Records ownership after a non-apply write (create, update, patch). */
export function trackUpdate(opts: {
  entries: ManagedEntry[];
  oldObj: unknown;
  newObj: unknown;
  manager: string;
  apiVersion: string;
  subresource?: string;
  type: TypeNode;
  hasStatus: boolean;
}): ManagedEntry[] {
  const scope: OwnershipScope = opts.subresource === "status" ? "status" : "main";
  const entries = opts.entries.map((e) => ({ ...e, fields: new Set(e.fields) }));
  const newLeaves = ownedLeaves(opts.newObj, opts.type, scope, opts.hasStatus);
  const newKeys = new Set(newLeaves.map((l) => pathKey(l.path)));
  const changed: string[] = [];
  for (const l of newLeaves) {
    const old = valueAt(opts.oldObj, l.path);
    if (!old.found || (!l.marker && !deepEqual(old.value, l.value))) changed.push(pathKey(l.path));
  }
  // fields that disappeared are owned by nobody any more
  for (const e of entries) {
    for (const k of [...e.fields]) {
      const p = parsePathKey(k);
      if (inScope(p, scope, opts.hasStatus) && !newKeys.has(k) && !valueAt(opts.newObj, p).found) e.fields.delete(k);
    }
  }
  if (changed.length > 0) {
    for (const e of entries) for (const k of changed) e.fields.delete(k);
    const mine = entryFor(entries, opts.manager, "Update", opts.subresource, opts.apiVersion);
    for (const k of changed) mine.fields.add(k);
  }
  return entries.filter((e) => e.fields.size > 0);
}

export interface ApplyResult {
  object: Record<string, unknown>;
  entries: ManagedEntry[];
}

/** Server-side apply of `applied` over `live` (undefined when creating). */
export function applyConfig(opts: {
  live: Record<string, unknown> | undefined;
  applied: Record<string, unknown>;
  entries: ManagedEntry[];
  manager: string;
  force: boolean;
  apiVersion: string;
  subresource?: string;
  type: TypeNode;
  hasStatus: boolean;
}): ApplyResult {
  const scope: OwnershipScope = opts.subresource === "status" ? "status" : "main";
  const entries = opts.entries.map((e) => ({ ...e, fields: new Set(e.fields) }));
  const appliedLeaves = ownedLeaves(opts.applied, opts.type, scope, opts.hasStatus);
  const appliedKeys = new Set(appliedLeaves.map((l) => pathKey(l.path)));

  // conflicts: another manager owns a field we set to a different value
  const conflicts = new Map<ManagedEntry, Path[]>();
  for (const e of entries) {
    if (e.manager === opts.manager) continue;
    for (const l of appliedLeaves) {
      if (l.marker) continue;
      const k = pathKey(l.path);
      if (!e.fields.has(k)) continue;
      const live = valueAt(opts.live, l.path);
      if (live.found && deepEqual(live.value, l.value)) continue;
      const list = conflicts.get(e) ?? [];
      list.push(l.path);
      conflicts.set(e, list);
    }
  }
  if (conflicts.size > 0 && !opts.force) throw applyConflict(conflicts);

  let object = mergeApplied(opts.live ?? {}, opts.applied, opts.type) as Record<string, unknown>;
  object = structuredClone(object);

  // fields this manager applied before and no longer applies are removed unless someone else owns them
  const previous = entries.find((e) => e.manager === opts.manager && e.operation === "Apply" && e.subresource === opts.subresource);
  if (previous) {
    const dropped = [...previous.fields].filter((k) => !appliedKeys.has(k));
    const ownedByOthers = (k: string) => entries.some((e) => e !== previous && e.fields.has(k));
    // shallowest first: a removed list element takes its fields with it
    dropped.sort((a, b) => parsePathKey(a).length - parsePathKey(b).length);
    for (const k of dropped) {
      if (ownedByOthers(k)) continue;
      const p = parsePathKey(k);
      if (!inScope(p, scope, opts.hasStatus)) continue;
      // the key fields of a list element that stays are not removed on their own
      const parent = p[p.length - 2];
      const last = p[p.length - 1]!;
      if (parent && "k" in parent && "f" in last && last.f in parent.k) continue;
      removeAt(object, p);
    }
  }

  if (opts.force) {
    for (const e of entries) if (e.manager !== opts.manager || e.operation !== "Apply") for (const k of appliedKeys) e.fields.delete(k);
  }
  const mine = entryFor(entries, opts.manager, "Apply", opts.subresource, opts.apiVersion);
  mine.fields = new Set(appliedKeys);
  return { object, entries: entries.filter((e) => e.fields.size > 0) };
}

function applyConflict(conflicts: Map<ManagedEntry, Path[]>): ApiError {
  const total = [...conflicts.values()].reduce((n, l) => n + l.length, 0);
  const parts: string[] = [];
  const causes: { reason: string; message: string; field: string }[] = [];
  for (const [e, paths] of conflicts) {
    const who = `${JSON.stringify(e.manager)} using ${e.apiVersion}`;
    if (paths.length === 1) parts.push(`conflict with ${who}: ${pathString(paths[0]!)}`);
    else parts.push(`conflicts with ${who}:\n${paths.map((p) => `- ${pathString(p)}`).join("\n")}`);
    for (const p of paths) causes.push({ reason: "FieldManagerConflict", message: `conflict with ${who}`, field: pathString(p) });
  }
  const message = `Apply failed with ${total} conflict${total === 1 ? "" : "s"}: ${parts.join("\n")}`;
  return new ApiError(failure(409, "Conflict", message, { causes }));
}

/** Parses managedFields from a stored object (used when an object is written directly). */
export function entriesFromObject(obj: Record<string, unknown>): ManagedEntry[] {
  const meta = obj.metadata;
  if (!isPlainObject(meta) || !Array.isArray(meta.managedFields)) return [];
  const out: ManagedEntry[] = [];
  for (const mf of meta.managedFields) {
    if (!isPlainObject(mf)) continue;
    const fields = new Set<string>();
    collectFields(mf.fieldsV1, [], fields);
    out.push({
      manager: String(mf.manager ?? ""),
      operation: mf.operation === "Apply" ? "Apply" : "Update",
      apiVersion: String(mf.apiVersion ?? ""),
      time: String(mf.time ?? nowRfc3339()),
      ...(typeof mf.subresource === "string" ? { subresource: mf.subresource } : {}),
      fields,
    });
  }
  return out;
}

function collectFields(node: unknown, prefix: Path, out: Set<string>): void {
  if (!isPlainObject(node)) return;
  const keys = Object.keys(node).filter((k) => k !== ".");
  if (Object.prototype.hasOwnProperty.call(node, ".") && prefix.length > 0) out.add(pathKey(prefix));
  if (keys.length === 0 && prefix.length > 0) {
    out.add(pathKey(prefix));
    return;
  }
  for (const k of keys) {
    const kind = k.slice(0, 2);
    const rest = k.slice(2);
    let e: PathElement;
    try {
      if (kind === "f:") e = { f: rest };
      else if (kind === "k:") e = { k: JSON.parse(rest) as Record<string, unknown> };
      else if (kind === "v:") e = { v: JSON.parse(rest) as unknown };
      else continue;
    } catch {
      continue;
    }
    collectFields(node[k], [...prefix, e], out);
  }
}
