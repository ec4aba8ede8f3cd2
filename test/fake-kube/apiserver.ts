// The semantics of the API verbs, independent of HTTP: admission (defaulting, pruning,
// validation), optimistic concurrency, generation, status/scale subresources, finalizers,
// managed fields and the 429 window of freshly created CRDs.

import { randomUUID } from "node:crypto";
import YAML from "yaml";

import { validateObjectMeta } from "./builtins.js";
import {
  ApiError,
  FieldError,
  GoRendered,
  alreadyExists,
  badRequest,
  conflict,
  failure,
  fieldErr,
  forbidden,
  goQuote,
  invalid,
  notFound,
  success,
  tooManyRequests,
  unsupportedMediaType,
} from "./errors.js";
import {
  type ManagedEntry,
  applyConfig,
  entriesFromObject,
  nowRfc3339,
  trackUpdate,
} from "./managed.js";
import { jsonPatch, mergePatch, strategicMergePatch } from "./patch.js";
import { type ResourceType, Registry, apiVersionOf } from "./registry.js";
import {
  applyDefaults,
  blockingError,
  deepEqual,
  isPlainObject,
  OBJECT_META_FIELDS,
  prune,
  validateCelRules,
  validateSchema,
} from "./schema.js";
import {
  formatLabelSelector,
  matchesFields,
  matchesLabels,
  parseFieldSelector,
  parseLabelSelector,
} from "./selectors.js";
import { type Obj, Store, type StoredObject } from "./store.js";

export interface ApiServerOptions {
  /** How long list/watch of a new CRD's resources answer 429 after it is established. */
  crdInitDelayMs: number;
  historySize: number;
}

export interface CallContext {
  query: URLSearchParams;
  userAgent?: string;
}

export interface ApiResult {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}

const GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789";

export function randomSuffix(n = 5): string {
  let s = "";
  for (let i = 0; i < n; i++) s += GENERATE_ALPHABET[Math.floor(Math.random() * GENERATE_ALPHABET.length)];
  return s;
}

export const PATCH_TYPES = {
  json: "application/json-patch+json",
  merge: "application/merge-patch+json",
  strategic: "application/strategic-merge-patch+json",
  apply: "application/apply-patch+yaml",
} as const;

// ObjectMeta fields in the order kube-apiserver serialises them.
const META_ORDER = [...OBJECT_META_FIELDS];

function orderMeta(meta: Obj): Obj {
  const out: Obj = {};
  for (const k of META_ORDER) if (k in meta) out[k] = meta[k];
  for (const k of Object.keys(meta)) if (!(k in out)) out[k] = meta[k];
  return out;
}

function managerFromUserAgent(ua: string | undefined): string {
  const m = (ua ?? "").split("/")[0]!.trim();
  return m.length > 0 ? m.slice(0, 128) : "unknown";
}

function parseBool(v: string | null): boolean {
  return v === "true" || v === "1";
}

export class ApiServer {
  readonly registry = new Registry();
  readonly store: Store;
  /** CRD name -> time (ms) from which its storage answers list/watch. */
  private readonly crdReadyAt = new Map<string, number>();
  private clusterIpNext = 10;
  private nodePortNext = 30000;

  constructor(readonly options: ApiServerOptions) {
    this.store = new Store(options.historySize, 1);
  }

  // -------------------------------------------------------------------------
  // helpers

  groupResource(rt: ResourceType): { group: string; resource: string } {
    return { group: rt.group, resource: rt.resource };
  }

  allocateClusterIP(): string {
    const n = this.clusterIpNext++;
    return `10.96.${Math.floor(n / 250)}.${(n % 250) + 1}`;
  }

  markCrdEstablished(crdName: string): void {
    this.crdReadyAt.set(crdName, Date.now() + this.options.crdInitDelayMs);
  }

  forgetCrd(crdName: string): void {
    this.crdReadyAt.delete(crdName);
  }

  /** 429 while the storage of a fresh CRD initialises (list and watch only). */
  checkStorageReady(rt: ResourceType): void {
    const name = rt.custom?.crdName;
    if (!name) return;
    const at = this.crdReadyAt.get(name);
    if (at !== undefined && Date.now() < at) throw tooManyRequests("storage is (re)initializing", 1);
  }

  /** The object as a client of `rt`'s version sees it. */
  present(rt: ResourceType, stored: Obj, forList = false): Obj {
    const v = rt.toVersion(structuredClone(stored));
    const out: Obj = {};
    if (rt.custom) {
      out.apiVersion = apiVersionOf(rt);
      out.kind = rt.kind;
    } else if (!forList) {
      out.kind = rt.kind;
      out.apiVersion = apiVersionOf(rt);
    }
    if (isPlainObject(v.metadata)) out.metadata = orderMeta(v.metadata);
    for (const [k, x] of Object.entries(v)) {
      if (k === "apiVersion" || k === "kind" || k === "metadata") continue;
      out[k] = x;
    }
    if (!rt.custom && forList) {
      delete out.apiVersion;
      delete out.kind;
    }
    return out;
  }

  private getStored(rt: ResourceType, namespace: string | undefined, name: string): StoredObject {
    const s = this.store.get(rt.storageKey, rt.namespaced ? namespace : undefined, name);
    if (!s) throw notFound(this.groupResource(rt), name);
    return s;
  }

  private checkNamespace(rt: ResourceType, namespace: string | undefined, name: string): void {
    if (!rt.namespaced) return;
    const ns = this.store.get("/namespaces", undefined, namespace ?? "");
    if (!ns) throw notFound({ group: "", resource: "namespaces" }, namespace ?? "");
    if (ns.obj.metadata?.deletionTimestamp) {
      const err = forbidden(
        this.groupResource(rt),
        name,
        `unable to create new content in namespace ${namespace} because it is being terminated`,
      );
      err.status.details = {
        ...err.status.details,
        causes: [{ reason: "NamespaceTerminating", message: `namespace ${namespace} is being terminated`, field: "metadata.namespace" }],
      };
      throw err;
    }
  }

  private parseBody(raw: string | undefined, contentType: string | undefined, rt: ResourceType): Obj {
    const mediaType = (contentType ?? "application/json").split(";")[0]!.trim().toLowerCase();
    if (mediaType !== "application/json" && mediaType !== "application/yaml" && mediaType !== "*/*") {
      // protobuf (kubectl uses it for some built-in writes) and CBOR are not served
      throw unsupportedMediaType(["application/json", "application/yaml"]);
    }
    if (raw === undefined || raw.trim() === "") throw badRequest("the request body is empty");
    let v: unknown;
    try {
      v = /yaml/.test(contentType ?? "") ? YAML.parse(raw) : JSON.parse(raw);
    } catch (e) {
      throw badRequest(
        `the object provided is unrecognized (must be of type ${rt.kind}): couldn't get version/kind; json parse error: ${(e as Error).message}`,
      );
    }
    if (!isPlainObject(v)) {
      throw badRequest(`the object provided is unrecognized (must be of type ${rt.kind}): couldn't get version/kind; json parse error: expected an object`);
    }
    return v as Obj;
  }

  private checkTypeMeta(rt: ResourceType, body: Obj, raw: string): void {
    if (rt.custom && !body.kind) {
      throw badRequest(`Object 'Kind' is missing in '${raw.trim()}'`);
    }
    if (body.kind !== undefined && body.kind !== rt.kind) {
      throw badRequest(
        `the object provided is unrecognized (must be of type ${rt.kind}): ${body.kind} (${body.apiVersion ?? ""})`,
      );
    }
    if (body.apiVersion !== undefined && body.apiVersion !== apiVersionOf(rt)) {
      throw badRequest(
        `the API version in the data (${body.apiVersion}) does not match the expected API version (${apiVersionOf(rt)})`,
      );
    }
  }

  private fieldValidation(ctx: CallContext): "Strict" | "Warn" | "Ignore" {
    const v = ctx.query.get("fieldValidation");
    if (v === "Strict" || v === "Ignore") return v;
    return "Warn";
  }

  /** Pruning and defaulting of custom resources; returns warnings. */
  private admitCustom(rt: ResourceType, obj: Obj, ctx: CallContext): string[] {
    const schema = rt.custom?.schema;
    if (!schema) return [];
    const pruned = prune(obj, schema);
    applyDefaults(obj, schema);
    const mode = this.fieldValidation(ctx);
    if (pruned.length > 0 && mode === "Strict") {
      throw badRequest(`strict decoding error: ${pruned.map((p) => `unknown field ${goQuote(p)}`).join(", ")}`);
    }
    if (mode === "Warn") return pruned.map((p) => `unknown field ${goQuote(p)}`);
    return [];
  }

  private validate(rt: ResourceType, obj: Obj, old: Obj | undefined): void {
    const errs: FieldError[] = [];
    errs.push(...validateObjectMeta(obj.metadata, rt.nameRule, false));
    if (rt.custom) {
      const schema = rt.custom.schema;
      if (schema) {
        errs.push(...validateSchema(obj, schema));
        const blocking = blockingError(errs);
        if (blocking) errs.push(blocking);
        else errs.push(...validateCelRules(this.forCel(rt, obj), old ? this.forCel(rt, old) : undefined, schema));
      }
    } else if (rt.hooks.validate) {
      errs.push(...rt.hooks.validate(obj, old));
    }
    if (old) {
      const newFin = ((obj.metadata?.finalizers ?? []) as string[]).filter(
        (f) => !((old.metadata?.finalizers ?? []) as string[]).includes(f),
      );
      if (old.metadata?.deletionTimestamp && newFin.length > 0) {
        errs.push(
          fieldErr.forbidden(
            "metadata.finalizers",
            `no new finalizers can be added if the object is being deleted, found new finalizers []string{${newFin.map(goQuote).join(", ")}}`,
          ),
        );
      }
    }
    if (errs.length > 0) throw invalid({ group: rt.group, kind: rt.kind }, String(obj.metadata?.name ?? ""), errs);
  }

  private forCel(rt: ResourceType, obj: Obj): Obj {
    return { ...obj, apiVersion: apiVersionOf(rt), kind: rt.kind };
  }

  private generationChanged(rt: ResourceType, next: Obj, prev: Obj): boolean {
    switch (rt.generation) {
      case "none":
        return false;
      case "spec":
        return !deepEqual(next.spec, prev.spec);
      case "specAndAnnotations":
        return !deepEqual(next.spec, prev.spec) || !deepEqual(next.metadata?.annotations, prev.metadata?.annotations);
      case "allButMetadataAndStatus": {
        const strip = (o: Obj) => {
          const c: Obj = { ...o };
          delete c.metadata;
          delete c.apiVersion;
          delete c.kind;
          if (rt.status) delete c.status;
          return c;
        };
        return !deepEqual(strip(next), strip(prev));
      }
    }
  }

  private writeResult(rt: ResourceType, stored: Obj, status: number, warnings: string[]): ApiResult {
    const headers: Record<string, string> = {};
    if (warnings.length > 0) headers.Warning = warnings.map((w) => `299 - ${JSON.stringify(w)}`).join(", ");
    return { status, body: this.present(rt, stored), headers };
  }

  private manager(ctx: CallContext): string {
    return ctx.query.get("fieldManager") || managerFromUserAgent(ctx.userAgent);
  }

  private dryRun(ctx: CallContext): boolean {
    return ctx.query.getAll("dryRun").includes("All");
  }

  // -------------------------------------------------------------------------
  // get / list

  get(rt: ResourceType, namespace: string | undefined, name: string): ApiResult {
    const s = this.getStored(rt, namespace, name);
    return { status: 200, body: this.present(rt, s.obj) };
  }

  /** Objects matching namespace and selectors, as stored. */
  select(rt: ResourceType, namespace: string | undefined, ctx: CallContext): StoredObject[] {
    const labels = parseLabelSelector(ctx.query.get("labelSelector"));
    const fields = parseFieldSelector(ctx.query.get("fieldSelector"), [
      "metadata.name",
      "metadata.namespace",
      ...rt.fieldLabels,
    ]);
    return this.store
      .list(rt.storageKey, rt.namespaced ? namespace : undefined)
      .filter((s) => matchesLabels(s.obj.metadata?.labels, labels) && matchesFields(s.obj, fields));
  }

  list(rt: ResourceType, namespace: string | undefined, ctx: CallContext): ApiResult {
    this.checkStorageReady(rt);
    let items = this.select(rt, namespace, ctx);
    const rv = String(this.store.currentRv());
    const meta: Obj = { resourceVersion: rv };
    const cont = ctx.query.get("continue");
    if (cont) {
      let start: string;
      let tokenRv: number;
      try {
        const parsed = JSON.parse(Buffer.from(cont, "base64").toString("utf8")) as { rv: number; start: string };
        start = parsed.start;
        tokenRv = parsed.rv;
      } catch {
        throw badRequest("continue key is not valid: illegal base64 data");
      }
      if (tokenRv < this.store.oldestWatchableRv()) {
        throw new ApiError(
          failure(
            410,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue value from the response to get a consistent list.",
          ),
        );
      }
      const keyOf = (s: StoredObject) => `${s.obj.metadata?.namespace ?? ""}/${s.obj.metadata?.name}`;
      items = items.filter((s) => keyOf(s) > start);
    }
    const limit = Number(ctx.query.get("limit") ?? "0");
    if (limit > 0 && items.length > limit) {
      const page = items.slice(0, limit);
      const last = page[page.length - 1]!;
      meta.continue = Buffer.from(
        JSON.stringify({ rv: this.store.currentRv(), start: `${last.obj.metadata?.namespace ?? ""}/${last.obj.metadata?.name}` }),
      ).toString("base64");
      meta.remainingItemCount = items.length - limit;
      items = page;
    }
    return {
      status: 200,
      body: {
        apiVersion: apiVersionOf(rt),
        kind: rt.listKind,
        metadata: meta,
        items: items.map((s) => this.present(rt, s.obj, true)),
      },
    };
  }

  // -------------------------------------------------------------------------
  // create

  create(rt: ResourceType, namespace: string | undefined, raw: string | undefined, contentType: string | undefined, ctx: CallContext): ApiResult {
    const body = this.parseBody(raw, contentType, rt);
    this.checkTypeMeta(rt, body, raw ?? "");
    return this.createObject(rt, namespace, body, ctx, undefined);
  }

  /** Create from an already parsed body; `applied` carries server-side apply ownership. */
  createObject(
    rt: ResourceType,
    namespace: string | undefined,
    body: Obj,
    ctx: CallContext,
    applyEntries: ManagedEntry[] | undefined,
  ): ApiResult {
    const obj: Obj = structuredClone(body);
    obj.apiVersion = apiVersionOf(rt);
    obj.kind = rt.kind;
    const meta: Obj = isPlainObject(obj.metadata) ? obj.metadata : {};
    obj.metadata = meta;
    if (rt.namespaced) {
      if (meta.namespace !== undefined && meta.namespace !== "" && meta.namespace !== namespace) {
        throw badRequest("the namespace of the provided object does not match the namespace sent on the request");
      }
      meta.namespace = namespace;
    } else {
      delete meta.namespace;
    }
    if (meta.resourceVersion !== undefined && meta.resourceVersion !== "") {
      // the etcd3 store refuses this with a plain error, which the server answers as 500 Unknown
      throw new ApiError(failure(500, "Unknown", "resourceVersion should not be set on objects to be created"));
    }
    if (!meta.name && meta.generateName) {
      do {
        meta.name = `${String(meta.generateName).slice(0, 58)}${randomSuffix()}`;
      } while (this.store.get(rt.storageKey, rt.namespaced ? namespace : undefined, meta.name));
    }
    this.checkNamespace(rt, namespace, String(meta.name ?? ""));
    delete meta.uid;
    delete meta.deletionTimestamp;
    delete meta.deletionGracePeriodSeconds;
    delete meta.managedFields;
    delete meta.selfLink;
    delete meta.resourceVersion;
    meta.uid = randomUUID();
    meta.creationTimestamp = nowRfc3339();
    if (rt.generation !== "none") meta.generation = 1;
    else delete meta.generation;

    let warnings: string[] = [];
    if (rt.custom) {
      if (rt.status) delete obj.status;
      warnings = this.admitCustom(rt, obj, ctx);
    } else {
      rt.hooks.prepareForCreate?.(obj, {
        allocateClusterIP: () => this.allocateClusterIP(),
        allocateNodePort: () => this.nodePortNext++,
      });
      rt.hooks.defaults?.(obj);
    }
    if (rt.storageKey === "apiextensions.k8s.io/customresourcedefinitions") {
      meta.finalizers = [...new Set([...((meta.finalizers ?? []) as string[]), "customresourcecleanup.apiextensions.k8s.io"])];
    }
    this.validate(rt, obj, undefined);
    if (this.store.get(rt.storageKey, rt.namespaced ? namespace : undefined, meta.name)) {
      throw alreadyExists(this.groupResource(rt), meta.name);
    }
    const entries =
      applyEntries ??
      trackUpdate({
        entries: [],
        oldObj: undefined,
        newObj: obj,
        manager: this.manager(ctx),
        apiVersion: apiVersionOf(rt),
        type: rt.typeNode,
        hasStatus: rt.status,
      });
    const storage = rt.toStorage(obj);
    if (this.dryRun(ctx)) {
      return this.writeResult(rt, { ...storage, metadata: { ...storage.metadata, resourceVersion: undefined } }, 201, warnings);
    }
    const stored = this.store.write(rt.storageKey, storage, entries);
    return this.writeResult(rt, stored, 201, warnings);
  }

  // -------------------------------------------------------------------------
  // update

  update(
    rt: ResourceType,
    namespace: string | undefined,
    name: string,
    subresource: string | undefined,
    raw: string | undefined,
    contentType: string | undefined,
    ctx: CallContext,
  ): ApiResult {
    if (subresource === "scale") return this.updateScale(rt, namespace, name, raw, contentType, ctx);
    const body = this.parseBody(raw, contentType, rt);
    this.checkTypeMeta(rt, body, raw ?? "");
    const existing = this.getStored(rt, namespace, name);
    const meta = (body.metadata ?? {}) as Obj;
    if (meta.name !== undefined && meta.name !== name) {
      throw badRequest(`the name of the object (${meta.name}) does not match the name on the URL (${name})`);
    }
    if (rt.namespaced && meta.namespace !== undefined && meta.namespace !== "" && meta.namespace !== namespace) {
      throw badRequest("the namespace of the provided object does not match the namespace sent on the request");
    }
    const rv = meta.resourceVersion;
    if (rv === undefined || rv === "") {
      if (!rt.allowUnconditionalUpdate) {
        throw invalid({ group: rt.group, kind: rt.kind }, name, [
          fieldErr.invalid("metadata.resourceVersion", new GoRendered("0x0"), "must be specified for an update"),
        ]);
      }
    } else if (String(rv) !== existing.obj.metadata.resourceVersion) {
      throw conflict(this.groupResource(rt), name);
    }
    const next = structuredClone(body);
    next.metadata = { ...meta, name, ...(rt.namespaced ? { namespace } : {}) };
    return this.commitUpdate(rt, existing, next, subresource, ctx, undefined);
  }

  /**
   * Applies the strategy of an update to `next` (in the requested version) and stores it.
   * `applyEntries` is set by server-side apply (ownership already computed).
   */
  commitUpdate(
    rt: ResourceType,
    existing: StoredObject,
    nextIn: Obj,
    subresource: string | undefined,
    ctx: CallContext,
    applyEntries: ManagedEntry[] | undefined,
  ): ApiResult {
    const old = rt.toVersion(structuredClone(existing.obj));
    let next: Obj;
    let warnings: string[] = [];
    if (subresource === "status") {
      // only status may change
      next = structuredClone(old);
      if (nextIn.status === undefined) delete next.status;
      else next.status = structuredClone(nextIn.status);
    } else {
      next = structuredClone(nextIn);
      next.apiVersion = apiVersionOf(rt);
      next.kind = rt.kind;
      const meta: Obj = isPlainObject(next.metadata) ? next.metadata : {};
      const om = old.metadata as Obj;
      for (const k of ["name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"]) {
        if (om[k] === undefined) delete meta[k];
        else meta[k] = om[k];
      }
      if (meta.generateName === undefined && om.generateName !== undefined) meta.generateName = om.generateName;
      delete meta.managedFields;
      next.metadata = meta;
      if (rt.status) {
        if (old.status === undefined) delete next.status;
        else next.status = structuredClone(old.status);
      }
      if (rt.custom) {
        warnings = this.admitCustom(rt, next, ctx);
      } else {
        rt.hooks.prepareForUpdate?.(next, old);
        rt.hooks.defaults?.(next);
      }
      if (this.generationChanged(rt, next, old)) next.metadata.generation = (om.generation ?? 0) + 1;
    }
    next.metadata.resourceVersion = old.metadata.resourceVersion;
    this.validate(rt, next, old);

    // an update that changes nothing is not written (no new resourceVersion, no event)
    const comparable = (o: Obj) => {
      const c = structuredClone(o);
      delete c.metadata.managedFields;
      delete c.metadata.resourceVersion;
      return c;
    };
    if (deepEqual(comparable(next), comparable(old))) {
      return this.writeResult(rt, existing.obj, 200, warnings);
    }

    const entries =
      applyEntries ??
      trackUpdate({
        entries: existing.managed,
        oldObj: old,
        newObj: next,
        manager: this.manager(ctx),
        apiVersion: apiVersionOf(rt),
        ...(subresource ? { subresource } : {}),
        type: rt.typeNode,
        hasStatus: rt.status,
      });
    const storage = rt.toStorage(next);
    if (this.dryRun(ctx)) return this.writeResult(rt, storage, 200, warnings);

    // removing the last finalizer of an object being deleted deletes it
    if (storage.metadata.deletionTimestamp && ((storage.metadata.finalizers ?? []) as string[]).length === 0) {
      const gone = this.store.remove(rt.storageKey, storage.metadata.namespace, storage.metadata.name, storage)!;
      return this.writeResult(rt, gone, 200, warnings);
    }
    const stored = this.store.write(rt.storageKey, storage, entries);
    return this.writeResult(rt, stored, 200, warnings);
  }

  // -------------------------------------------------------------------------
  // patch

  patch(
    rt: ResourceType,
    namespace: string | undefined,
    name: string,
    subresource: string | undefined,
    raw: string | undefined,
    contentType: string | undefined,
    ctx: CallContext,
  ): ApiResult {
    const type = (contentType ?? "").split(";")[0]!.trim().toLowerCase();
    const accepted = rt.strategicMerge
      ? [PATCH_TYPES.json, PATCH_TYPES.merge, PATCH_TYPES.apply, PATCH_TYPES.strategic]
      : [PATCH_TYPES.json, PATCH_TYPES.merge, PATCH_TYPES.apply];
    if (!accepted.includes(type as (typeof accepted)[number])) throw unsupportedMediaType(accepted);
    const isApply = type === PATCH_TYPES.apply;
    const patchOptionsErrors: FieldError[] = [];
    if (isApply && !ctx.query.get("fieldManager")) {
      patchOptionsErrors.push(fieldErr.required("fieldManager", "is required for apply patch"));
    }
    if (!isApply && ctx.query.has("force")) {
      patchOptionsErrors.push(fieldErr.forbidden("force", "may not be specified for non-apply patch"));
    }
    if (patchOptionsErrors.length > 0) throw invalid({ group: "meta.k8s.io", kind: "PatchOptions" }, "", patchOptionsErrors);
    if (raw === undefined || raw.trim() === "") throw badRequest("the request body is empty");

    let patchBody: unknown;
    try {
      patchBody = isApply ? YAML.parse(raw) : JSON.parse(raw);
    } catch (e) {
      throw badRequest(`error decoding patch: ${(e as Error).message}`);
    }

    if (subresource === "scale") return this.patchScale(rt, namespace, name, type, patchBody, ctx);

    const existing = this.store.get(rt.storageKey, rt.namespaced ? namespace : undefined, name);
    if (isApply) return this.apply(rt, namespace, name, subresource, patchBody, existing, ctx);
    if (!existing) throw notFound(this.groupResource(rt), name);

    const current = this.present(rt, existing.obj);
    let patched: unknown;
    switch (type) {
      case PATCH_TYPES.json:
        patched = jsonPatch(current, patchBody);
        break;
      case PATCH_TYPES.merge:
        if (!isPlainObject(patchBody)) throw badRequest("the body of a merge patch must be a JSON object");
        patched = mergePatch(current, patchBody);
        break;
      default:
        patched = strategicMergePatch(current, patchBody, rt.typeNode);
    }
    if (!isPlainObject(patched)) throw badRequest("the patch did not produce an object");
    const p = patched as Obj;
    const meta = (isPlainObject(p.metadata) ? p.metadata : {}) as Obj;
    p.metadata = meta;
    if (meta.name !== name) throw badRequest(`the name of the object (${meta.name ?? ""}) does not match the name on the URL (${name})`);
    if (meta.resourceVersion !== undefined && String(meta.resourceVersion) !== existing.obj.metadata.resourceVersion) {
      throw conflict(this.groupResource(rt), name);
    }
    if (p.kind !== rt.kind || p.apiVersion !== apiVersionOf(rt)) {
      throw badRequest(`the API version or kind in the patched object (${p.apiVersion}, ${p.kind}) does not match the request`);
    }
    return this.commitUpdate(rt, existing, p, subresource, ctx, undefined);
  }

  private apply(
    rt: ResourceType,
    namespace: string | undefined,
    name: string,
    subresource: string | undefined,
    applied: unknown,
    existing: StoredObject | undefined,
    ctx: CallContext,
  ): ApiResult {
    if (!isPlainObject(applied)) throw badRequest("the applied configuration must be an object");
    const cfg = applied as Obj;
    if (!cfg.kind) throw badRequest(`Object 'Kind' is missing in '${JSON.stringify(cfg)}'`);
    if (!cfg.apiVersion) throw badRequest(`Object 'apiVersion' is missing in '${JSON.stringify(cfg)}'`);
    this.checkTypeMeta(rt, cfg, JSON.stringify(cfg));
    const meta = (isPlainObject(cfg.metadata) ? cfg.metadata : {}) as Obj;
    cfg.metadata = meta;
    if (meta.managedFields !== undefined) throw badRequest("metadata.managedFields must be nil");
    if (meta.name !== undefined && meta.name !== name) {
      throw badRequest(`the name of the object (${meta.name}) does not match the name on the URL (${name})`);
    }
    meta.name = name;
    if (rt.namespaced) {
      if (meta.namespace !== undefined && meta.namespace !== namespace) {
        throw badRequest("the namespace of the provided object does not match the namespace sent on the request");
      }
      meta.namespace = namespace;
    }
    const manager = ctx.query.get("fieldManager")!;
    const force = parseBool(ctx.query.get("force"));
    if (!existing) {
      if (subresource) throw notFound(this.groupResource(rt), name);
      const result = applyConfig({
        live: undefined,
        applied: cfg,
        entries: [],
        manager,
        force,
        apiVersion: apiVersionOf(rt),
        type: rt.typeNode,
        hasStatus: rt.status,
      });
      const { resourceVersion: _rv, ...rest } = result.object.metadata as Obj;
      void _rv;
      result.object.metadata = rest;
      return this.createObject(rt, namespace, result.object, ctx, result.entries);
    }
    if (meta.resourceVersion !== undefined && String(meta.resourceVersion) !== existing.obj.metadata.resourceVersion) {
      throw conflict(this.groupResource(rt), name);
    }
    const live = this.present(rt, existing.obj);
    const result = applyConfig({
      live,
      applied: cfg,
      entries: existing.managed,
      manager,
      force,
      apiVersion: apiVersionOf(rt),
      ...(subresource ? { subresource } : {}),
      type: rt.typeNode,
      hasStatus: rt.status,
    });
    return this.commitUpdate(rt, existing, result.object, subresource, ctx, result.entries);
  }

  // -------------------------------------------------------------------------
  // scale subresource (autoscaling/v1 Scale)

  private scaleOf(rt: ResourceType, obj: Obj): Obj {
    const scale = rt.scale!;
    const v = rt.toVersion(structuredClone(obj));
    const get = (path: string | undefined): unknown => {
      if (!path) return undefined;
      let cur: unknown = v;
      for (const seg of path.replace(/^\./, "").split(".")) {
        if (!isPlainObject(cur)) return undefined;
        cur = cur[seg];
      }
      return cur;
    };
    let selector: unknown;
    if (!rt.custom) selector = formatLabelSelector(v.spec?.selector);
    else selector = get(scale.labelSelectorPath);
    const status: Obj = { replicas: (get(scale.statusReplicasPath) as number | undefined) ?? 0 };
    if (typeof selector === "string" && selector !== "") status.selector = selector;
    const meta: Obj = {
      name: v.metadata.name,
      ...(v.metadata.namespace ? { namespace: v.metadata.namespace } : {}),
      uid: v.metadata.uid,
      resourceVersion: v.metadata.resourceVersion,
      creationTimestamp: v.metadata.creationTimestamp,
    };
    return {
      kind: "Scale",
      apiVersion: "autoscaling/v1",
      metadata: meta,
      spec: { replicas: (get(scale.specReplicasPath) as number | undefined) ?? 0 },
      status,
    };
  }

  getScale(rt: ResourceType, namespace: string | undefined, name: string): ApiResult {
    if (!rt.scale) throw notFound(this.groupResource(rt), name);
    const s = this.getStored(rt, namespace, name);
    return { status: 200, body: this.scaleOf(rt, s.obj) };
  }

  private writeScale(rt: ResourceType, existing: StoredObject, scale: Obj, ctx: CallContext): ApiResult {
    const name = existing.obj.metadata.name as string;
    const rv = scale.metadata?.resourceVersion;
    if (rv !== undefined && rv !== "" && String(rv) !== existing.obj.metadata.resourceVersion) {
      throw conflict(this.groupResource(rt), name);
    }
    const replicas = scale.spec?.replicas;
    if (typeof replicas !== "number" || !Number.isInteger(replicas) || replicas < 0) {
      throw invalid({ group: "autoscaling", kind: "Scale" }, name, [
        fieldErr.invalid("spec.replicas", replicas ?? null, "must be greater than or equal to 0"),
      ]);
    }
    const next = this.present(rt, existing.obj);
    const segs = rt.scale!.specReplicasPath.replace(/^\./, "").split(".");
    let cur: Obj = next;
    for (const seg of segs.slice(0, -1)) {
      if (!isPlainObject(cur[seg])) cur[seg] = {};
      cur = cur[seg] as Obj;
    }
    cur[segs[segs.length - 1]!] = replicas;
    const res = this.commitUpdate(rt, existing, next, "scale", ctx, undefined);
    const after = this.store.get(rt.storageKey, existing.obj.metadata.namespace, name) ?? existing;
    return { status: res.status, body: this.scaleOf(rt, after.obj) };
  }

  private updateScale(
    rt: ResourceType,
    namespace: string | undefined,
    name: string,
    raw: string | undefined,
    contentType: string | undefined,
    ctx: CallContext,
  ): ApiResult {
    if (!rt.scale) throw notFound(this.groupResource(rt), name);
    const existing = this.getStored(rt, namespace, name);
    const body = this.parseBody(raw, contentType, rt);
    return this.writeScale(rt, existing, body, ctx);
  }

  private patchScale(rt: ResourceType, namespace: string | undefined, name: string, type: string, patchBody: unknown, ctx: CallContext): ApiResult {
    if (!rt.scale) throw notFound(this.groupResource(rt), name);
    const existing = this.getStored(rt, namespace, name);
    const current = this.scaleOf(rt, existing.obj);
    let patched: unknown;
    if (type === PATCH_TYPES.json) patched = jsonPatch(current, patchBody);
    else patched = mergePatch(current, patchBody);
    return this.writeScale(rt, existing, patched as Obj, ctx);
  }

  // -------------------------------------------------------------------------
  // delete

  delete(
    rt: ResourceType,
    namespace: string | undefined,
    name: string,
    raw: string | undefined,
    ctx: CallContext,
  ): ApiResult {
    const existing = this.getStored(rt, namespace, name);
    let opts: Obj = {};
    if (raw && raw.trim() !== "") {
      try {
        const parsed: unknown = JSON.parse(raw);
        if (isPlainObject(parsed)) opts = parsed;
      } catch (e) {
        throw badRequest(`error decoding DeleteOptions: ${(e as Error).message}`);
      }
    }
    const pre = (opts.preconditions ?? {}) as Obj;
    const meta = existing.obj.metadata as Obj;
    if (pre.uid && pre.uid !== meta.uid) {
      throw conflict(this.groupResource(rt), name, `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${meta.uid}`);
    }
    if (pre.resourceVersion && String(pre.resourceVersion) !== meta.resourceVersion) {
      throw conflict(
        this.groupResource(rt),
        name,
        `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${meta.resourceVersion}`,
      );
    }
    let policy: string | undefined = ctx.query.get("propagationPolicy") ?? opts.propagationPolicy;
    const orphan = ctx.query.get("orphanDependents") ?? opts.orphanDependents;
    if (policy === undefined && (orphan === true || orphan === "true")) policy = "Orphan";
    if (policy !== undefined && !["Orphan", "Background", "Foreground"].includes(policy)) {
      throw invalid({ group: "meta.k8s.io", kind: "DeleteOptions" }, "", [
        fieldErr.notSupported("propagationPolicy", policy, ["Foreground", "Background", "Orphan", "nil"]),
      ]);
    }
    if (this.dryRun(ctx)) return this.deleteResult(rt, existing.obj, !meta.finalizers?.length);
    return this.deleteObject(rt, existing, policy);
  }

  /** Deletes or starts deleting an object; used by the HTTP handler and the controllers. */
  deleteObject(rt: ResourceType, existing: StoredObject, policy: string | undefined): ApiResult {
    const obj = structuredClone(existing.obj);
    const meta = obj.metadata as Obj;
    const finalizers = new Set<string>((meta.finalizers ?? []) as string[]);
    if (policy === "Foreground") finalizers.add("foregroundDeletion");
    if (policy === "Orphan") finalizers.add("orphan");
    if (rt.storageKey === "/namespaces") finalizers.add("kubernetes-namespace-lifecycle");

    if (finalizers.size === 0) {
      const gone = this.store.remove(rt.storageKey, meta.namespace, meta.name)!;
      return this.deleteResult(rt, gone, true);
    }
    if (meta.deletionTimestamp) {
      // already terminating: only the propagation finalizers may be added
      const fin = (meta.finalizers ?? []) as string[];
      const add = [...finalizers].filter((f) => f !== "kubernetes-namespace-lifecycle" && !fin.includes(f));
      if (add.length === 0) return this.deleteResult(rt, existing.obj, false);
      meta.finalizers = [...fin, ...add];
      const stored = this.store.write(rt.storageKey, obj, existing.managed);
      return this.deleteResult(rt, stored, false);
    }
    finalizers.delete("kubernetes-namespace-lifecycle");
    meta.deletionTimestamp = nowRfc3339();
    meta.deletionGracePeriodSeconds = 0;
    if (typeof meta.generation === "number" && meta.generation > 0) meta.generation += 1;
    if (finalizers.size > 0) meta.finalizers = [...finalizers];
    if (rt.storageKey === "/namespaces") obj.status = { ...(obj.status ?? {}), phase: "Terminating" };
    const stored = this.store.write(rt.storageKey, obj, existing.managed);
    return this.deleteResult(rt, stored, false);
  }

  private deleteResult(rt: ResourceType, obj: Obj, deleted: boolean): ApiResult {
    if (!deleted || rt.returnDeletedObject) return { status: 200, body: this.present(rt, obj) };
    return {
      status: 200,
      body: success({ name: obj.metadata.name, group: rt.group, kind: rt.resource, uid: obj.metadata.uid }),
    };
  }

  deleteCollection(rt: ResourceType, namespace: string | undefined, raw: string | undefined, ctx: CallContext): ApiResult {
    const items = this.select(rt, namespace, ctx);
    const out: Obj[] = [];
    for (const s of items) {
      const res = this.delete(rt, s.obj.metadata.namespace, s.obj.metadata.name, raw, ctx);
      const body = res.body as Obj;
      if (body.kind === rt.kind) out.push(body);
      else out.push(this.present(rt, s.obj));
    }
    return {
      status: 200,
      body: { apiVersion: apiVersionOf(rt), kind: rt.listKind, metadata: { resourceVersion: String(this.store.currentRv()) }, items: out },
    };
  }

  // -------------------------------------------------------------------------
  // direct access for controllers and test helpers

  /** Writes `obj` (in `rt`'s version) through the update pipeline as `manager`. */
  updateAs(rt: ResourceType, obj: Obj, manager: string, subresource?: string): Obj {
    const existing = this.getStored(rt, obj.metadata?.namespace, obj.metadata?.name);
    const ctx: CallContext = { query: new URLSearchParams({ fieldManager: manager }) };
    const res = this.commitUpdate(rt, existing, obj, subresource, ctx, undefined);
    return res.body as Obj;
  }

  createAs(rt: ResourceType, obj: Obj, manager: string): Obj {
    const ctx: CallContext = { query: new URLSearchParams({ fieldManager: manager }) };
    return this.createObject(rt, obj.metadata?.namespace, obj, ctx, undefined).body as Obj;
  }

  /** Writes an object as given (no admission), keeping its managedFields if present. */
  putRaw(rt: ResourceType, obj: Obj): Obj {
    const o = rt.toStorage(structuredClone(obj));
    o.metadata ??= {};
    o.metadata.uid ??= randomUUID();
    o.metadata.creationTimestamp ??= nowRfc3339();
    return this.present(rt, this.store.write(rt.storageKey, o, entriesFromObject(o)));
  }
}

