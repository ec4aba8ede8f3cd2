// The CRD YAML is the schema the API server enforces; the TypeScript side has its own copies:
// the Model's types (TypeBox schemas in common/kube/model-resource.ts, whose Static<> the
// operator and the router use) and the sampling knobs of spec.defaults (common/api.ts, which
// also bounds requests). These tests fail when either drifts from the CRD.

import { describe, expect, it } from "vitest";
import { SAMPLING_KNOBS, SAMPLING_NAMES, camelCase } from "../common/api.js";
import { AUTOSCALING_DEFAULTS, ModelSpecSchema, ModelStatusSchema, loadModelCrd } from "../common/kube/model-resource.js";

const crd = loadModelCrd();
const schema = crd.spec.versions[0].schema.openAPIV3Schema;
const crdDefaults = schema.properties.spec.properties.defaults;

type Schema = Record<string, any>;

/**
 * What a value of a schema looks like, in one form for the CRD's OpenAPI v3 and TypeBox's JSON
 * Schema: type, properties, required properties, items, enum values. Bounds, patterns, formats and
 * CEL rules are validation, which is the CRD's alone (the API server applies it).
 */
function shape(node: Schema): unknown {
  const union = (node.anyOf ?? []) as Schema[];
  if (node["x-kubernetes-int-or-string"] || (union.length === 2 && union.every((s) => s.type === "integer" || s.type === "string"))) return "int-or-string";
  // x-kubernetes-preserve-unknown-fields in the CRD, Record<string, unknown> in TypeBox.
  if (node["x-kubernetes-preserve-unknown-fields"]) return "any object";
  const patterns = Object.values(node.patternProperties ?? {}) as Schema[];
  if (patterns.length === 1 && patterns[0]!.type === undefined && !patterns[0]!.anyOf && !patterns[0]!.enum) return "any object";
  if (patterns.length === 1) return { type: "object", values: shape(patterns[0]!) };
  if (node.additionalProperties && typeof node.additionalProperties === "object") return { type: "object", values: shape(node.additionalProperties) };
  if (node.enum) return { type: node.type ?? typeof node.enum[0], enum: [...node.enum].sort() };
  if (node.type === "array") return { type: "array", items: shape(node.items) };
  if (node.type === "object") {
    return {
      type: "object",
      required: [...(node.required ?? [])].sort(),
      properties: Object.fromEntries(Object.entries((node.properties ?? {}) as Record<string, Schema>).map(([key, child]) => [key, shape(child)])),
    };
  }
  return node.type;
}

/** A number's bounds in one form: OpenAPI v3.0 (`exclusiveMinimum: true`) and JSON Schema (`exclusiveMinimum: 0`). */
function bounds(node: Schema): Record<string, unknown> {
  const out: Record<string, unknown> = { type: node.type };
  const lower = typeof node.exclusiveMinimum === "number" ? node.exclusiveMinimum : node.minimum;
  const upper = typeof node.exclusiveMaximum === "number" ? node.exclusiveMaximum : node.maximum;
  if (lower !== undefined) out.minimum = { value: lower, exclusive: node.exclusiveMinimum !== undefined && node.exclusiveMinimum !== false };
  if (upper !== undefined) out.maximum = { value: upper, exclusive: node.exclusiveMaximum !== undefined && node.exclusiveMaximum !== false };
  return out;
}

describe("the Model's TypeScript types and the CRD", () => {
  it("have the same spec: property names, types, required properties and enums", () => {
    expect(shape(ModelSpecSchema)).toEqual(shape(schema.properties.spec));
  });

  it("have the same status", () => {
    expect(shape(ModelStatusSchema)).toEqual(shape(schema.properties.status));
  });

  it("would notice a property on one side only", () => {
    const extra = { ...schema.properties.spec, properties: { ...schema.properties.spec.properties, colour: { type: "string" } } };
    expect(shape(ModelSpecSchema)).not.toEqual(shape(extra));
    const retyped = { ...schema.properties.spec, properties: { ...schema.properties.spec.properties, parallel: { type: "string" } } };
    expect(shape(ModelSpecSchema)).not.toEqual(shape(retyped));
  });
});

describe("spec.defaults and the API's sampling knobs (common/api.ts)", () => {
  it("are the same knobs, under their camelCase names", () => {
    expect(Object.keys(crdDefaults.properties)).toEqual(SAMPLING_NAMES.map(camelCase));
  });

  it.each(SAMPLING_NAMES)("%s has the same type and bounds", (name) => {
    expect(bounds(crdDefaults.properties[camelCase(name)])).toEqual(bounds(SAMPLING_KNOBS[name].schema));
  });

  it("name the API's default in each description", () => {
    for (const name of SAMPLING_NAMES) {
      expect(crdDefaults.properties[camelCase(name)].description, name).toContain(`API default ${SAMPLING_KNOBS[name].default})`);
    }
  });
});

describe("spec.autoscaling and the autoscaler's defaults (common/kube/model-resource.ts)", () => {
  it("state the default the autoscaler uses in each description", () => {
    const properties = schema.properties.spec.properties.autoscaling.properties;
    for (const [name, value] of Object.entries(AUTOSCALING_DEFAULTS)) expect(properties[name].description, name).toContain(`(default ${value})`);
  });
});
