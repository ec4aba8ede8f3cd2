// Label and field selectors (k8s.io/apimachinery/pkg/labels and pkg/fields).

import { badRequest } from "./errors.js";

export type LabelRequirement =
  | { key: string; op: "=" | "!="; value: string }
  | { key: string; op: "in" | "notin"; values: string[] }
  | { key: string; op: "exists" | "!" }
  | { key: string; op: "gt" | "lt"; value: number };

function splitTopLevel(s: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let cur = "";
  for (const ch of s) {
    if (ch === "(") depth++;
    if (ch === ")") depth--;
    if (ch === "," && depth === 0) {
      parts.push(cur);
      cur = "";
    } else {
      cur += ch;
    }
  }
  parts.push(cur);
  return parts.map((p) => p.trim()).filter((p) => p.length > 0);
}

const KEY = String.raw`[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?`;
const VALUE = String.raw`(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?`;
const keyRe = new RegExp(`^${KEY}$`);
const valueRe = new RegExp(`^${VALUE}$`);

function checkKey(key: string, sel: string): string {
  if (!keyRe.test(key)) throw badRequest(`unable to parse requirement: invalid label key ${JSON.stringify(key)} in selector ${JSON.stringify(sel)}`);
  return key;
}

function checkValue(v: string, sel: string): string {
  if (!valueRe.test(v) || v.length > 63) {
    throw badRequest(`unable to parse requirement: invalid label value ${JSON.stringify(v)} in selector ${JSON.stringify(sel)}`);
  }
  return v;
}

/** Parses a `labelSelector` query parameter. Throws a 400 ApiError when malformed. */
export function parseLabelSelector(sel: string | undefined | null): LabelRequirement[] {
  if (sel === undefined || sel === null || sel.trim() === "") return [];
  const reqs: LabelRequirement[] = [];
  for (const part of splitTopLevel(sel)) {
    let m: RegExpMatchArray | null;
    if ((m = part.match(/^!\s*(\S+)$/))) {
      reqs.push({ key: checkKey(m[1]!, sel), op: "!" });
    } else if ((m = part.match(/^(\S+)\s+(in|notin)\s*\(([^)]*)\)$/))) {
      const values = m[3]!
        .split(",")
        .map((v) => v.trim())
        .filter((v, _i, arr) => v.length > 0 || arr.length === 1);
      reqs.push({ key: checkKey(m[1]!, sel), op: m[2] as "in" | "notin", values: values.map((v) => checkValue(v, sel)) });
    } else if ((m = part.match(/^([^=!<>\s]+)\s*(==|=|!=)\s*(\S*)$/))) {
      reqs.push({ key: checkKey(m[1]!, sel), op: m[2] === "!=" ? "!=" : "=", value: checkValue(m[3]!, sel) });
    } else if ((m = part.match(/^([^=!<>\s]+)\s*([<>])\s*(-?\d+)$/))) {
      reqs.push({ key: checkKey(m[1]!, sel), op: m[2] === ">" ? "gt" : "lt", value: Number(m[3]) });
    } else if ((m = part.match(/^([^=!<>\s()]+)$/))) {
      reqs.push({ key: checkKey(m[1]!, sel), op: "exists" });
    } else {
      throw badRequest(`unable to parse requirement: found '${part}', expected: identifier, '=', '!=', 'in', 'notin' or ','`);
    }
  }
  return reqs;
}

export function matchesLabels(labels: Record<string, string> | undefined, reqs: LabelRequirement[]): boolean {
  const l = labels ?? {};
  for (const r of reqs) {
    const has = Object.prototype.hasOwnProperty.call(l, r.key);
    const v = l[r.key];
    switch (r.op) {
      case "=":
        if (!has || v !== r.value) return false;
        break;
      case "!=":
        if (has && v === r.value) return false;
        break;
      case "in":
        if (!has || !r.values.includes(v!)) return false;
        break;
      case "notin":
        if (has && r.values.includes(v!)) return false;
        break;
      case "exists":
        if (!has) return false;
        break;
      case "!":
        if (has) return false;
        break;
      case "gt":
      case "lt": {
        if (!has) return false;
        const n = Number(v);
        if (!Number.isInteger(n)) return false;
        if (r.op === "gt" ? !(n > r.value) : !(n < r.value)) return false;
        break;
      }
    }
  }
  return true;
}

export interface LabelSelectorObject {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: string; values?: string[] }[];
}

/** metav1.LabelSelectorAsSelector. An empty selector matches everything. */
export function labelSelectorToRequirements(sel: LabelSelectorObject | undefined): LabelRequirement[] {
  if (!sel) return [];
  const reqs: LabelRequirement[] = [];
  for (const [k, v] of Object.entries(sel.matchLabels ?? {})) reqs.push({ key: k, op: "=", value: v });
  for (const e of sel.matchExpressions ?? []) {
    switch (e.operator) {
      case "In":
        reqs.push({ key: e.key, op: "in", values: e.values ?? [] });
        break;
      case "NotIn":
        reqs.push({ key: e.key, op: "notin", values: e.values ?? [] });
        break;
      case "Exists":
        reqs.push({ key: e.key, op: "exists" });
        break;
      case "DoesNotExist":
        reqs.push({ key: e.key, op: "!" });
        break;
    }
  }
  return reqs;
}

/** metav1.FormatLabelSelector, the string form used in scale.status.selector. */
export function formatLabelSelector(sel: LabelSelectorObject | undefined): string {
  const parts: string[] = [];
  for (const k of Object.keys(sel?.matchLabels ?? {}).sort()) parts.push(`${k}=${sel!.matchLabels![k]}`);
  for (const e of sel?.matchExpressions ?? []) {
    const vals = [...(e.values ?? [])].sort().join(",");
    if (e.operator === "In") parts.push(`${e.key} in (${vals})`);
    else if (e.operator === "NotIn") parts.push(`${e.key} notin (${vals})`);
    else if (e.operator === "Exists") parts.push(e.key);
    else if (e.operator === "DoesNotExist") parts.push(`!${e.key}`);
  }
  return parts.join(",");
}

export interface FieldRequirement {
  field: string;
  op: "=" | "!=";
  value: string;
}

/** Parses a `fieldSelector`; `supported` lists the field labels the resource answers to. */
export function parseFieldSelector(sel: string | undefined | null, supported: readonly string[]): FieldRequirement[] {
  if (sel === undefined || sel === null || sel.trim() === "") return [];
  const reqs: FieldRequirement[] = [];
  for (const raw of sel.split(",")) {
    const part = raw.trim();
    if (part === "") continue;
    const m = part.match(/^([^=!]+?)\s*(==|=|!=)\s*(.*)$/);
    if (!m) throw badRequest(`invalid selector: '${sel}'; can't understand '${part}'`);
    const field = m[1]!.trim();
    if (!supported.includes(field)) throw badRequest(`field label not supported: ${field}`);
    reqs.push({ field, op: m[2] === "!=" ? "!=" : "=", value: m[3]!.trim() });
  }
  return reqs;
}

function getPath(obj: unknown, path: string): unknown {
  let cur: unknown = obj;
  for (const seg of path.split(".")) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, unknown>)[seg];
  }
  return cur;
}

export function matchesFields(obj: unknown, reqs: FieldRequirement[]): boolean {
  for (const r of reqs) {
    const v = getPath(obj, r.field);
    const s = v === undefined || v === null ? "" : String(v);
    if (r.op === "=" ? s !== r.value : s === r.value) return false;
  }
  return true;
}
