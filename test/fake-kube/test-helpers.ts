// Helpers shared by the fake-kube tests.

import { ApiException } from "@kubernetes/client-node";

import type { Status } from "./errors.js";

/** Runs `fn`, expects it to fail with an ApiException, and returns the code and parsed Status body. */
export async function apiFailure(fn: () => Promise<unknown>): Promise<{ code: number; status: Status; headers: Record<string, string> }> {
  try {
    await fn();
  } catch (e) {
    if (e instanceof ApiException) {
      const body = typeof e.body === "string" ? (JSON.parse(e.body) as Status) : (e.body as Status);
      return { code: e.code, status: body, headers: e.headers as Record<string, string> };
    }
    throw e;
  }
  throw new Error("expected the call to fail");
}

/** A CRD for tests: corral.dev Widget, with status and scale subresources and CEL rules. */
export function widgetCrd(opts: { scope?: "Namespaced" | "Cluster" } = {}) {
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: "widgets.corral.dev" },
    spec: {
      group: "corral.dev",
      scope: opts.scope ?? "Namespaced",
      names: { plural: "widgets", singular: "widget", kind: "Widget", listKind: "WidgetList", shortNames: ["wd"] },
      versions: [
        {
          name: "v1alpha1",
          served: true,
          storage: true,
          subresources: {
            status: {},
            scale: { specReplicasPath: ".spec.replicas", statusReplicasPath: ".status.replicas", labelSelectorPath: ".status.selector" },
          },
          schema: {
            openAPIV3Schema: {
              type: "object",
              properties: {
                apiVersion: { type: "string" },
                kind: { type: "string" },
                metadata: { type: "object" },
                spec: {
                  type: "object",
                  required: ["model"],
                  "x-kubernetes-validations": [
                    { rule: "self.minReplicas <= self.maxReplicas", message: "minReplicas must be less than or equal to maxReplicas" },
                    {
                      rule: "!has(self.engine) || self.engine != 'gpu' || self.replicas <= 4",
                      messageExpression: "'at most 4 gpu replicas, got ' + string(self.replicas)",
                    },
                    { rule: "self.model == oldSelf.model", message: "model is immutable", fieldPath: ".model", reason: "FieldValueForbidden" },
                  ],
                  properties: {
                    model: { type: "string", minLength: 1, maxLength: 40, pattern: "^[a-z0-9-]+$" },
                    replicas: { type: "integer", minimum: 0, maximum: 10, default: 1 },
                    minReplicas: { type: "integer", default: 0 },
                    maxReplicas: { type: "integer", default: 5 },
                    engine: { type: "string", enum: ["cpu", "gpu"], default: "cpu" },
                    contextSize: { "x-kubernetes-int-or-string": true },
                    temperature: { type: "number", exclusiveMinimum: true, minimum: 0, maximum: 2 },
                    labels: { type: "object", additionalProperties: { type: "string" } },
                    args: { type: "array", maxItems: 3, items: { type: "string" } },
                    ports: {
                      type: "array",
                      "x-kubernetes-list-type": "map",
                      "x-kubernetes-list-map-keys": ["name"],
                      items: {
                        type: "object",
                        required: ["name", "port"],
                        properties: { name: { type: "string" }, port: { type: "integer", minimum: 1, maximum: 65535 } },
                      },
                    },
                    extra: { type: "object", "x-kubernetes-preserve-unknown-fields": true },
                  },
                },
                status: {
                  type: "object",
                  properties: {
                    replicas: { type: "integer" },
                    selector: { type: "string" },
                    observedGeneration: { type: "integer" },
                    conditions: {
                      type: "array",
                      "x-kubernetes-list-type": "map",
                      "x-kubernetes-list-map-keys": ["type"],
                      items: { type: "object", "x-kubernetes-preserve-unknown-fields": true },
                    },
                  },
                },
              },
            },
          },
        },
      ],
    },
  };
}
