// JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch.

import { badRequest, unprocessable } from "./errors.js";
import { type TypeNode } from "./managed.js";
import { deepEqual, isPlainObject } from "./schema.js";

export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isPlainObject(patch)) return structuredClone(patch);
  const out: Record<string, unknown> = isPlainObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

interface JsonPatchOp {
  op: string;
  path: string;
  value?: unknown;
  from?: string;
}

function parsePointer(p: string): string[] {
  if (p === "") return [];
  if (!p.startsWith("/")) throw unprocessable(`JSON pointer must be empty or start with a "/": ${p}`);
  return p
    .slice(1)
    .split("/")
    .map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function getAt(doc: unknown, parts: string[]): { ok: boolean; value?: unknown } {
  let cur = doc;
  for (const part of parts) {
    if (Array.isArray(cur)) {
      const i = Number(part);
      if (!/^\d+$/.test(part) || i >= cur.length) return { ok: false };
      cur = cur[i];
    } else if (isPlainObject(cur)) {
      if (!Object.prototype.hasOwnProperty.call(cur, part)) return { ok: false };
      cur = cur[part];
    } else {
      return { ok: false };
    }
  }
  return { ok: true, value: cur };
}

function missing(op: string, path: string): never {
  throw unprocessable(`${op} operation does not apply: doc is missing path: ${JSON.stringify(path)}: missing value`);
}

function container(doc: unknown, parts: string[], op: string, path: string): unknown {
  const parent = getAt(doc, parts.slice(0, -1));
  if (!parent.ok || (parent.value === null || typeof parent.value !== "object")) missing(op, path);
  return parent.value;
}

function addAt(doc: unknown, path: string, value: unknown, op = "add"): unknown {
  const parts = parsePointer(path);
  if (parts.length === 0) return structuredClone(value);
  const c = container(doc, parts, op, path);
  const last = parts[parts.length - 1]!;
  if (Array.isArray(c)) {
    const i = last === "-" ? c.length : Number(last);
    if (!/^(\d+|-)$/.test(last) || i > c.length) throw unprocessable(`${op} operation does not apply: doc is missing path: ${JSON.stringify(path)}: missing value`);
    c.splice(i, 0, structuredClone(value));
  } else {
    (c as Record<string, unknown>)[last] = structuredClone(value);
  }
  return doc;
}

function removeAt(doc: unknown, path: string, op = "remove"): unknown {
  const parts = parsePointer(path);
  const c = container(doc, parts, op, path);
  const last = parts[parts.length - 1]!;
  if (Array.isArray(c)) {
    const i = Number(last);
    if (!/^\d+$/.test(last) || i >= c.length) missing(op, path);
    c.splice(i, 1);
  } else {
    if (!Object.prototype.hasOwnProperty.call(c, last)) missing(op, path);
    delete (c as Record<string, unknown>)[last];
  }
  return doc;
}

export function jsonPatch(target: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) throw badRequest("json: cannot unmarshal object into Go value of type jsonpatch.Patch");
  let doc = structuredClone(target);
  for (const raw of ops as JsonPatchOp[]) {
    if (!isPlainObject(raw)) throw badRequest("json: cannot unmarshal into Go value of type jsonpatch.Operation");
    const path = typeof raw.path === "string" ? raw.path : undefined;
    switch (raw.op) {
      case "add":
        if (path === undefined) throw unprocessable("add operation does not apply: doc is missing path: \"\": missing value");
        doc = addAt(doc, path, raw.value);
        break;
      case "remove":
        if (path === undefined) throw unprocessable("remove operation does not apply: doc is missing path: \"\": missing value");
        doc = removeAt(doc, path);
        break;
      case "replace": {
        if (path === undefined) throw unprocessable("replace operation does not apply: doc is missing key: : missing value");
        const parts = parsePointer(path);
        if (parts.length === 0) {
          doc = structuredClone(raw.value);
          break;
        }
        if (!getAt(doc, parts).ok) throw unprocessable(`replace operation does not apply: doc is missing key: ${path}: missing value`);
        doc = removeAt(doc, path, "replace");
        doc = addAt(doc, path, raw.value, "replace");
        break;
      }
      case "move": {
        const from = getAt(doc, parsePointer(String(raw.from)));
        if (!from.ok) throw unprocessable(`move operation does not apply: doc is missing from path: ${raw.from}: missing value`);
        doc = removeAt(doc, String(raw.from), "move");
        doc = addAt(doc, path ?? "", from.value, "move");
        break;
      }
      case "copy": {
        const from = getAt(doc, parsePointer(String(raw.from)));
        if (!from.ok) throw unprocessable(`copy operation does not apply: doc is missing from path: ${raw.from}: missing value`);
        doc = addAt(doc, path ?? "", from.value, "copy");
        break;
      }
      case "test": {
        const cur = getAt(doc, parsePointer(path ?? ""));
        const expected = raw.value === undefined ? null : raw.value;
        if (!(cur.ok ? deepEqual(cur.value, expected) : expected === null)) {
          throw unprocessable(`testing value ${path} failed: test failed`);
        }
        break;
      }
      default:
        throw unprocessable(`Unexpected kind: ${String(raw.op)}`);
    }
  }
  return doc;
}

// ---------------------------------------------------------------------------
// Strategic merge patch (k8s.io/apimachinery/pkg/util/strategicpatch), for built-in types.

const DIRECTIVE = "$patch";
const RETAIN_KEYS = "$retainKeys";
const DELETE_FROM_PRIMITIVE = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER = "$setElementOrder/";

export function strategicMergePatch(original: unknown, patch: unknown, t: TypeNode): unknown {
  if (!isPlainObject(patch)) throw badRequest("the body of the request must be a JSON object for a strategic merge patch");
  return smpMap(isPlainObject(original) ? original : {}, patch, t);
}

function smpMap(original: Record<string, unknown>, patch: Record<string, unknown>, t: TypeNode): Record<string, unknown> | undefined {
  const directive = patch[DIRECTIVE];
  if (directive === "delete") return undefined;
  if (directive === "replace") {
    const out = { ...patch };
    delete out[DIRECTIVE];
    return structuredClone(out);
  }
  let out: Record<string, unknown> = { ...original };
  const retain = patch[RETAIN_KEYS];
  for (const [k, v] of Object.entries(patch)) {
    if (k === DIRECTIVE || k === RETAIN_KEYS || k.startsWith(SET_ELEMENT_ORDER)) continue;
    if (k.startsWith(DELETE_FROM_PRIMITIVE)) {
      const field = k.slice(DELETE_FROM_PRIMITIVE.length);
      if (Array.isArray(out[field]) && Array.isArray(v)) {
        out[field] = (out[field] as unknown[]).filter((x) => !v.some((d) => deepEqual(d, x)));
      }
      continue;
    }
    if (v === null) {
      delete out[k];
      continue;
    }
    const child = t.child(k);
    if (isPlainObject(v)) {
      const merged = smpMap(isPlainObject(out[k]) ? (out[k] as Record<string, unknown>) : {}, v, child);
      if (merged === undefined) delete out[k];
      else out[k] = merged;
    } else if (Array.isArray(v)) {
      out[k] = smpList(Array.isArray(out[k]) ? (out[k] as unknown[]) : [], v, child);
    } else {
      out[k] = v;
    }
  }
  if (Array.isArray(retain)) {
    const keep = new Set(retain.map(String));
    out = Object.fromEntries(Object.entries(out).filter(([k]) => keep.has(k)));
  }
  return out;
}

function smpList(original: unknown[], patch: unknown[], t: TypeNode): unknown[] {
  if (patch.some((x) => isPlainObject(x) && x[DIRECTIVE] === "replace")) {
    return structuredClone(patch.filter((x) => !(isPlainObject(x) && x[DIRECTIVE] === "replace")));
  }
  const li = t.list();
  if (li.kind === "map") {
    const key = li.keys[0]!;
    const out = [...original];
    for (const item of patch) {
      if (!isPlainObject(item) || !Object.prototype.hasOwnProperty.call(item, key)) {
        throw badRequest(`map: ${JSON.stringify(item)} does not contain declared merge key: ${key}`);
      }
      const idx = out.findIndex((x) => isPlainObject(x) && deepEqual(x[key], item[key]));
      if (item[DIRECTIVE] === "delete") {
        if (idx >= 0) out.splice(idx, 1);
        continue;
      }
      if (idx >= 0) {
        const merged = smpMap(out[idx] as Record<string, unknown>, item, t.items());
        if (merged === undefined) out.splice(idx, 1);
        else out[idx] = merged;
      } else {
        const clean = { ...item };
        delete clean[DIRECTIVE];
        out.push(structuredClone(clean));
      }
    }
    return out;
  }
  if (li.kind === "set") {
    const out = [...original];
    for (const item of patch) if (!out.some((x) => deepEqual(x, item))) out.push(item);
    return out;
  }
  return structuredClone(patch);
}
