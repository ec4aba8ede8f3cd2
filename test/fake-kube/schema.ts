// Structural OpenAPI v3 schemas of CRDs: null dropping, pruning, defaulting, validation
// (kube-openapi messages as apiextensions-apiserver reports them) and x-kubernetes-validations.

import { CelError, type CelValue, evalCel, usesOldSelf } from "./cel.js";
import { FieldError, fieldErr, goFloat } from "./errors.js";

export interface ValidationRule {
  rule: string;
  message?: string;
  messageExpression?: string;
  reason?: string;
  fieldPath?: string;
  optionalOldSelf?: boolean;
}

export interface JSONSchema {
  type?: string;
  format?: string;
  description?: string;
  properties?: Record<string, JSONSchema>;
  required?: string[];
  items?: JSONSchema;
  additionalProperties?: JSONSchema | boolean;
  enum?: unknown[];
  default?: unknown;
  nullable?: boolean;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: boolean;
  exclusiveMaximum?: boolean;
  multipleOf?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  minItems?: number;
  maxItems?: number;
  uniqueItems?: boolean;
  minProperties?: number;
  maxProperties?: number;
  allOf?: JSONSchema[];
  anyOf?: JSONSchema[];
  oneOf?: JSONSchema[];
  not?: JSONSchema;
  "x-kubernetes-preserve-unknown-fields"?: boolean;
  "x-kubernetes-int-or-string"?: boolean;
  "x-kubernetes-embedded-resource"?: boolean;
  "x-kubernetes-list-type"?: "atomic" | "set" | "map";
  "x-kubernetes-list-map-keys"?: string[];
  "x-kubernetes-map-type"?: "atomic" | "granular";
  "x-kubernetes-validations"?: ValidationRule[];
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** ObjectMeta fields, in kube-apiserver's serialisation order. */
export const OBJECT_META_FIELDS = new Set([
  "name",
  "generateName",
  "namespace",
  "selfLink",
  "uid",
  "resourceVersion",
  "generation",
  "creationTimestamp",
  "deletionTimestamp",
  "deletionGracePeriodSeconds",
  "labels",
  "annotations",
  "ownerReferences",
  "finalizers",
  "managedFields",
]);

function preserves(s: JSONSchema | undefined): boolean {
  return s?.["x-kubernetes-preserve-unknown-fields"] === true;
}

function join(path: string, key: string): string {
  return path === "" ? key : `${path}.${key}`;
}

// ---------------------------------------------------------------------------
// Pruning and defaulting (run on decode, before validation)

/**
 * Drops nulls of non-nullable fields and unknown fields, in place. Returns the paths of the
 * pruned unknown fields (for the "unknown field" warnings / strict field validation).
 */
export function prune(obj: JsonObject, schema: JSONSchema): string[] {
  const pruned: string[] = [];
  pruneObject(obj, schema, "", pruned, true);
  return pruned.sort();
}

function pruneMetadata(meta: Json, path: string, pruned: string[]): void {
  if (!isPlainObject(meta)) return;
  for (const k of Object.keys(meta)) {
    if (!OBJECT_META_FIELDS.has(k)) {
      pruned.push(join(path, k));
      delete meta[k];
    }
  }
}

function pruneObject(obj: JsonObject, s: JSONSchema, path: string, pruned: string[], root: boolean): void {
  const props = s.properties;
  const embedded = root || s["x-kubernetes-embedded-resource"] === true;
  for (const key of Object.keys(obj)) {
    const v = obj[key] as Json;
    if (embedded && (key === "apiVersion" || key === "kind")) continue;
    if (embedded && key === "metadata") {
      pruneMetadata(v, join(path, key), pruned);
      continue;
    }
    let child: JSONSchema | undefined;
    if (props && Object.prototype.hasOwnProperty.call(props, key)) child = props[key];
    else if (isPlainObject(s.additionalProperties)) child = s.additionalProperties as JSONSchema;
    if (child === undefined) {
      if (preserves(s) || s.additionalProperties === true) continue;
      pruned.push(join(path, key));
      delete obj[key];
      continue;
    }
    if (v === null) {
      if (child.nullable !== true && props && Object.prototype.hasOwnProperty.call(props, key)) delete obj[key];
      continue;
    }
    pruneValue(v, child, join(path, key), pruned);
  }
}

function pruneValue(v: Json, s: JSONSchema, path: string, pruned: string[]): void {
  if (isPlainObject(v)) {
    if (s.type === "object" || s.properties || s.additionalProperties || s["x-kubernetes-embedded-resource"]) {
      pruneObject(v as JsonObject, s, path, pruned, false);
    } else if (!preserves(s) && s.type === undefined && !s["x-kubernetes-int-or-string"]) {
      // schemaless node without preserve-unknown-fields: nothing below is known
      for (const k of Object.keys(v)) {
        pruned.push(join(path, k));
        delete (v as JsonObject)[k];
      }
    }
  } else if (Array.isArray(v) && s.items) {
    v.forEach((item, i) => {
      if (item !== null) pruneValue(item, s.items!, `${path}[${i}]`, pruned);
    });
  }
}

/** Applies `default` values, in place (apiextensions structural defaulting). */
export function applyDefaults(v: Json, s: JSONSchema | undefined): void {
  if (!s) return;
  if (isPlainObject(v)) {
    const obj = v as JsonObject;
    if (s.properties) {
      for (const [k, ps] of Object.entries(s.properties)) {
        if (!Object.prototype.hasOwnProperty.call(obj, k) && ps.default !== undefined) {
          obj[k] = structuredClone(ps.default) as Json;
        }
      }
      for (const [k, ps] of Object.entries(s.properties)) {
        if (Object.prototype.hasOwnProperty.call(obj, k)) applyDefaults(obj[k] as Json, ps);
      }
    }
    if (isPlainObject(s.additionalProperties)) {
      for (const k of Object.keys(obj)) {
        if (!s.properties || !Object.prototype.hasOwnProperty.call(s.properties, k)) {
          applyDefaults(obj[k] as Json, s.additionalProperties as JSONSchema);
        }
      }
    }
  } else if (Array.isArray(v) && s.items) {
    for (const item of v) applyDefaults(item, s.items);
  }
}

// ---------------------------------------------------------------------------
// OpenAPI validation (kube-openapi + apiextensions kubeOpenAPIResultToFieldErrors)

function jsonType(v: unknown): string {
  if (v === null || v === undefined) return "null";
  if (typeof v === "string") return "string";
  if (typeof v === "boolean") return "boolean";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
  if (Array.isArray(v)) return "array";
  return "object";
}

function limitText(limit: number, value: number): string {
  if (Number.isInteger(limit) && Number.isInteger(value)) return String(limit);
  return goFloat(limit);
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== typeof b || a === null || b === null) return false;
  if (Array.isArray(a)) {
    return Array.isArray(b) && a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  }
  if (typeof a === "object") {
    if (Array.isArray(b)) return false;
    const ao = a as Record<string, unknown>;
    const bo = b as Record<string, unknown>;
    const ka = Object.keys(ao);
    if (ka.length !== Object.keys(bo).length) return false;
    return ka.every((k) => Object.prototype.hasOwnProperty.call(bo, k) && deepEqual(ao[k], bo[k]));
  }
  return false;
}

const FORMATS: Record<string, (s: string) => boolean> = {
  uuid: (s) => /^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$/i.test(s),
  "date-time": (s) => /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/.test(s) && !Number.isNaN(Date.parse(s)),
  datetime: (s) => FORMATS["date-time"]!(s),
  date: (s) => /^\d{4}-\d{2}-\d{2}$/.test(s) && !Number.isNaN(Date.parse(s)),
  email: (s) => /^[^@\s]+@[^@\s]+$/.test(s),
  hostname: (s) => s.length <= 255 && /^([a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)*\.?$/.test(s),
  ipv4: (s) => /^((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/.test(s),
  ipv6: (s) => s.includes(":") && /^[0-9a-fA-F:.]+$/.test(s),
  cidr: (s) => /^[0-9a-fA-F:.]+\/\d{1,3}$/.test(s),
  mac: (s) => /^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$/.test(s),
  byte: (s) => /^[A-Za-z0-9+/]*={0,2}$/.test(s) && s.length % 4 === 0,
  uri: (s) => {
    try {
      new URL(s);
      return true;
    } catch {
      return false;
    }
  },
  duration: (s) => /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h|d|w)\s*)+$/.test(s) || /^\d+$/.test(s),
};

/** Validates `value` against `schema`; `path` is the field path of `value` ("" for the root). */
export function validateSchema(value: unknown, schema: JSONSchema, path = ""): FieldError[] {
  const errs: FieldError[] = [];
  validateNode(value, schema, path, errs, true);
  return errs;
}

function validateNode(v: unknown, s: JSONSchema, path: string, errs: FieldError[], root: boolean): void {
  const name = path;
  // type
  const actual = jsonType(v);
  if (v === null || v === undefined) {
    if (s.nullable) return;
    if (s.type !== undefined || s["x-kubernetes-int-or-string"]) {
      const t = s["x-kubernetes-int-or-string"] ? "integer,string" : s.type!;
      errs.push(fieldErr.typeInvalid(path, null, `${name} in body must be of type ${t}`));
    }
    return;
  }
  if (s["x-kubernetes-int-or-string"]) {
    if (actual !== "integer" && actual !== "string") {
      errs.push(fieldErr.typeInvalid(path, actual, `${name} in body must be of type integer,string: "${actual}"`));
      return;
    }
  } else if (s.type !== undefined) {
    const ok = s.type === actual || (s.type === "number" && actual === "integer");
    if (!ok) {
      errs.push(fieldErr.typeInvalid(path, actual, `${name} in body must be of type ${s.type}: "${actual}"`));
      return;
    }
  }

  // allOf / anyOf / oneOf / not (value validations only in structural schemas)
  for (const sub of s.allOf ?? []) validateNode(v, sub, path, errs, root);
  if (s.anyOf && s.anyOf.length > 0) {
    const ok = s.anyOf.some((sub) => validateSchema(v, sub, path).length === 0);
    if (!ok) errs.push(fieldErr.invalid(path, v, `${name} in body must match at least one schema in anyOf`));
  }
  if (s.oneOf && s.oneOf.length > 0) {
    const n = s.oneOf.filter((sub) => validateSchema(v, sub, path).length === 0).length;
    if (n !== 1) errs.push(fieldErr.invalid(path, v, `${name} in body must match exactly one schema in oneOf`));
  }
  if (s.not && validateSchema(v, s.not, path).length === 0) {
    errs.push(fieldErr.invalid(path, v, `${name} in body should not match schema in not`));
  }

  if (typeof v === "string") {
    if (s.format && FORMATS[s.format] && !FORMATS[s.format]!(v)) {
      errs.push(fieldErr.invalid(path, v, `${name} in body must be of type ${s.format}: ${JSON.stringify(v)}`));
    }
    const len = [...v].length;
    if (s.maxLength !== undefined && len > s.maxLength) {
      errs.push(new FieldError("FieldValueTooLong", path, v, tooLongDetail(s.maxLength)));
    }
    if (s.minLength !== undefined && len < s.minLength) {
      errs.push(fieldErr.invalid(path, v, `${name} in body should be at least ${s.minLength} chars long`));
    }
    if (s.pattern !== undefined) {
      let re: RegExp | undefined;
      try {
        re = new RegExp(s.pattern, "u");
      } catch {
        re = undefined;
      }
      if (re && !re.test(v)) errs.push(fieldErr.invalid(path, v, `${name} in body should match '${s.pattern}'`));
    }
  }

  if (typeof v === "number") {
    if (s.multipleOf !== undefined && s.multipleOf > 0) {
      const q = v / s.multipleOf;
      if (Math.abs(q - Math.round(q)) > 1e-9) {
        errs.push(fieldErr.invalid(path, v, `${name} in body should be a multiple of ${limitText(s.multipleOf, v)}`));
      }
    }
    if (s.maximum !== undefined) {
      const bad = s.exclusiveMaximum ? v >= s.maximum : v > s.maximum;
      if (bad) {
        const rel = s.exclusiveMaximum ? "less than" : "less than or equal to";
        errs.push(fieldErr.invalid(path, v, `${name} in body should be ${rel} ${limitText(s.maximum, v)}`));
      }
    }
    if (s.minimum !== undefined) {
      const bad = s.exclusiveMinimum ? v <= s.minimum : v < s.minimum;
      if (bad) {
        const rel = s.exclusiveMinimum ? "greater than" : "greater than or equal to";
        errs.push(fieldErr.invalid(path, v, `${name} in body should be ${rel} ${limitText(s.minimum, v)}`));
      }
    }
  }

  if (Array.isArray(v)) {
    if (s.maxItems !== undefined && v.length > s.maxItems) errs.push(fieldErr.tooMany(path, v.length, s.maxItems));
    if (s.minItems !== undefined && v.length < s.minItems) {
      errs.push(fieldErr.invalid(path, v.length, `${name} in body should have at least ${s.minItems} items`));
    }
    if (s.uniqueItems) {
      const dup = v.some((x, i) => v.findIndex((y) => deepEqual(x, y)) !== i);
      if (dup) errs.push(fieldErr.invalid(path, "", `${name} in body shouldn't contain duplicates`));
    }
  }

  if (s.enum !== undefined && s.enum.length > 0 && !s.enum.some((e) => deepEqual(e, v))) {
    errs.push(
      fieldErr.notSupported(
        path,
        v,
        s.enum.map((e) => (typeof e === "string" ? e : JSON.stringify(e))),
      ),
    );
  }

  if (isPlainObject(v)) {
    const keys = Object.keys(v).filter((k) => !(root && (k === "apiVersion" || k === "kind" || k === "metadata")));
    if (s.maxProperties !== undefined && keys.length > s.maxProperties) {
      errs.push(fieldErr.tooMany(path, keys.length, s.maxProperties));
    }
    if (s.minProperties !== undefined && keys.length < s.minProperties) {
      errs.push(fieldErr.invalid(path, keys.length, `${name} in body should have at least ${s.minProperties} properties`));
    }
    for (const req of s.required ?? []) {
      if (!Object.prototype.hasOwnProperty.call(v, req)) errs.push(fieldErr.required(join(path, req)));
    }
    for (const [k, ps] of Object.entries(s.properties ?? {})) {
      if (root && k === "metadata") continue;
      if (Object.prototype.hasOwnProperty.call(v, k)) validateNode(v[k], ps, join(path, k), errs, false);
    }
    if (isPlainObject(s.additionalProperties)) {
      for (const k of Object.keys(v)) {
        if (s.properties && Object.prototype.hasOwnProperty.call(s.properties, k)) continue;
        validateNode(v[k], s.additionalProperties as JSONSchema, join(path, k), errs, false);
      }
    }
  }

  if (Array.isArray(v) && s.items) {
    v.forEach((item, i) => validateNode(item, s.items!, `${path}[${i}]`, errs, false));
    validateListType(v, s, path, errs);
  }
}

function tooLongDetail(max: number): string {
  return `may not be more than ${max} ${max === 1 ? "byte" : "bytes"}`;
}

/** x-kubernetes-list-type set/map invariants (structurallisttype.ValidateListSetsAndMaps). */
function validateListType(v: unknown[], s: JSONSchema, path: string, errs: FieldError[]): void {
  const lt = s["x-kubernetes-list-type"];
  if (lt === "set") {
    v.forEach((x, i) => {
      if (v.findIndex((y) => deepEqual(x, y)) !== i) errs.push(fieldErr.duplicate(`${path}[${i}]`, x));
    });
  } else if (lt === "map") {
    const keys = s["x-kubernetes-list-map-keys"] ?? [];
    const seen: Record<string, unknown>[] = [];
    v.forEach((x, i) => {
      if (!isPlainObject(x)) return;
      const k: Record<string, unknown> = {};
      for (const key of keys) {
        if (Object.prototype.hasOwnProperty.call(x, key)) k[key] = x[key];
        else if (s.items?.properties?.[key]?.default !== undefined) k[key] = s.items.properties[key]!.default;
      }
      if (seen.some((o) => deepEqual(o, k))) errs.push(fieldErr.duplicate(`${path}[${i}]`, k));
      else seen.push(k);
    });
  }
}

// ---------------------------------------------------------------------------
// x-kubernetes-validations

const BLOCKING: ReadonlySet<string> = new Set([
  "FieldValueNotSupported",
  "FieldValueRequired",
  "FieldValueTooLong",
  "FieldValueTooMany",
  "FieldValueTypeInvalid",
]);

/** hasBlockingErr: schema errors that keep CEL rules from running. */
export function blockingError(errs: FieldError[]): FieldError | undefined {
  if (errs.some((e) => BLOCKING.has(e.type))) {
    return fieldErr.invalid(
      "<nil>",
      null,
      "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
    );
  }
  return undefined;
}

/** Converts a JSON value to a CEL value, using the schema to tell ints from doubles. */
export function toCel(v: unknown, s: JSONSchema | undefined, root = false): CelValue {
  if (v === null || v === undefined) return null;
  if (typeof v === "number") {
    if (s?.type === "number") return v;
    return Number.isInteger(v) ? BigInt(v) : v;
  }
  if (typeof v === "string" || typeof v === "boolean") return v;
  if (Array.isArray(v)) return v.map((x) => toCel(x, s?.items));
  const out: { [k: string]: CelValue } = {};
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    if (root && k === "metadata" && isPlainObject(x)) {
      // only name and generateName of the root metadata are visible to rules
      const m: { [k: string]: CelValue } = {};
      if (typeof x.name === "string") m.name = x.name;
      if (typeof x.generateName === "string") m.generateName = x.generateName;
      out[k] = m;
      continue;
    }
    const child = s?.properties?.[k] ?? (isPlainObject(s?.additionalProperties) ? (s!.additionalProperties as JSONSchema) : undefined);
    out[k] = toCel(x, child);
  }
  return out;
}

function ruleMessageOrDefault(r: ValidationRule): string {
  if (!r.message || r.message.length === 0) return `failed rule: ${r.rule.trim()}`;
  return r.message.trim();
}

function ruleErrorString(r: ValidationRule): string {
  if (r.message && r.message.length > 0) return r.message.trim();
  return r.rule.trim();
}

function childPath(path: string, child: string): string {
  const c = child.replace(/^\./, "");
  return path === "" || path === "<nil>" ? c : `${path}.${c}`;
}

function fieldErrorForReason(path: string, value: unknown, detail: string, reason: string | undefined): FieldError {
  switch (reason) {
    case "FieldValueForbidden":
      return fieldErr.forbidden(path, detail);
    case "FieldValueRequired":
      return fieldErr.required(path, detail);
    case "FieldValueDuplicate":
      return fieldErr.duplicate(path, value);
    default:
      return fieldErr.invalid(path, value, detail);
  }
}

function schemaTypeName(s: JSONSchema, v: unknown): string {
  if (s.type) return s.type;
  if (s["x-kubernetes-int-or-string"]) return typeof v === "string" ? "string" : "integer";
  return jsonType(v);
}

/**
 * Evaluates the x-kubernetes-validations rules of `schema` and its children.
 * `old` is the previous object on update (transition rules only run when it is present).
 */
export function validateCelRules(value: unknown, old: unknown, schema: JSONSchema): FieldError[] {
  const errs: FieldError[] = [];
  celNode(value, old, schema, "<nil>", errs, true);
  return errs;
}

function celNode(v: unknown, old: unknown, s: JSONSchema, path: string, errs: FieldError[], root: boolean): void {
  if (v === null || v === undefined) return;
  const rules = s["x-kubernetes-validations"] ?? [];
  if (rules.length > 0) {
    const self = toCel(v, s, root);
    const hasOld = old !== undefined && old !== null;
    const oldSelf = hasOld ? toCel(old, s, root) : null;
    const type = schemaTypeName(s, v);
    for (const r of rules) {
      const transition = usesOldSelf(r.rule);
      if (transition && !hasOld && !r.optionalOldSelf) continue;
      let result: CelValue;
      try {
        result = evalCel(r.rule, { self, oldSelf });
      } catch (e) {
        const msg = e instanceof CelError ? e.message : String(e);
        if (msg.startsWith("no such overload")) {
          errs.push(
            fieldErr.invalid(
              path,
              type,
              `'${msg}': call arguments did not match a supported operator, function or macro signature for rule: ${ruleErrorString(r)}`,
            ),
          );
        } else {
          errs.push(fieldErr.invalid(path, type, `${msg} evaluating rule: ${ruleErrorString(r)}`));
        }
        continue;
      }
      if (result === true) continue;
      const errPath = r.fieldPath ? childPath(path, r.fieldPath) : path;
      let detail: string | undefined;
      if (r.messageExpression) {
        try {
          const m = evalCel(r.messageExpression, { self, oldSelf });
          if (typeof m === "string" && m.trim().length > 0 && !/\n/.test(m)) detail = m.trim();
        } catch {
          detail = undefined;
        }
      }
      if (detail === undefined) detail = ruleMessageOrDefault(r);
      const badValue = type === "object" || type === "array" ? type : v;
      errs.push(fieldErrorForReason(errPath, badValue, detail, r.reason));
    }
  }
  const base = path === "<nil>" ? "" : path;
  if (isPlainObject(v)) {
    const oldObj = isPlainObject(old) ? old : undefined;
    for (const [k, ps] of Object.entries(s.properties ?? {})) {
      if (root && k === "metadata") continue;
      if (Object.prototype.hasOwnProperty.call(v, k)) celNode(v[k], oldObj?.[k], ps, join(base, k), errs, false);
    }
    if (isPlainObject(s.additionalProperties)) {
      for (const k of Object.keys(v)) {
        if (s.properties && Object.prototype.hasOwnProperty.call(s.properties, k)) continue;
        celNode(v[k], oldObj?.[k], s.additionalProperties as JSONSchema, `${base}[${k}]`, errs, false);
      }
    }
  } else if (Array.isArray(v) && s.items) {
    const keys = s["x-kubernetes-list-type"] === "map" ? (s["x-kubernetes-list-map-keys"] ?? []) : undefined;
    const oldArr = Array.isArray(old) ? old : [];
    v.forEach((item, i) => {
      let oldItem: unknown;
      if (keys && isPlainObject(item)) {
        oldItem = oldArr.find((o) => isPlainObject(o) && keys.every((k) => deepEqual(o[k], item[k])));
      }
      celNode(item, oldItem, s.items!, `${base}[${i}]`, errs, false);
    });
  }
}

/** The schema node for a child field name (properties, then additionalProperties). */
export function schemaChild(s: JSONSchema | undefined, key: string): JSONSchema | undefined {
  if (!s) return undefined;
  if (s.properties && Object.prototype.hasOwnProperty.call(s.properties, key)) return s.properties[key];
  if (isPlainObject(s.additionalProperties)) return s.additionalProperties as JSONSchema;
  return undefined;
}

export { deepEqual };
