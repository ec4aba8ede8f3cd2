import {
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  type KubernetesObject,
  KubernetesObjectApi,
  PatchStrategy,
  type V1Deployment,
  loadYaml,
  setHeaderOptions,
} from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { type FakeKube, startFakeKube, waitFor } from "./index.js";
import { apiFailure, widgetCrd } from "./test-helpers.js";

let fk: FakeKube;
let core: CoreV1Api;
let apps: AppsV1Api;

const merge = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);
const strategic = setHeaderOptions("Content-Type", PatchStrategy.StrategicMergePatch);
const apply = setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply);

beforeAll(async () => {
  fk = await startFakeKube({ namespaces: ["patch"], crdInitDelayMs: 0 });
  core = fk.kubeConfig.makeApiClient(CoreV1Api);
  apps = fk.kubeConfig.makeApiClient(AppsV1Api);
});

afterAll(async () => {
  await fk.close();
});

function deployment(name: string): V1Deployment {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, namespace: "patch" },
    spec: {
      replicas: 1,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: {
          containers: [
            { name: "main", image: "main:1", env: [{ name: "A", value: "1" }, { name: "B", value: "2" }] },
            { name: "sidecar", image: "side:1" },
          ],
        },
      },
    },
  };
}

describe("patch content types", () => {
  it("sends JSON patch by default: client-node picks the first media type", async () => {
    await apps.createNamespacedDeployment({ namespace: "patch", body: deployment("jp") });
    fk.resetRequestLog();
    const d = await apps.patchNamespacedDeployment({
      namespace: "patch",
      name: "jp",
      body: [
        { op: "test", path: "/spec/replicas", value: 1 },
        { op: "replace", path: "/spec/replicas", value: 2 },
        { op: "add", path: "/metadata/labels", value: { patched: "yes" } },
      ],
    });
    expect(d.spec?.replicas).toBe(2);
    expect(d.metadata?.labels?.patched).toBe("yes");
    const failed = await apiFailure(() =>
      apps.patchNamespacedDeployment({ namespace: "patch", name: "jp", body: [{ op: "test", path: "/spec/replicas", value: 9 }] }),
    );
    expect(failed.code).toBe(422);
    expect(failed.status.details?.causes?.[0]?.message).toBe("testing value /spec/replicas failed: test failed");
  });

  it("merge patch through setHeaderOptions", async () => {
    await apps.createNamespacedDeployment({ namespace: "patch", body: deployment("mp") });
    const d = await apps.patchNamespacedDeployment(
      { namespace: "patch", name: "mp", body: { metadata: { annotations: { a: "b" } }, spec: { replicas: 4 } } },
      merge,
    );
    expect(d.spec?.replicas).toBe(4);
    expect(d.metadata?.annotations).toEqual({ a: "b" });
    // merge patch replaces lists whole
    const d2 = await apps.patchNamespacedDeployment(
      { namespace: "patch", name: "mp", body: { spec: { template: { spec: { containers: [{ name: "main", image: "main:2" }] } } } } },
      merge,
    );
    expect(d2.spec?.template.spec?.containers.map((c) => c.name)).toEqual(["main"]);
    // null deletes
    const d3 = await apps.patchNamespacedDeployment({ namespace: "patch", name: "mp", body: { metadata: { annotations: null } } }, merge);
    expect(d3.metadata?.annotations).toBeUndefined();
  });

  it("merge patch with a stale resourceVersion is a conflict", async () => {
    const failed = await apiFailure(() =>
      apps.patchNamespacedDeployment({ namespace: "patch", name: "mp", body: { metadata: { resourceVersion: "1" }, spec: { replicas: 1 } } }, merge),
    );
    expect(failed.code).toBe(409);
  });

  it("strategic merge patch merges containers and env by name", async () => {
    await apps.createNamespacedDeployment({ namespace: "patch", body: deployment("smp") });
    const d = await apps.patchNamespacedDeployment(
      {
        namespace: "patch",
        name: "smp",
        body: {
          spec: {
            template: {
              spec: {
                containers: [
                  { name: "main", image: "main:2", env: [{ name: "B", value: "20" }, { name: "C", value: "3" }] },
                  { name: "sidecar", $patch: "delete" },
                ],
              },
            },
          },
        },
      },
      strategic,
    );
    const containers = d.spec?.template.spec?.containers ?? [];
    expect(containers.map((c) => c.name)).toEqual(["main"]);
    expect(containers[0]?.image).toBe("main:2");
    expect(containers[0]?.env).toEqual([
      { name: "A", value: "1" },
      { name: "B", value: "20" },
      { name: "C", value: "3" },
    ]);
  });

  it("answers 415 for an unknown patch type", async () => {
    const res = await fetch(`${fk.url}/apis/apps/v1/namespaces/patch/deployments/smp`, {
      method: "PATCH",
      headers: { "Content-Type": "application/json" },
      body: "{}",
    });
    expect(res.status).toBe(415);
    const body = (await res.json()) as { reason: string; message: string };
    expect(body.reason).toBe("UnsupportedMediaType");
  });
});

describe("server-side apply", () => {
  it("requires a fieldManager", async () => {
    const failed = await apiFailure(() =>
      apps.patchNamespacedDeployment({ namespace: "patch", name: "ssa", body: deployment("ssa") }, apply),
    );
    expect(failed.code).toBe(422);
    expect(failed.status.message).toBe('PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply patch');
  });

  it("creates, updates, detects conflicts, and removes fields the manager stopped applying", async () => {
    const created = await apps.patchNamespacedDeployment(
      { namespace: "patch", name: "ssa", body: deployment("ssa"), fieldManager: "corral-operator", force: true },
      apply,
    );
    expect(created.metadata?.uid).toBeTruthy();
    expect(created.metadata?.managedFields?.[0]).toMatchObject({ manager: "corral-operator", operation: "Apply" });

    // another manager takes spec.replicas through the scale subresource (like an HPA or kubectl scale)
    await apps.patchNamespacedDeploymentScale(
      { namespace: "patch", name: "ssa", body: { spec: { replicas: 3 } }, fieldManager: "kubectl-scale" },
      merge,
    );

    const desired = deployment("ssa");
    desired.spec!.replicas = 1;
    const conflict = await apiFailure(() =>
      apps.patchNamespacedDeployment({ namespace: "patch", name: "ssa", body: desired, fieldManager: "corral-operator" }, apply),
    );
    expect(conflict.code).toBe(409);
    expect(conflict.status.message).toBe('Apply failed with 1 conflict: conflict with "kubectl-scale" using apps/v1: .spec.replicas');
    expect(conflict.status.details?.causes).toEqual([
      { reason: "FieldManagerConflict", message: 'conflict with "kubectl-scale" using apps/v1', field: ".spec.replicas" },
    ]);

    // leaving replicas out of the applied config avoids the conflict; dropping env B removes it
    const withoutReplicas = deployment("ssa");
    delete withoutReplicas.spec!.replicas;
    withoutReplicas.spec!.template.spec!.containers[0]!.env = [{ name: "A", value: "1" }];
    const applied = await apps.patchNamespacedDeployment(
      { namespace: "patch", name: "ssa", body: withoutReplicas, fieldManager: "corral-operator" },
      apply,
    );
    expect(applied.spec?.replicas).toBe(3);
    expect(applied.spec?.template.spec?.containers[0]?.env).toEqual([{ name: "A", value: "1" }]);

    // force takes the field over
    const forced = await apps.patchNamespacedDeployment(
      { namespace: "patch", name: "ssa", body: desired, fieldManager: "corral-operator", force: true },
      apply,
    );
    expect(forced.spec?.replicas).toBe(1);
    const scaleOwner = forced.metadata?.managedFields?.find((m) => m.manager === "kubectl-scale");
    expect(scaleOwner).toBeUndefined();
  });

  it("applying the same configuration twice writes nothing", async () => {
    const before = await apps.readNamespacedDeployment({ namespace: "patch", name: "ssa" });
    const desired = deployment("ssa");
    desired.spec!.replicas = 1;
    const again = await apps.patchNamespacedDeployment(
      { namespace: "patch", name: "ssa", body: desired, fieldManager: "corral-operator", force: true },
      apply,
    );
    expect(again.metadata?.resourceVersion).toBe(before.metadata?.resourceVersion);
  });

  it("applies through KubernetesObjectApi and rejects strategic merge for custom resources", async () => {
    const ext = fk.kubeConfig.makeApiClient(KubernetesObjectApi);
    // typed clients serialize CRDs through V1JSONSchemaProps, whose TypeScript keys are `_default`,
    // `_enum`, `x_kubernetes_*`: loadYaml maps the wire names onto them (JSON is YAML)
    await ext.create(loadYaml<KubernetesObject>(JSON.stringify(widgetCrd())));
    const custom = fk.kubeConfig.makeApiClient(CustomObjectsApi);
    await waitFor(async () => {
      try {
        await custom.listNamespacedCustomObject({ group: "corral.dev", version: "v1alpha1", namespace: "patch", plural: "widgets" });
        return true;
      } catch {
        return false;
      }
    });
    const widget = { apiVersion: "corral.dev/v1alpha1", kind: "Widget", metadata: { name: "w", namespace: "patch" }, spec: { model: "m" } };
    const created = await ext.patch(widget, undefined, undefined, "corral-operator", true, PatchStrategy.ServerSideApply);
    expect((created as unknown as { spec: { replicas: number } }).spec.replicas).toBe(1);
    // KubernetesObjectApi.patch defaults to strategic merge patch, which CRDs do not serve
    const failed = await apiFailure(() => ext.patch(widget));
    expect(failed.code).toBe(415);
    expect(failed.status.message).toBe(
      "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
    );
    const merged = await ext.patch(
      { ...widget, spec: { model: "m", replicas: 2 } },
      undefined,
      undefined,
      undefined,
      undefined,
      PatchStrategy.MergePatch,
    );
    expect((merged as unknown as { spec: { replicas: number } }).spec.replicas).toBe(2);
  });

  it("applies status through the status subresource", async () => {
    const custom = fk.kubeConfig.makeApiClient(CustomObjectsApi);
    const res = (await custom.patchNamespacedCustomObjectStatus(
      {
        group: "corral.dev",
        version: "v1alpha1",
        namespace: "patch",
        plural: "widgets",
        name: "w",
        body: { apiVersion: "corral.dev/v1alpha1", kind: "Widget", metadata: { name: "w" }, status: { replicas: 2, observedGeneration: 2 } },
        fieldManager: "corral-operator",
        force: true,
      },
      apply,
    )) as { spec: { replicas: number }; status: { replicas: number } };
    expect(res.status.replicas).toBe(2);
    expect(res.spec.replicas).toBe(2);
  });

  it("merge-patches the status of a pod", async () => {
    await core.createNamespacedPod({ namespace: "patch", body: { metadata: { name: "p" }, spec: { containers: [{ name: "c", image: "i" }] } } });
    const p = await core.patchNamespacedPodStatus(
      { namespace: "patch", name: "p", body: { status: { podIP: "10.9.9.9", conditions: [{ type: "Ready", status: "True" }] } } },
      merge,
    );
    expect(p.status?.podIP).toBe("10.9.9.9");
    expect(p.status?.phase).toBe("Pending");
  });
});
