// The Model CRD: its schema documents and validates every field, and the API server (the fake,
// which applies the same structural-schema and CEL rules as kube-apiserver) accepts the examples
// and rejects bad Models with messages a person can act on.

import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { KubeClient, describeKubeError, errorCode } from "../common/kube-client.js";
import { MODELS, loadModelCrd, type Model } from "../common/model-resource.js";
import { packagePath } from "../common/package-root.js";
import { startFakeKube, type FakeKube } from "../test/fake-kube/index.js";

const crd = loadModelCrd();
const version = crd.spec.versions[0];
const schema = version.schema.openAPIV3Schema;

type Schema = Record<string, any>;

function* fields(node: Schema, at: string): Generator<[string, Schema]> {
  for (const [key, child] of Object.entries((node.properties ?? {}) as Record<string, Schema>)) {
    yield [`${at}.${key}`, child];
    yield* fields(child, `${at}.${key}`);
    if (child.items) yield* fields(child.items, `${at}.${key}[]`);
  }
}

describe("the Model CRD document", () => {
  it("is corral.dev/v1alpha1 Model, namespaced, with status and scale subresources", () => {
    expect(crd.metadata.name).toBe("models.corral.dev");
    expect(crd.spec).toMatchObject({ group: "corral.dev", scope: "Namespaced", names: { kind: "Model", plural: "models", singular: "model" } });
    expect(version).toMatchObject({ name: "v1alpha1", served: true, storage: true });
    expect(version.subresources).toEqual({
      status: {},
      scale: { specReplicasPath: ".spec.replicas", statusReplicasPath: ".status.replicas", labelSelectorPath: ".status.selector" },
    });
  });

  it("prints Model ID, Phase, Ready and Age", () => {
    const columns = version.additionalPrinterColumns.filter((c: Schema) => !c.priority).map((c: Schema) => c.name);
    expect(columns).toEqual(["Model ID", "Phase", "Ready", "Age"]);
  });

  it("describes every field and constrains every spec leaf", () => {
    const undocumented: string[] = [];
    const unconstrained: string[] = [];
    for (const [at, node] of fields(schema, "")) {
      if (at === ".metadata") continue;
      if (!node.description) undocumented.push(at);
      const leaf = !node.properties && !node.items && !node.additionalProperties && !node["x-kubernetes-preserve-unknown-fields"];
      const constrained =
        node.type === "boolean" ||
        node.enum ||
        node.pattern ||
        node.format === "date-time" ||
        node.maxLength !== undefined ||
        node.minimum !== undefined ||
        node.maximum !== undefined ||
        node["x-kubernetes-validations"];
      if (at.startsWith(".spec") && leaf && !constrained) unconstrained.push(at);
    }
    expect(undocumented).toEqual([]);
    expect(unconstrained).toEqual([]);
  });
});

describe("the API server with the Model CRD", () => {
  let fake: FakeKube;
  let client: KubeClient;

  beforeAll(async () => {
    fake = await startFakeKube({ crdInitDelayMs: 0 });
    fake.create(loadModelCrd());
    client = new KubeClient(fake.kubeConfig);
  });
  afterAll(async () => fake?.close());

  const create = (name: string, spec: Record<string, unknown>, metadata: Record<string, unknown> = {}) =>
    client.create<Model>(MODELS, "default", { apiVersion: "corral.dev/v1alpha1", kind: "Model", metadata: { name, ...metadata }, spec });

  async function rejection(name: string, spec: Record<string, unknown>): Promise<string> {
    try {
      await create(name, spec);
    } catch (error) {
      expect(errorCode(error)).toBe(422);
      return describeKubeError(error);
    }
    throw new Error("the Model was accepted");
  }

  it("accepts every example in examples/ and fills in the defaults", async () => {
    const dir = packagePath("examples");
    const files = readdirSync(dir).filter((f) => f.endsWith(".yaml"));
    expect(files.length).toBeGreaterThanOrEqual(3);
    for (const file of files) {
      for (const doc of parseAllDocuments(readFileSync(path.join(dir, file), "utf8"))) {
        const model = doc.toJS() as Model;
        if (model?.kind !== "Model") continue;
        const created = await client.create<Model>(MODELS, "default", model);
        expect(created.spec.minReplicas, file).toBe(model.spec.minReplicas ?? 0);
        expect(created.spec.replicas, file).toBe(model.spec.replicas ?? 1);
      }
    }
  });

  it("defaults replicas to 1 and minReplicas to 0", async () => {
    const created = await create("defaults", { source: "https://example.com/m.gguf" });
    expect(created.spec).toEqual({ source: "https://example.com/m.gguf", replicas: 1, minReplicas: 0 });
  });

  it("rejects minReplicas above maxReplicas, naming both values", async () => {
    expect(await rejection("minmax", { source: "hf:a/b/c.gguf", minReplicas: 3, maxReplicas: 2 })).toBe(
      'Model.corral.dev "minmax" is invalid: spec.minReplicas: Invalid value: "object": minReplicas (3) must be less than or equal to maxReplicas (2)',
    );
  });

  it("rejects a Model without a source", async () => {
    expect(await rejection("nosource", { replicas: 1 })).toContain("spec.source: Required value");
  });

  it("rejects sources that are neither hf:, https:// nor a cache path", async () => {
    expect(await rejection("badhf", { source: "hf:only-a-repo.gguf" })).toContain("an hf: source is hf:owner/repo/file.gguf");
    expect(await rejection("plainhttp", { source: "http://example.com/m.gguf" })).toContain("http:// is not allowed");
    expect(await rejection("abspath", { source: "/etc/passwd", cache: { claimName: "models" } })).toContain("no leading '/' and no '..'");
    expect(await rejection("dotdot", { source: "a/../../b.gguf", cache: { claimName: "models" } })).toContain("no leading '/' and no '..'");
  });

  it("rejects a path source without a cache volume to read it from", async () => {
    expect(await rejection("nocache", { source: "llama/model.gguf" })).toContain("a path source is read from the model cache volume");
  });

  it("rejects a cache with both an existing claim and a size", async () => {
    expect(await rejection("bothcache", { source: "hf:a/b/c.gguf", cache: { claimName: "x", size: "1Gi" } })).toContain(
      "set either cache.claimName (an existing PersistentVolumeClaim) or cache.size",
    );
  });

  it("rejects bad quantities, counts and names", async () => {
    expect(await rejection("badmem", { source: "hf:a/b/c.gguf", resources: { memory: "lots" } })).toContain("spec.resources.memory");
    expect(await rejection("negreplicas", { source: "hf:a/b/c.gguf", replicas: -1 })).toContain(
      "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
    );
    expect(await rejection("badgpu", { source: "hf:a/b/c.gguf", resources: { gpu: 1, gpuResourceName: "gpu" } })).toContain("spec.resources.gpuResourceName");
    expect(await rejection("Bad.Name", { source: "hf:a/b/c.gguf" })).toContain("metadata.name must be a DNS-1035 label");
    expect(await rejection("topp", { source: "hf:a/b/c.gguf", defaults: { topP: 0 } })).toContain("spec.defaults.topP");
  });

  it("keeps spec out of status writes and status out of spec writes", async () => {
    const created = await create("subresources", { source: "hf:a/b/c.gguf" });
    const withStatus = await client.replace<Model>(MODELS, { ...created, status: { phase: "Ready" } });
    expect(withStatus.status).toBeUndefined();
    const statusWrite = await client.replace<Model>(MODELS, { ...withStatus, spec: { ...withStatus.spec, replicas: 5 }, status: { phase: "Ready" } }, { subresource: "status" });
    expect(statusWrite.spec.replicas).toBe(1);
    expect(statusWrite.status?.phase).toBe("Ready");
  });
});
