import {
  ApiException,
  ApiextensionsV1Api,
  CustomObjectsApi,
  type KubernetesListObject,
  type KubernetesObject,
  makeInformer,
  PatchStrategy,
  type V1CustomResourceDefinition,
  loadYaml,
  setHeaderOptions,
} from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { type FakeKube, startFakeKube, waitFor } from "./index.js";
import { apiFailure, widgetCrd } from "./test-helpers.js";

let fk: FakeKube;
let ext: ApiextensionsV1Api;
let custom: CustomObjectsApi;

const G = { group: "corral.dev", version: "v1alpha1", plural: "widgets" } as const;
const merge = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

type Widget = {
  apiVersion: string;
  kind: string;
  metadata: { name: string; resourceVersion?: string; generation?: number; labels?: Record<string, string> };
  spec: Record<string, unknown>;
  status?: Record<string, unknown>;
};

function widget(name: string, spec: Record<string, unknown>): Widget {
  return { apiVersion: "corral.dev/v1alpha1", kind: "Widget", metadata: { name }, spec };
}

const create = (body: unknown, ns = "crd") => custom.createNamespacedCustomObject({ ...G, namespace: ns, body }) as Promise<Widget>;
const get = (name: string, ns = "crd") => custom.getNamespacedCustomObject({ ...G, namespace: ns, name }) as Promise<Widget>;

/** Retries while the server answers 429, waiting as long as Retry-After says. */
async function retry429<T>(fn: () => Promise<T>): Promise<{ value: T; retries: number }> {
  for (let retries = 0; ; retries++) {
    try {
      return { value: await fn(), retries };
    } catch (e) {
      if (!(e instanceof ApiException) || e.code !== 429) throw e;
      const after = Number((e.headers as Record<string, string>)["retry-after"] ?? "1");
      await new Promise((r) => setTimeout(r, Math.min(after * 1000, 200)));
    }
  }
}

beforeAll(async () => {
  fk = await startFakeKube({ namespaces: ["crd"], crdInitDelayMs: 400 });
  ext = fk.kubeConfig.makeApiClient(ApiextensionsV1Api);
  custom = fk.kubeConfig.makeApiClient(CustomObjectsApi);
});

afterAll(async () => {
  await fk.close();
});

describe("CRD registration", () => {
  it("establishes the CRD, then answers 429 on list for a short while", async () => {
    const body = loadYaml<V1CustomResourceDefinition>(JSON.stringify(widgetCrd()));
    const created = await ext.createCustomResourceDefinition({ body });
    expect(created.metadata?.finalizers).toEqual(["customresourcecleanup.apiextensions.k8s.io"]);
    const established = await waitFor(async () => {
      const crd = await ext.readCustomResourceDefinition({ name: "widgets.corral.dev" });
      const cond = crd.status?.conditions?.find((c) => c.type === "Established");
      return cond?.status === "True" ? crd : undefined;
    });
    expect(established.status?.conditions?.map((c) => [c.type, c.status, c.reason])).toEqual([
      ["NamesAccepted", "True", "NoConflicts"],
      ["Established", "True", "InitialNamesAccepted"],
    ]);
    expect(established.status?.acceptedNames).toMatchObject({ plural: "widgets", kind: "Widget", listKind: "WidgetList" });
    expect(established.status?.storedVersions).toEqual(["v1alpha1"]);

    const first = await apiFailure(() => custom.listNamespacedCustomObject({ ...G, namespace: "crd" }));
    expect(first.code).toBe(429);
    expect(first.headers["retry-after"]).toBe("1");
    expect(first.status).toEqual({
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: "storage is (re)initializing",
      reason: "TooManyRequests",
      details: { retryAfterSeconds: 1 },
      code: 429,
    });
    const { value, retries } = await retry429(() => custom.listNamespacedCustomObject({ ...G, namespace: "crd" }) as Promise<{ items: unknown[] }>);
    expect(retries).toBeGreaterThan(0);
    expect(value.items).toEqual([]);
  });

  it("publishes the resource and its subresources in discovery", async () => {
    const res = await fetch(`${fk.url}/apis/corral.dev/v1alpha1`);
    const list = (await res.json()) as { resources: { name: string; kind: string; namespaced: boolean; shortNames?: string[] }[] };
    expect(list.resources.map((r) => r.name)).toEqual(["widgets", "widgets/status", "widgets/scale"]);
    expect(list.resources[0]).toMatchObject({ kind: "Widget", namespaced: true, shortNames: ["wd"] });
  });
});

describe("custom resources", () => {
  it("applies defaults and generation 1 on create", async () => {
    const w = await create(widget("ok", { model: "llama" }));
    expect(w.spec).toEqual({ model: "llama", replicas: 1, minReplicas: 0, maxReplicas: 5, engine: "cpu" });
    expect(w.metadata.generation).toBe(1);
    expect(w.status).toBeUndefined();
  });

  it("rejects a missing kind with 400", async () => {
    const { code, status } = await apiFailure(() => create({ apiVersion: "corral.dev/v1alpha1", metadata: { name: "nokind" }, spec: { model: "m" } }));
    expect(code).toBe(400);
    expect(status.message).toMatch(/^Object 'Kind' is missing in /);
  });

  it("rejects out-of-range values with the apiserver's 422", async () => {
    const { code, status } = await apiFailure(() => create(widget("bad", { model: "m", replicas: -1 })));
    expect(code).toBe(422);
    expect(status).toEqual({
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: 'Widget.corral.dev "bad" is invalid: spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0',
      reason: "Invalid",
      details: {
        name: "bad",
        group: "corral.dev",
        kind: "Widget",
        causes: [
          {
            reason: "FieldValueInvalid",
            message: "Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
            field: "spec.replicas",
          },
        ],
      },
      code: 422,
    });
  });

  it("reports every schema violation in one message", async () => {
    const { status } = await apiFailure(() =>
      create(
        widget("many", {
          model: "Not_Valid",
          replicas: "three",
          engine: "tpu",
          temperature: 0,
          args: ["a", "b", "c", "d"],
          contextSize: true,
        }),
      ),
    );
    const fields = status.details?.causes?.map((c) => `${c.field}: ${c.message}`);
    expect(fields).toEqual([
      "spec.model: Invalid value: \"Not_Valid\": spec.model in body should match '^[a-z0-9-]+$'",
      'spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string"',
      'spec.engine: Unsupported value: "tpu": supported values: "cpu", "gpu"',
      'spec.contextSize: Invalid value: "boolean": spec.contextSize in body must be of type integer,string: "boolean"',
      "spec.temperature: Invalid value: 0: spec.temperature in body should be greater than 0",
      "spec.args: Too many: 4: must have at most 3 items",
      '<nil>: Invalid value: "null": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation',
    ]);
    expect(status.message).toMatch(/^Widget\.corral\.dev "many" is invalid: \[spec\.model: Invalid value: /);
    expect(status.details?.causes?.find((c) => c.field === "spec.replicas")?.reason).toBe("FieldValueTypeInvalid");
  });

  it("reports required fields, string lengths and duplicate map-list keys", async () => {
    const missing = await apiFailure(() => create(widget("req", {})));
    expect(missing.status.message).toBe(
      'Widget.corral.dev "req" is invalid: [spec.model: Required value, <nil>: Invalid value: "null": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation]',
    );
    const long = await apiFailure(() => create(widget("long", { model: "x".repeat(41) })));
    expect(long.status.details?.causes?.[0]).toEqual({ reason: "FieldValueTooLong", message: "Too long: may not be more than 40 bytes", field: "spec.model" });
    const short = await apiFailure(() => create(widget("short", { model: "" })));
    expect(short.status.details?.causes?.[0]?.message).toBe('Invalid value: "": spec.model in body should be at least 1 chars long');
    const dup = await apiFailure(() =>
      create(widget("dup", { model: "m", ports: [{ name: "http", port: 80 }, { name: "http", port: 8080 }] })),
    );
    expect(dup.status.details?.causes?.[0]).toEqual({
      reason: "FieldValueDuplicate",
      message: 'Duplicate value: map[string]interface {}{"name":"http"}',
      field: "spec.ports[1]",
    });
    const nested = await apiFailure(() => create(widget("nested", { model: "m", ports: [{ name: "http", port: 0 }] })));
    expect(nested.status.details?.causes?.[0]?.message).toBe("Invalid value: 0: spec.ports[0].port in body should be greater than or equal to 1");
  });

  it("evaluates x-kubernetes-validations rules", async () => {
    const range = await apiFailure(() => create(widget("cel", { model: "m", minReplicas: 3, maxReplicas: 2 })));
    expect(range.code).toBe(422);
    expect(range.status.message).toBe(
      'Widget.corral.dev "cel" is invalid: spec: Invalid value: "object": minReplicas must be less than or equal to maxReplicas',
    );
    const gpu = await apiFailure(() => create(widget("cel", { model: "m", engine: "gpu", replicas: 6, maxReplicas: 8 })));
    expect(gpu.status.details?.causes).toEqual([
      { reason: "FieldValueInvalid", message: 'Invalid value: "object": at most 4 gpu replicas, got 6', field: "spec" },
    ]);
    // transition rules run on update only
    const w = await create(widget("cel", { model: "m" }));
    w.spec.model = "other";
    const immutable = await apiFailure(() => custom.replaceNamespacedCustomObject({ ...G, namespace: "crd", name: "cel", body: w }));
    expect(immutable.status.details?.causes).toEqual([{ reason: "FieldValueForbidden", message: "Forbidden: model is immutable", field: "spec.model" }]);
  });

  it("prunes unknown fields with a warning, keeps preserved ones, and refuses them under Strict", async () => {
    const res = await fetch(`${fk.url}/apis/corral.dev/v1alpha1/namespaces/crd/widgets`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...widget("pruned", { model: "m", unknown: 1, extra: { anything: { goes: true } } }), junk: "x" }),
    });
    expect(res.status).toBe(201);
    expect(res.headers.get("warning")).toBe('299 - "unknown field \\"junk\\"", 299 - "unknown field \\"spec.unknown\\""');
    const w = (await res.json()) as Widget & { junk?: string };
    expect(w.junk).toBeUndefined();
    expect(w.spec.unknown).toBeUndefined();
    expect(w.spec.extra).toEqual({ anything: { goes: true } });
    const strict = await fetch(`${fk.url}/apis/corral.dev/v1alpha1/namespaces/crd/widgets?fieldValidation=Strict`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(widget("strict", { model: "m", unknown: 1 })),
    });
    expect(strict.status).toBe(400);
    expect(((await strict.json()) as { message: string }).message).toBe('strict decoding error: unknown field "spec.unknown"');
  });

  it("needs a resourceVersion on update and detects conflicts", async () => {
    const w = await get("ok");
    const noRv = structuredClone(w);
    delete noRv.metadata.resourceVersion;
    const missing = await apiFailure(() => custom.replaceNamespacedCustomObject({ ...G, namespace: "crd", name: "ok", body: noRv }));
    expect(missing.code).toBe(422);
    expect(missing.status.message).toBe('Widget.corral.dev "ok" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update');
    w.spec.replicas = 2;
    await custom.replaceNamespacedCustomObject({ ...G, namespace: "crd", name: "ok", body: w });
    const stale = await apiFailure(() => custom.replaceNamespacedCustomObject({ ...G, namespace: "crd", name: "ok", body: w }));
    expect(stale.code).toBe(409);
    expect(stale.status.message).toBe(
      'Operation cannot be fulfilled on widgets.corral.dev "ok": the object has been modified; please apply your changes to the latest version and try again',
    );
  });

  it("moves generation with spec changes only, and separates spec from status", async () => {
    let w = await get("ok");
    expect(w.metadata.generation).toBe(2);
    w.metadata.labels = { a: "b" };
    w.status = { replicas: 9 };
    w = (await custom.replaceNamespacedCustomObject({ ...G, namespace: "crd", name: "ok", body: w })) as Widget;
    expect(w.metadata.generation).toBe(2);
    expect(w.status).toBeUndefined();
    w.status = { replicas: 2, observedGeneration: 2, selector: "app=ok" };
    w.spec.replicas = 5;
    w = (await custom.replaceNamespacedCustomObjectStatus({ ...G, namespace: "crd", name: "ok", body: w })) as Widget;
    expect(w.status).toEqual({ replicas: 2, observedGeneration: 2, selector: "app=ok" });
    expect(w.spec.replicas).toBe(2);
    expect(w.metadata.generation).toBe(2);
    w = (await custom.patchNamespacedCustomObject({ ...G, namespace: "crd", name: "ok", body: { spec: { replicas: 3 } } }, merge)) as Widget;
    expect(w.metadata.generation).toBe(3);
    expect(w.status?.replicas).toBe(2);
  });

  it("serves the scale subresource through the CRD's paths", async () => {
    const scale = (await custom.getNamespacedCustomObjectScale({ ...G, namespace: "crd", name: "ok" })) as {
      spec: { replicas: number };
      status: { replicas: number; selector?: string };
      metadata: { resourceVersion: string };
    };
    expect(scale.spec.replicas).toBe(3);
    expect(scale.status).toEqual({ replicas: 2, selector: "app=ok" });
    const updated = (await custom.replaceNamespacedCustomObjectScale({
      ...G,
      namespace: "crd",
      name: "ok",
      body: { apiVersion: "autoscaling/v1", kind: "Scale", metadata: { name: "ok", resourceVersion: scale.metadata.resourceVersion }, spec: { replicas: 4 } },
    })) as { spec: { replicas: number } };
    expect(updated.spec.replicas).toBe(4);
    expect((await get("ok")).spec.replicas).toBe(4);
  });

  it("deletes the custom resources of a deleted CRD and stops serving them", async () => {
    await create(widget("w2", { model: "m" }));
    await ext.deleteCustomResourceDefinition({ name: "widgets.corral.dev" });
    await waitFor(async () => {
      const res = await fetch(`${fk.url}/apis/corral.dev/v1alpha1/namespaces/crd/widgets`);
      return res.status === 404;
    });
    expect(fk.list("customresourcedefinitions")).toEqual([]);
    const res = await fetch(`${fk.url}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.corral.dev`);
    expect(res.status).toBe(404);
  });
});

describe("client-node informers and a fresh CRD", () => {
  it("a 429 on the initial list reaches the error handler; start() resolves and the informer stays stopped", async () => {
    const local = await startFakeKube({ crdInitDelayMs: 300, crdEstablishDelayMs: 20 });
    try {
      const localExt = local.kubeConfig.makeApiClient(ApiextensionsV1Api);
      const localCustom = local.kubeConfig.makeApiClient(CustomObjectsApi);
      await localExt.createCustomResourceDefinition({ body: loadYaml<V1CustomResourceDefinition>(JSON.stringify(widgetCrd())) });
      // not established yet: the resource does not exist
      const early = await apiFailure(() => localCustom.listNamespacedCustomObject({ ...G, namespace: "default" }));
      expect(early.code).toBe(404);
      await waitFor(async () => (await localExt.readCustomResourceDefinition({ name: "widgets.corral.dev" })).status?.conditions?.some((c) => c.type === "Established"));
      const path = "/apis/corral.dev/v1alpha1/namespaces/default/widgets";
      const list = () => localCustom.listNamespacedCustomObject({ ...G, namespace: "default" }) as Promise<KubernetesListObject<KubernetesObject>>;
      const inf = makeInformer(local.kubeConfig, path, list);
      const errors: unknown[] = [];
      inf.on("error", (e) => errors.push(e));
      await inf.start();
      expect(errors).toHaveLength(1);
      expect((errors[0] as ApiException<string>).code).toBe(429);
      expect(local.openWatches).toBe(0);
      // the application retries after Retry-After
      await new Promise((r) => setTimeout(r, 350));
      await inf.start();
      await waitFor(() => local.openWatches === 1);
      await inf.stop();
    } finally {
      await local.close();
    }
  });
});

describe("CRD variants", () => {
  it("serves every served version and cluster-scoped resources", async () => {
    const crd = widgetCrd({ scope: "Cluster" });
    const v1 = structuredClone(crd.spec.versions[0]!);
    crd.spec.versions[0]!.storage = false;
    (v1 as { name: string }).name = "v1beta1";
    crd.spec.versions.push(v1);
    await ext.createCustomResourceDefinition({ body: loadYaml<V1CustomResourceDefinition>(JSON.stringify(crd)) });
    const { value } = await retry429(async () =>
      custom.createClusterCustomObject({ group: "corral.dev", version: "v1beta1", plural: "widgets", body: { ...widget("cw", { model: "m" }), apiVersion: "corral.dev/v1beta1" } }),
    );
    expect((value as Widget).apiVersion).toBe("corral.dev/v1beta1");
    const old = (await custom.getClusterCustomObject({ group: "corral.dev", version: "v1alpha1", plural: "widgets", name: "cw" })) as Widget;
    expect(old.apiVersion).toBe("corral.dev/v1alpha1");
    expect(old.spec.replicas).toBe(1);
    const groupDoc = (await (await fetch(`${fk.url}/apis/corral.dev`)).json()) as { preferredVersion: { version: string } };
    expect(groupDoc.preferredVersion.version).toBe("v1beta1");
  });
});
