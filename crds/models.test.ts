// The Model CRD: its schema documents and validates every field, and the real kube-apiserver
// (test/kube/control-plane.ts: the CEL cost budget, structural pruning, defaulting, the status
// subresource) accepts it and the examples, and rejects bad Models with messages a person can act on.

import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseAllDocuments } from "yaml";
import { KubeClient, describeKubeError, errorCode } from "../common/kube/client.js";
import { MODELS, loadModelCrd, type Model } from "../common/kube/model-resource.js";
import { packagePath } from "../common/package-root.js";
import { NO_CLUSTER, startCluster, type TestCluster } from "../test/operator/harness.js";

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

// The test run's kube-apiserver, or the cluster KUBECONFIG names under `npm run test:e2e`.
describe.skipIf(NO_CLUSTER)("kube-apiserver with the Model CRD", () => {
  let cluster: TestCluster;
  let client: KubeClient;
  let ns: string;

  beforeAll(async () => {
    cluster = await startCluster();
    client = cluster.client;
    ns = await cluster.namespace("crd");
  });
  afterAll(async () => cluster?.close());

  const create = (name: string, spec: Record<string, unknown>, metadata: Record<string, unknown> = {}) =>
    client.create<Model>(MODELS, ns, { apiVersion: "corral.dev/v1alpha1", kind: "Model", metadata: { name, ...metadata }, spec });

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
        const created = await client.create<Model>(MODELS, ns, model);
        expect(created.spec.minReplicas, file).toBe(model.spec.minReplicas ?? 0);
        expect(created.spec.replicas, file).toBe(model.spec.replicas ?? 1);
      }
    }
  });

  it("defaults replicas to 1 and minReplicas to 0", async () => {
    const created = await create("defaults", { source: "https://example.com/m.gguf" });
    expect(created.spec).toEqual({ source: "https://example.com/m.gguf", replicas: 1, minReplicas: 0 });
  });

  it("rejects minReplicas above maxReplicas, naming the field", async () => {
    expect(await rejection("minmax", { source: "hf:a/b/c.gguf", minReplicas: 3, maxReplicas: 2 })).toBe(
      'Model.corral.dev "minmax" is invalid: spec.minReplicas: Invalid value: "object": minReplicas must be less than or equal to maxReplicas',
    );
  });

  it("rejects autoscaling without maxReplicas, and autoscaling figures out of range, naming the field", async () => {
    expect(await rejection("noscalemax", { source: "hf:a/b/c.gguf", autoscaling: { targetLoad: 2 } })).toBe(
      'Model.corral.dev "noscalemax" is invalid: spec.autoscaling: Invalid value: "object": autoscaling needs maxReplicas: Corral\'s autoscaler moves only Models that set maxReplicas',
    );
    expect(await rejection("zerotarget", { source: "hf:a/b/c.gguf", maxReplicas: 2, autoscaling: { targetLoad: 0 } })).toContain("spec.autoscaling.targetLoad: Invalid value: 0");
    expect(await rejection("nowindow", { source: "hf:a/b/c.gguf", maxReplicas: 2, autoscaling: { windowSeconds: 0 } })).toContain("spec.autoscaling.windowSeconds: Invalid value: 0");
    const created = await create("autoscaled", { source: "hf:a/b/c.gguf", maxReplicas: 3, autoscaling: { targetLoad: 1.5, windowSeconds: 30, scaleDownDelaySeconds: 0, scaleToZeroSeconds: 120 } });
    expect(created.spec.autoscaling).toEqual({ targetLoad: 1.5, windowSeconds: 30, scaleDownDelaySeconds: 0, scaleToZeroSeconds: 120 });
  });

  it("rejects a routing strategy it does not know, listing the ones it does", async () => {
    expect(await rejection("badrouting", { source: "hf:a/b/c.gguf", routing: "random" })).toContain('spec.routing: Unsupported value: "random": supported values: "prefix", "least-load"');
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

  // Each row: a spec (or a name) and a fragment of the real API server's answer.
  const invalid: [string, Record<string, unknown>, string][] = [
    ["no source", { replicas: 1 }, "spec.source: Required value"],
    ["an empty source", { source: "" }, "spec.source: Invalid value"],
    ["a source over 2048 bytes", { source: `https://example.com/${"a".repeat(2048)}.gguf` }, "spec.source: Too long"],
    ["an hf: source without a file", { source: "hf:org/repo" }, "an hf: source is hf:owner/repo/file.gguf"],
    ["an http:// source", { source: "http://example.com/m.gguf" }, "http:// is not allowed"],
    ["a modelId with spaces", { source: "hf:a/b/c.gguf", modelId: "my model" }, "spec.modelId: Invalid value"],
    ["replicas above 1000", { source: "hf:a/b/c.gguf", replicas: 1001 }, "spec.replicas: Invalid value: 1001"],
    ["maxReplicas 0", { source: "hf:a/b/c.gguf", maxReplicas: 0 }, "spec.maxReplicas: Invalid value: 0"],
    ["a fractional replica count", { source: "hf:a/b/c.gguf", replicas: 1.5 }, "spec.replicas: Invalid value"],
    ["a context below 64", { source: "hf:a/b/c.gguf", contextSize: 8 }, "spec.contextSize: Invalid value: 8"],
    ["parallel 0", { source: "hf:a/b/c.gguf", parallel: 0 }, "spec.parallel: Invalid value: 0"],
    ["65 GPUs", { source: "hf:a/b/c.gguf", resources: { gpu: 65 } }, "spec.resources.gpu: Invalid value: 65"],
    ["a negative temperature", { source: "hf:a/b/c.gguf", defaults: { temperature: -1 } }, "spec.defaults.temperature: Invalid value: -1"],
    ["a temperature above 2", { source: "hf:a/b/c.gguf", defaults: { temperature: 3 } }, "spec.defaults.temperature: Invalid value: 3"],
    ["a repetitionPenalty above 2", { source: "hf:a/b/c.gguf", defaults: { repetitionPenalty: 5 } }, "spec.defaults.repetitionPenalty: Invalid value: 5"],
    ["max_length above 16384", { source: "hf:a/b/c.gguf", defaults: { maxLength: 20000 } }, "spec.defaults.maxLength: Invalid value: 20000"],
    ["an env var with value and valueFrom", { source: "hf:a/b/c.gguf", env: [{ name: "A", value: "x", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } }] }, "set either value or valueFrom, not both"],
    ["valueFrom with two sources", { source: "hf:a/b/c.gguf", env: [{ name: "A", valueFrom: { fieldRef: { fieldPath: "metadata.name" }, secretKeyRef: { name: "s", key: "k" } } }] }, "valueFrom needs exactly one of secretKeyRef, configMapKeyRef, fieldRef"],
    ["the same env var twice", { source: "hf:a/b/c.gguf", env: [{ name: "A", value: "1" }, { name: "A", value: "2" }] }, 'spec.env[1]: Duplicate value: {"name":"A"}'],
    ["a bad env var name", { source: "hf:a/b/c.gguf", env: [{ name: "1A=", value: "1" }] }, "spec.env[0].name: Invalid value"],
    ["a toleration with an unknown effect", { source: "hf:a/b/c.gguf", tolerations: [{ key: "k", operator: "Exists", effect: "Sometimes" }] }, 'spec.tolerations[0].effect: Unsupported value: "Sometimes"'],
    ["a storage class for an existing claim", { source: "m.gguf", cache: { claimName: "models", storageClassName: "fast" } }, "cache.storageClassName and cache.accessMode only apply to a claim the operator creates"],
    ["a cache with neither claim nor size", { source: "hf:a/b/c.gguf", cache: {} }, "set either cache.claimName (an existing PersistentVolumeClaim) or cache.size"],
    ["an unknown access mode", { source: "hf:a/b/c.gguf", cache: { size: "1Gi", accessMode: "ReadMany" } }, 'spec.cache.accessMode: Unsupported value: "ReadMany"'],
    ["a bad cache size", { source: "hf:a/b/c.gguf", cache: { size: "big" } }, "spec.cache.size: Invalid value"],
  ];

  it.each(invalid)("refuses a Model with %s, saying why", async (what, spec, fragment) => {
    const name = `bad-${invalid.findIndex(([w]) => w === what)}`;
    expect(await rejection(name, spec)).toContain(fragment);
  });

  it("refuses a name longer than 63 characters", async () => {
    expect(await rejection(`m${"a".repeat(63)}`, { source: "hf:a/b/c.gguf" })).toContain("metadata.name: Too long: may not be more than 63");
  });

  const valid: [string, Record<string, unknown>][] = [
    ["an https source", { source: "https://example.com/models/m.gguf" }],
    ["a cache path with a claim", { source: "llama/m.gguf", cache: { claimName: "models" } }],
    ["a cache the operator creates", { source: "hf:a/b/c.gguf", cache: { size: "10Gi", accessMode: "ReadWriteMany", storageClassName: "fast" } }],
    ["every bound at its limit", { source: "hf:a/b/c.gguf", replicas: 1000, minReplicas: 1000, maxReplicas: 1000, parallel: 256, contextSize: 64, resources: { cpu: "500m", memory: "1Gi", gpu: 64, gpuResourceName: "amd.com/gpu" } }],
    ["sampling defaults", { source: "hf:a/b/c.gguf", defaults: { maxLength: 16384, temperature: 0, topP: 1, topK: 0, repetitionPenalty: 1, doSample: false } }],
    ["env from a secret, a config map and a field", { source: "hf:a/b/c.gguf", env: [{ name: "HF_TOKEN", valueFrom: { secretKeyRef: { name: "hf", key: "token", optional: true } } }, { name: "B", valueFrom: { configMapKeyRef: { name: "c", key: "k" } } }, { name: "POD", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } }] }],
    ["scheduling fields", { source: "hf:a/b/c.gguf", nodeSelector: { "nvidia.com/gpu.present": "true" }, tolerations: [{ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }], affinity: { nodeAffinity: {} }, priorityClassName: "high" }],
  ];

  it.each(valid)("accepts a Model with %s", async (what, spec) => {
    const created = await create(`ok-${valid.findIndex(([w]) => w === what)}`, spec);
    expect(created.spec).toMatchObject(spec);
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
