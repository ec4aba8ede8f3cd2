// End to end on Kubernetes: a Model is applied, the operator makes its Deployment, a pod becomes
// ready, and `/generate` through the router (`--backend kubernetes`) is answered by that pod's
// runtime. There is no kubelet on the fake API server, so this test plays it: a real
// `corral runtime` with the generated successor model listens on a loopback port that the operator
// puts in the pods' spec (--runtime-port), and pods that the Deployment creates are marked Ready
// with podIP 127.0.0.1 — the pods' stand-in. On a real cluster (CORRAL_E2E=1) the images would
// have to run and the pod IPs be reachable from here, so this file runs on the fake only.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Model } from "../../common/model-resource.js";
import { testRouterConfig } from "../../router/config.js";
import { run as runRouter, type RouterHandle } from "../../router/run.js";
import type { OperatorHandle } from "../../operator/run.js";
import type { RuntimeHandle } from "../../runtime/run.js";
import { freePort, postJson, startRuntime } from "../helpers/runtime.js";
import { ensureTestModel } from "../helpers/test-models.js";
import { REAL_CLUSTER, createModel, getModel, markPodsReady, startCluster, startOperator, testLogger, waitFor, type TestCluster } from "../operator/harness.js";

describe.skipIf(REAL_CLUSTER)("Corral on Kubernetes, end to end", () => {
  let cluster: TestCluster;
  let ns: string;
  let runtime: RuntimeHandle;
  let operator: OperatorHandle;
  let router: RouterHandle;
  let impatientRouter: RouterHandle;
  let kubelet: NodeJS.Timeout;
  let dir: string;
  /** Models whose pods the stand-in kubelet never makes ready. */
  const neverReady = new Set<string>();

  beforeAll(async () => {
    cluster = await startCluster();
    ns = await cluster.namespace("e2e");
    const port = await freePort();
    runtime = await startRuntime({ model: await ensureTestModel("successor"), modelId: "stand-in", port });
    operator = await startOperator(cluster, ns, { runtimePort: port });
    // The kubelet's part: every pod of a Model is ready at 127.0.0.1, where the runtime listens.
    kubelet = setInterval(() => {
      for (const pod of cluster.fake!.list("pods", ns)) {
        const model = pod.metadata.labels?.["corral.dev/model"];
        if (model && !neverReady.has(model)) markPodsReady(cluster, ns, model);
      }
    }, 20);
    dir = mkdtempSync(path.join(tmpdir(), "corral-e2e-"));
    const kubeconfig = path.join(dir, "kubeconfig");
    writeFileSync(kubeconfig, cluster.fake!.kubeconfigYaml);
    // Through the same settings as `corral router --backend kubernetes --namespace <ns> --kubeconfig <file>`.
    router = await runRouter(testRouterConfig({ backend: "kubernetes", namespace: ns, kubeconfig, readyWaitSeconds: 30, rateLimitPoints: 0 }), { logger: testLogger() });
    impatientRouter = await runRouter(testRouterConfig({ backend: "kubernetes", namespace: ns, kubeconfig, readyWaitSeconds: 1, rateLimitPoints: 0 }), {
      logger: testLogger(),
    });
  });

  afterAll(async () => {
    clearInterval(kubelet);
    await impatientRouter?.close();
    await router?.close();
    await operator?.close();
    await runtime?.close();
    await cluster?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const generate = (base: string, modelId: string) => postJson(`${base}/generate`, { model_id: modelId, prompt: "Hello wor" });
  const replicasOf = async (name: string) => (await getModel(cluster, ns, name))?.spec.replicas;

  it("a Model applied answers /generate through the router from its pod's runtime", async () => {
    await createModel(cluster, ns, "successor", { modelId: "corral/successor" });
    const available = await waitFor(
      async () => {
        const body = (await (await fetch(`${router.url}/models/available`)).json()) as { models: { model_id: string }[] };
        return body.models.some((m) => m.model_id === "corral/successor") ? body : undefined;
      },
      { timeoutMs: 10_000, message: "the router does not list the Model" },
    );
    expect(available.models.map((m) => m.model_id)).toContain("corral/successor");
    const response = await generate(router.url, "corral/successor");
    expect(response.status).toBe(200);
    expect(((await response.json()) as { response: string }).response).toBe("stuvwxyz");
    const model = await waitFor(async () => {
      const m = await getModel(cluster, ns, "successor");
      return m?.status?.phase === "Ready" ? m : undefined;
    });
    expect(model.status?.endpoint).toBe(`http://successor.${ns}.svc:8080`);
  });

  it("a request for a Model at zero replicas scales it up, is held until a pod is ready, and is answered", async () => {
    await createModel(cluster, ns, "cold", { replicas: 0 });
    await waitFor(async () => (await getModel(cluster, ns, "cold"))?.status?.phase === "ScaledToZero", { timeoutMs: 10_000, message: "not ScaledToZero" });
    await waitFor(async () => ((await (await fetch(`${router.url}/models/available`)).json()) as { models: { model_id: string }[] }).models.some((m) => m.model_id === "cold"));
    neverReady.add("cold");
    const started = Date.now();
    const pending = generate(router.url, "cold");
    await waitFor(async () => (await replicasOf("cold")) === 1, { timeoutMs: 10_000, message: "the router did not scale the Model up" });
    await waitFor(() => cluster.fake!.list("pods", ns).some((p) => p.metadata.labels?.["corral.dev/model"] === "cold"), { message: "no pod" });
    // Held while the pod is not ready.
    await new Promise((resolve) => setTimeout(resolve, 300));
    let settled = false;
    void pending.then(() => (settled = true));
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(settled).toBe(false);
    neverReady.delete("cold");
    const response = await pending;
    expect(response.status).toBe(200);
    expect(((await response.json()) as { response: string }).response).toBe("stuvwxyz");
    expect(Date.now() - started).toBeGreaterThan(300);
  });

  it("a request held longer than --ready-wait-seconds is answered 503 with Retry-After", async () => {
    neverReady.add("stuck");
    await createModel(cluster, ns, "stuck", { replicas: 0 });
    await waitFor(() => impatientRouter.backend.lookup("stuck"), { message: "the router does not know the Model" });
    const started = Date.now();
    const response = await generate(impatientRouter.url, "stuck");
    expect(response.status).toBe(503);
    expect(response.headers.get("retry-after")).toMatch(/^\d+$/);
    const body = (await response.json()) as { detail: string };
    expect(body.detail).toContain("model stuck is not ready after 1 s");
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    // It was scaled up all the same, and stays so: the next request may find it ready.
    expect(await replicasOf("stuck")).toBe(1);
  });

  it("/models/load scales a Model up and waits for it; /models/unload scales it to zero", async () => {
    await createModel(cluster, ns, "managed", { replicas: 0 });
    await waitFor(() => router.backend.lookup("managed"), { message: "the router does not know the Model" });
    const loaded = await postJson(`${router.url}/models/load`, { model_id: "managed" });
    expect(loaded.status).toBe(200);
    expect(await loaded.json()).toMatchObject({ model_id: "managed", state: "ready", current: true, endpoints: 1 });
    expect(await replicasOf("managed")).toBe(1);
    // The current model is shared: the other router replica sends requests without model_id there.
    await waitFor(() => impatientRouter.backend.current() === "managed", { message: "the other router did not see the current model" });
    const viaCurrent = await postJson(`${impatientRouter.url}/generate`, { prompt: "Hello wor" });
    expect(((await viaCurrent.json()) as { response: string }).response).toBe("stuvwxyz");

    const unloaded = await postJson(`${router.url}/models/unload`, { model_id: "managed" });
    expect(unloaded.status).toBe(200);
    expect(await unloaded.json()).toMatchObject({ model_id: "managed", state: "stopping" });
    expect(await replicasOf("managed")).toBe(0);
    const m = await waitFor(
      async () => {
        const model = await getModel(cluster, ns, "managed");
        return model?.status?.phase === "ScaledToZero" && model.status.ready === "0/0" ? model : undefined;
      },
      { timeoutMs: 10_000 },
    );
    expect((m as Model).status?.replicas).toBe(0);
    await waitFor(async () => ((await (await fetch(`${router.url}/models/current`)).json()) as { model_id: string | null }).model_id === null);
  });
});
