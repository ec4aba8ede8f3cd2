// Unit tests of the pieces that need no server: the CEL subset, schema validation messages and
// Go value formatting.

import { describe, expect, it } from "vitest";

import { CelError, evalCel } from "./cel.js";
import { goFloat, goSharpV, invalid } from "./errors.js";
import { type JSONSchema, applyDefaults, prune, validateCelRules, validateSchema } from "./schema.js";

const ev = (src: string, self: unknown = {}, oldSelf: unknown = null) =>
  evalCel(src, { self: self as never, oldSelf: oldSelf as never });

describe("CEL subset", () => {
  it("evaluates field access, comparisons and logic", () => {
    const self = { a: 1n, b: 2n, name: "llama", tags: ["x", "y"], m: { k: "v" } };
    expect(ev("self.a < self.b && self.name == 'llama'", self)).toBe(true);
    expect(ev("self.a > self.b || !(self.name != 'llama')", self)).toBe(true);
    expect(ev("self.a + self.b * 3 - 1", self)).toBe(6n);
    expect(ev("7 / 2", self)).toBe(3n);
    expect(ev("7.0 / 2.0", self)).toBe(3.5);
    expect(ev("-7 % 3", self)).toBe(-1n);
    expect(ev("self.a == 1.0", self)).toBe(true);
    expect(ev("self.b > 1.5", self)).toBe(true);
    expect(ev("self.a > 0 ? 'pos' : 'neg'", self)).toBe("pos");
    expect(ev("'x' in self.tags && 'k' in self.m && !('z' in self.tags)", self)).toBe(true);
    expect(ev("self.m['k'] + self.tags[1]", self)).toBe("vy");
    expect(ev("[1, 2] + [3]", self)).toEqual([1n, 2n, 3n]);
    expect(ev("{'a': 1}.a", self)).toBe(1n);
  });

  it("supports has(), size() and string functions", () => {
    const self = { name: "llama-3", list: [1n, 2n, 3n] };
    expect(ev("has(self.name) && !has(self.other)", self)).toBe(true);
    expect(ev("size(self.name) == 7 && self.list.size() == 3", self)).toBe(true);
    expect(ev("self.name.startsWith('llama') && self.name.endsWith('-3') && self.name.contains('ma-')", self)).toBe(true);
    expect(ev("self.name.matches('^[a-z]+-[0-9]$')", self)).toBe(true);
    expect(ev("self.name.upperAscii()", self)).toBe("LLAMA-3");
    expect(ev("string(self.list[0]) + '/' + string(size(self.list))", self)).toBe("1/3");
    expect(ev("int('42') + int(2.9)", self)).toBe(44n);
    expect(ev("self.name.split('-').join('_')", self)).toBe("llama_3");
  });

  it("supports list macros", () => {
    const self = { items: [{ n: 1n }, { n: 2n }, { n: 3n }] };
    expect(ev("self.items.all(i, i.n > 0)", self)).toBe(true);
    expect(ev("self.items.exists(i, i.n == 2)", self)).toBe(true);
    expect(ev("self.items.exists_one(i, i.n > 2)", self)).toBe(true);
    expect(ev("self.items.map(i, i.n * 2)", self)).toEqual([2n, 4n, 6n]);
    expect(ev("self.items.filter(i, i.n >= 2).size()", self)).toBe(2n);
    expect(ev("self.items.map(i, i.n > 1, i.n)", self)).toEqual([2n, 3n]);
  });

  it("reports runtime errors like cel-go, and absorbs them in && and ||", () => {
    expect(() => ev("self.missing > 1", {})).toThrow(new CelError("no such key: missing"));
    expect(() => ev("1 / 0")).toThrow(new CelError("division by zero"));
    expect(() => ev("9223372036854775807 + 1")).toThrow(new CelError("integer overflow"));
    expect(() => ev("1 + 1.0")).toThrow(/no such overload/);
    expect(ev("self.missing > 1 || true", {})).toBe(true);
    expect(ev("false && self.missing > 1", {})).toBe(false);
  });

  it("compares with oldSelf", () => {
    expect(ev("self == oldSelf", { a: 1n }, { a: 1n })).toBe(true);
    expect(ev("self.a >= oldSelf.a", { a: 1n }, { a: 2n })).toBe(false);
  });
});

describe("schema validation", () => {
  const schema: JSONSchema = {
    type: "object",
    properties: {
      spec: {
        type: "object",
        "x-kubernetes-validations": [
          { rule: "self.max >= self.min", message: "max must be at least min" },
          { rule: "self.min < 100" },
          { rule: "self.name.size() <= oldSelf.name.size()", messageExpression: "'name may not grow beyond ' + string(oldSelf.name.size())" },
        ],
        properties: {
          min: { type: "integer", default: 1 },
          max: { type: "integer", default: 10, maximum: 1000000 },
          name: { type: "string", default: "x", "x-kubernetes-validations": [{ rule: "self != 'forbidden'", message: "name is forbidden" }] },
          ratio: { type: "number", minimum: 0.5 },
        },
      },
    },
  };

  it("prunes, defaults and validates", () => {
    const obj = { apiVersion: "a/v1", kind: "K", metadata: { name: "n", bogus: 1 }, spec: { min: 5, junk: true }, top: 1 };
    expect(prune(obj, schema)).toEqual(["metadata.bogus", "spec.junk", "top"]);
    applyDefaults(obj, schema);
    expect(obj).toEqual({ apiVersion: "a/v1", kind: "K", metadata: { name: "n" }, spec: { min: 5, max: 10, name: "x" } });
    expect(validateSchema(obj, schema)).toEqual([]);
    expect(validateCelRules(obj, undefined, schema)).toEqual([]);
  });

  it("formats CEL failures as the apiserver does", () => {
    const obj = { spec: { min: 200, max: 10, name: "forbidden" } };
    const errs = validateCelRules(obj, { spec: { min: 1, max: 10, name: "abc" } }, schema);
    expect(errs.map(String)).toEqual([
      'spec: Invalid value: "object": max must be at least min',
      'spec: Invalid value: "object": failed rule: self.min < 100',
      'spec: Invalid value: "object": name may not grow beyond 3',
      'spec.name: Invalid value: "forbidden": name is forbidden',
    ]);
  });

  it("prints limits and values with Go's formatting", () => {
    const errs = validateSchema({ spec: { max: 2000000, ratio: 0.25 } }, schema);
    expect(errs.map(String)).toEqual([
      "spec.max: Invalid value: 2000000: spec.max in body should be less than or equal to 1000000",
      "spec.ratio: Invalid value: 0.25: spec.ratio in body should be greater than or equal to 0.5",
    ]);
    expect(goFloat(1e6)).toBe("1e+06");
    expect(goFloat(123456)).toBe("123456");
    expect(goFloat(0.00001)).toBe("1e-05");
    expect(goFloat(2.5)).toBe("2.5");
    expect(goSharpV({ b: [1, "x"], a: null })).toBe('map[string]interface {}{"a":interface {}(nil), "b":[]interface {}{1, "x"}}');
  });

  it("builds the Invalid status message, de-duplicating identical errors", () => {
    const errs = validateSchema({ spec: { min: "x" } }, schema);
    const e = invalid({ group: "corral.dev", kind: "Model" }, "m", [...errs, ...errs]);
    expect(e.status.message).toBe('Model.corral.dev "m" is invalid: spec.min: Invalid value: "string": spec.min in body must be of type integer: "string"');
    expect(e.status.details?.causes).toHaveLength(2);
  });
});
