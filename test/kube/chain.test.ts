// The whole chain on a real control plane: kube-apiserver and kube-controller-manager (real
// Deployment, ReplicaSet and garbage-collection controllers), two `corral operator` processes
// electing a leader through a real Lease, `corral router --backend kubernetes`, and pods that
// really run `corral runtime` with the generated successor model (test/kube/pod-runner.ts plays
// the kubelet). Each scenario is what a person would do with kubectl and curl, and checks what
// they would see.

import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream } from "node:fs";
import path from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KubeClient, RESOURCES } from "../../common/kube/client.js";
import type { Condition, Deployment, KubeObject, Pod } from "../../common/kube/types.js";
import { MODELS, type Model, type ModelSpec } from "../../common/kube/model-resource.js";
import { CLI, postJson } from "../helpers/runtime.js";
import { ensureTestModel } from "../helpers/test-models.js";
import { freePort } from "./control-plane.js";
import { auditEntries, findKubectl, forbidden, installChart, kubectl as adminKubectl, serviceAccountKubeConfig, type ServiceAccountKube } from "./chart.js";
import { installCrd, realKube, startModelTestBed, type ModelTestBed } from "./cluster.js";
import { waitFor } from "../helpers/wait.js";
import type { PodRunner } from "./pod-runner.js";

const kube = realKube();
const REPLICA_SETS = { group: "apps", version: "v1", plural: "replicasets", kind: "ReplicaSet", namespaced: true };

/** A `corral` command as its own process, its output in a log file. */
interface Proc {
  child: ChildProcess;
  log: string;
  exited: Promise<number | null>;
}

function corral(dir: string, name: string, args: string[]): Proc {
  const log = path.join(dir, `${name}.log`);
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ["ignore", "pipe", "pipe"], env: { PATH: process.env.PATH, LOG_LEVEL: "info" } });
  const out = createWriteStream(log);
  child.stdout!.pipe(out);
  child.stderr!.pipe(out);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return { child, log, exited };
}

async function stop(proc: Proc | undefined, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (!proc || proc.child.exitCode !== null || proc.child.signalCode !== null) return;
  proc.child.kill(signal);
  const timer = setTimeout(() => proc.child.kill("SIGKILL"), 10_000);
  await proc.exited;
  clearTimeout(timer);
}

const condition = (model: Model | undefined, type: string): Condition | undefined => model?.status?.conditions?.find((c) => c.type === type);

describe.skipIf(!kube || !findKubectl().kubectl)("Corral on a real control plane, end to end", () => {
  let client: KubeClient;
  let ns: string;
  let dir: string;
  let runner: PodRunner;
  let bed: ModelTestBed;
  const operators: Proc[] = [];
  let router: Proc;
  let routerUrl: string;
  /** A second router replica, impatient: --ready-wait-seconds 1. */
  let routerB: Proc;
  let routerBUrl: string;
  /** Figures a person would ask about, printed as a table at the end. */
  const figures: [string, string][] = [];
  const figure = (what: string, value: string) => figures.push([what, value]);

  const model = (name: string) => client.get<Model>(MODELS, ns, name);
  const pods = async (name: string) =>
    (await client.list<Pod>(RESOURCES.pods, ns, { labelSelector: `corral.dev/model=${name}` })).items.filter((p) => !p.metadata.deletionTimestamp);
  const readyPods = async (name: string) =>
    (await pods(name)).filter((p) => p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"));
  const modelWhere = (name: string, check: (m: Model) => boolean, what: string, timeoutMs = 60_000) =>
    waitFor(async () => {
      const m = await model(name);
      return m && check(m) ? m : undefined;
    }, { message: `${name}: ${what}`, timeoutMs, intervalMs: 100 });
  const apply = (name: string, spec: Partial<ModelSpec>) =>
    client.apply<Model>(MODELS, { apiVersion: "corral.dev/v1alpha1", kind: "Model", metadata: { name, namespace: ns }, spec: { source: "successor.gguf", cache: { claimName: "models" }, threads: 1, contextSize: 512, ...spec } } as Model, {
      fieldManager: "kubectl",
      force: true,
    });
  const generate = (modelId: string, body: Record<string, unknown> = {}) => postJson(`${routerUrl}/generate`, { model_id: modelId, prompt: "Hello wor", ...body });

  const kubectl = (...args: string[]) => adminKubectl(kube!, ["-n", ns, ...args]);
  let operatorSA: ServiceAccountKube;
  let routerSA: ServiceAccountKube;

  beforeAll(async () => {
    client = new KubeClient(kube!.kubeConfig);
    await installCrd(client);
    // The "models" claim holds the successor model and a broken file; the pod runner runs the
    // Model pods only: the chart's own pods (operator, router, Redis) are run here as processes.
    bed = await startModelTestBed(kube!, client, "chain", {
      "successor.gguf": await ensureTestModel("successor"),
      "broken.gguf": Buffer.concat([Buffer.from("GGUF"), Buffer.alloc(60, 7)]),
    });
    ({ ns, dir, runner } = bed);
    // The chart installed in the namespace: the operator and routers below run as its
    // ServiceAccounts (tokens from the TokenRequest API), so its RBAC meets the real authorizer.
    // Its own Deployments stay Pending: the pod runner only runs Model pods.
    const chart = await installChart(kube!, { release: "corral", namespace: ns });
    const saOf = (deployment: string) =>
      (chart.objects.find((o) => o.kind === "Deployment" && o.metadata.name === deployment) as KubeObject & { spec: { template: { spec: { serviceAccountName: string } } } }).spec.template.spec
        .serviceAccountName;
    operatorSA = await serviceAccountKubeConfig(kube!, ns, saOf("corral-operator"));
    routerSA = await serviceAccountKubeConfig(kube!, ns, saOf("corral-router"));

    const operatorArgs = (i: number, port: number) => [
      "operator",
      "--kubeconfig", operatorSA.kubeconfigPath,
      "--namespaces", ns,
      "--lease-name", "corral-operator",
      "--lease-namespace", ns,
      "--identity", `operator-${i}`,
      "--lease-duration-seconds", "4",
      "--renew-deadline-seconds", "3",
      "--retry-period-seconds", "1",
      "--host", "127.0.0.1",
      "--port", String(port),
      "--image", "corral:test",
      "--drain-seconds", "2",
      "--progress-seconds", "1",
    ];
    for (const i of [0, 1]) operators.push(corral(dir, `operator-${i}`, operatorArgs(i, await freePort())));

    // Two router replicas, as the chart runs them; B is impatient (--ready-wait-seconds 1).
    const startRouter = async (name: string, readyWaitSeconds: number) => {
      const port = await freePort();
      const proc = corral(dir, name, [
        "router",
        "--backend", "kubernetes",
        "--namespace", ns,
        "--kubeconfig", routerSA.kubeconfigPath,
        "--state-config-map", "corral-router",
        "--host", "127.0.0.1",
        "--port", String(port),
        "--ready-wait-seconds", String(readyWaitSeconds),
        "--rate-limit-points", "0",
      ]);
      return { proc, url: `http://127.0.0.1:${port}` };
    };
    ({ proc: router, url: routerUrl } = await startRouter("router", 60));
    ({ proc: routerB, url: routerBUrl } = await startRouter("router-b", 1));
    await waitFor(async () => (await fetch(`${routerUrl}/health`)).ok && (await fetch(`${routerBUrl}/health`)).ok, { message: "the routers did not become healthy", timeoutMs: 30_000, intervalMs: 100 });
  }, 120_000);

  afterAll(async () => {
    if (figures.length) console.log(`\n| chain scenario | measured |\n|---|---|\n${figures.map(([a, b]) => `| ${a} | ${b} |`).join("\n")}\n`);
    await Promise.all([stop(router), stop(routerB)]);
    await Promise.all(operators.map((p) => stop(p)));
    await bed?.close();
  }, 60_000);

  it("a Model applied becomes a Deployment, a ReplicaSet and a running pod; kubectl get models shows it Ready", async () => {
    const applied = Date.now();
    await apply("successor", { modelId: "corral/successor", parallel: 2 });
    const ready = await modelWhere("successor", (m) => m.status?.phase === "Ready", "not Ready");
    expect(ready.status).toMatchObject({ modelId: "corral/successor", ready: "1/1", readyReplicas: 1 });
    expect(condition(ready, "Ready")).toMatchObject({ status: "True", reason: "ReplicasReady" });
    figure("Model applied -> Ready", `${((Date.now() - applied) / 1000).toFixed(1)} s`);
    const deployment = await client.get<Deployment>(RESOURCES.deployments, ns, "successor");
    expect(deployment?.metadata.ownerReferences?.[0]).toMatchObject({ kind: "Model", name: "successor", controller: true });
    const replicaSets = (await client.list<KubeObject>(REPLICA_SETS, ns, { labelSelector: "corral.dev/model=successor" })).items;
    expect(replicaSets).toHaveLength(1);
    const [pod] = await readyPods("successor");
    expect(pod.status?.phase).toBe("Running");
    expect(pod.status?.podIP).toMatch(/^127\.0\.1\.\d+$/);
    expect(pod.spec?.nodeName).toBe(`node-${ns}`);

    const table = await kubectl("get", "models");
    const [header, row] = table.trim().split("\n");
    expect(header.split(/\s{2,}/)).toEqual(["NAME", "MODEL ID", "PHASE", "READY", "AGE"]);
    expect(row.split(/\s{2,}/).slice(0, 4)).toEqual(["successor", "corral/successor", "Ready", "1/1"]);
  });

  it("/generate and an OpenAI streaming call through the router are answered by that pod", async () => {
    const response = await generate("corral/successor");
    expect(response.status).toBe(200);
    expect(((await response.json()) as { response: string }).response).toBe("stuvwxyz");

    const openai = new OpenAI({ baseURL: `${routerUrl}/v1`, apiKey: "unused" });
    const stream = await openai.chat.completions.create({ model: "corral/successor", messages: [{ role: "user", content: "Hello wor" }], stream: true, max_tokens: 32 });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
    expect(text).toBe("abcdefghijklmnopqrstuvwxyz");
  });

  it("kubectl scale model moves the pods up and down", async () => {
    await kubectl("scale", "model", "successor", "--replicas=2");
    await waitFor(async () => (await readyPods("successor")).length === 2, { message: "two ready pods", timeoutMs: 60_000, intervalMs: 100 });
    const two = await modelWhere("successor", (m) => m.status?.ready === "2/2", "not 2/2");
    expect(two.status?.phase).toBe("Ready");
    expect(new Set((await readyPods("successor")).map((p) => p.status?.podIP)).size).toBe(2);
    await kubectl("scale", "model", "successor", "--replicas=1");
    await waitFor(async () => (await client.list<Pod>(RESOURCES.pods, ns, { labelSelector: "corral.dev/model=successor" })).items.length === 1, { message: "one pod left", timeoutMs: 60_000, intervalMs: 100 });
    await modelWhere("successor", (m) => m.status?.ready === "1/1", "not 1/1");
  });

  it("at zero replicas a request is held, scales the Model up, and is answered once the pod is ready", async () => {
    await kubectl("scale", "model", "successor", "--replicas=0");
    await modelWhere("successor", (m) => m.status?.phase === "ScaledToZero" && m.status.replicas === 0, "not ScaledToZero");
    await waitFor(async () => (await client.list<Pod>(RESOURCES.pods, ns, { labelSelector: "corral.dev/model=successor" })).items.length === 0, { message: "pods gone", timeoutMs: 30_000, intervalMs: 100 });
    const started = Date.now();
    const response = await generate("corral/successor");
    const heldMs = Date.now() - started;
    expect(response.status).toBe(200);
    expect(((await response.json()) as { response: string }).response).toBe("stuvwxyz");
    // Held through scheduling, the process start and the model load: it did not fail fast.
    expect(heldMs).toBeGreaterThan(500);
    figure("request held at zero replicas -> answered", `${(heldMs / 1000).toFixed(1)} s`);
    expect((await model("successor"))?.spec.replicas).toBe(1);
    await modelWhere("successor", (m) => m.status?.phase === "Ready", "not Ready again");
  });

  it("a request held longer than --ready-wait-seconds gets 503 with Retry-After, and the Model keeps scaling up", async () => {
    await apply("cold", { modelId: "corral/cold", replicas: 0 });
    await modelWhere("cold", (m) => m.status?.phase === "ScaledToZero", "not ScaledToZero");
    const started = Date.now();
    const response = await postJson(`${routerBUrl}/generate`, { model_id: "corral/cold", prompt: "Hello wor" });
    expect(response.status).toBe(503);
    expect(response.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(((await response.json()) as { detail: string }).detail).toContain("is not ready after 1 s");
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect((await model("cold"))?.spec.replicas).toBe(1);
    // The retry the client was told to make is answered.
    await modelWhere("cold", (m) => m.status?.phase === "Ready", "not Ready");
    const retried = await postJson(`${routerBUrl}/generate`, { model_id: "corral/cold", prompt: "Hello wor" });
    expect(((await retried.json()) as { response: string }).response).toBe("stuvwxyz");
  });

  it("/models/load makes a Model current for every router replica; /models/unload scales it to zero", async () => {
    await kubectl("scale", "model", "cold", "--replicas=0");
    await modelWhere("cold", (m) => m.status?.phase === "ScaledToZero" && m.status.replicas === 0, "not ScaledToZero");
    const loaded = await postJson(`${routerUrl}/models/load`, { model_id: "corral/cold" });
    expect(loaded.status).toBe(200);
    expect(await loaded.json()).toMatchObject({ model_id: "corral/cold", state: "ready", current: true });
    // The other replica sends requests without a model id there too (the current model is shared).
    await waitFor(async () => ((await (await fetch(`${routerBUrl}/models/current`)).json()) as { model_id: string | null }).model_id === "corral/cold", { message: "router B did not see the current model", timeoutMs: 30_000, intervalMs: 100 });
    const viaCurrent = await postJson(`${routerBUrl}/generate`, { prompt: "Hello wor" });
    expect(((await viaCurrent.json()) as { response: string }).response).toBe("stuvwxyz");
    const unloaded = await postJson(`${routerUrl}/models/unload`, { model_id: "corral/cold" });
    expect(unloaded.status).toBe(200);
    expect((await model("cold"))?.spec.replicas).toBe(0);
    await modelWhere("cold", (m) => m.status?.phase === "ScaledToZero" && m.status.ready === "0/0", "not ScaledToZero after unload");
    await client.delete(MODELS, ns, "cold");
  });

  it("a spec change rolls the pods with no failed request during the rollout", async () => {
    const before = (await readyPods("successor")).map((p) => p.metadata.name);
    expect(before).toHaveLength(1);
    const failures: string[] = [];
    let answered = 0;
    let rolling = true;
    const client1 = (async () => {
      while (rolling) {
        try {
          const response = await generate("corral/successor");
          const body = (await response.json()) as { response?: string; detail?: string };
          if (response.status !== 200 || body.response !== "stuvwxyz") failures.push(`${response.status} ${JSON.stringify(body)}`);
          else answered++;
        } catch (error) {
          failures.push(String(error));
        }
      }
    })();
    await apply("successor", { modelId: "corral/successor", parallel: 2, defaults: { temperature: 0.5 } });
    await waitFor(
      async () => {
        const live = await pods("successor");
        const ready = await readyPods("successor");
        return ready.length === 1 && live.length === 1 && !before.includes(ready[0].metadata.name);
      },
      { message: "the rollout did not finish", timeoutMs: 90_000, intervalMs: 100 },
    );
    await modelWhere("successor", (m) => condition(m, "Progressing")?.reason === "RolloutComplete", "rollout not complete");
    // A few more requests on the new pod.
    const target = answered + 3;
    await waitFor(() => answered >= target, { message: "requests after the rollout", timeoutMs: 30_000, intervalMs: 100 });
    rolling = false;
    await client1;
    expect(failures).toEqual([]);
    expect(answered).toBeGreaterThan(3);
    figure("rolling update", `${answered} requests answered, ${failures.length} failed`);
    const [pod] = await readyPods("successor");
    expect(pod.spec?.containers[0].args).toContain('{"temperature":0.5}');
  });

  it("a runtime that crashes is restarted and the Model says why", async () => {
    const [pod] = await readyPods("successor");
    expect(runner.kill(ns, pod.metadata.name, "SIGKILL")).toBe(true);
    const restarted = await waitFor(
      async () => {
        const p = await client.get<Pod>(RESOURCES.pods, ns, pod.metadata.name);
        const status = p?.status?.containerStatuses?.[0];
        return status && status.restartCount >= 1 && status.ready ? p : undefined;
      },
      { message: "the pod was not restarted and ready again", timeoutMs: 60_000, intervalMs: 100 },
    );
    expect(restarted.status?.containerStatuses?.[0].lastState?.terminated).toMatchObject({ exitCode: 137 });
    // The status written while the pod restarted may still say Loading for a moment: wait for the
    // operator to see the ready pod too (the Model is Ready again, and Degraded says why).
    const m = await modelWhere("successor", (x) => condition(x, "Degraded")?.status === "True" && x.status?.phase === "Ready", "not Ready and Degraded");
    expect(condition(m, "Degraded")).toMatchObject({ reason: "RuntimeRestarted" });
    expect(condition(m, "Degraded")?.message).toContain(`the runtime of pod ${pod.metadata.name} killed (exit code 137`);
    expect(m.status?.phase).toBe("Ready");
    figure("runtime SIGKILLed", `restarted, Degraded: ${condition(m, "Degraded")?.message?.slice(0, 100)}...`);
    const response = await generate("corral/successor");
    expect(((await response.json()) as { response: string }).response).toBe("stuvwxyz");
  });

  it("a Model that cannot load says so within seconds, with the runtime's reason", async () => {
    const started = Date.now();
    await apply("broken", { source: "broken.gguf" });
    const failed = await modelWhere("broken", (m) => m.status?.phase === "Failed", "not Failed", 60_000);
    const seconds = (Date.now() - started) / 1000;
    expect(condition(failed, "Ready")?.reason).toMatch(/ModelLoadFailed|CrashLoopBackOff/);
    expect(condition(failed, "Ready")?.message).toContain("broken.gguf");
    expect(condition(failed, "Degraded")).toMatchObject({ status: "True" });
    expect(seconds).toBeLessThan(60);
    figure("broken model -> Failed", `${seconds.toFixed(1)} s, ${condition(failed, "Ready")?.reason}: ${condition(failed, "Ready")?.message?.slice(0, 120)}`);
    const response = await generate("broken");
    expect(response.status).toBeGreaterThanOrEqual(500);
    expect(((await response.json()) as { detail: string }).detail).toContain("broken");
    await client.delete(MODELS, ns, "broken");
  });

  it("two operators: one leader by a Lease, the other takes over when it is killed, no duplicate objects", async () => {
    const lease = await client.get<KubeObject & { spec: { holderIdentity?: string } }>(RESOURCES.leases, ns, "corral-operator");
    const holder = lease?.spec.holderIdentity;
    expect(holder).toMatch(/^operator-[01]$/);
    const leader = operators[Number(holder!.slice(-1))];
    await stop(leader, "SIGKILL");
    const other = holder === "operator-0" ? "operator-1" : "operator-0";
    const killedAt = Date.now();
    await waitFor(async () => (await client.get<KubeObject & { spec: { holderIdentity?: string } }>(RESOURCES.leases, ns, "corral-operator"))?.spec.holderIdentity === other, { message: "no failover", timeoutMs: 30_000, intervalMs: 100 });
    figure("leader SIGKILLed -> Lease taken over", `${((Date.now() - killedAt) / 1000).toFixed(1)} s (lease duration 4 s)`);
    // The new leader acts: a new Model gets its objects, and there is one of each.
    await apply("after-failover", { modelId: "corral/after", replicas: 1 });
    await modelWhere("after-failover", (m) => m.status?.phase === "Ready", "not Ready under the new leader", 60_000);
    const modelObjects = { labelSelector: "corral.dev/model" };
    const deployments = (await client.list<Deployment>(RESOURCES.deployments, ns, modelObjects)).items.map((d) => d.metadata.name).sort();
    expect(deployments).toEqual(["after-failover", "successor"]);
    const services = (await client.list<KubeObject>(RESOURCES.services, ns, modelObjects)).items.map((d) => d.metadata.name).sort();
    expect(services).toEqual(["after-failover", "successor"]);
    expect(await pods("successor")).toHaveLength(1);
  });

  it("deleting a Model drains its pods and the garbage collector removes its Deployment and Service", async () => {
    const [pod] = await readyPods("after-failover");
    await client.delete(MODELS, ns, "after-failover");
    await waitFor(async () => (await client.get(RESOURCES.pods, ns, pod.metadata.name)) === undefined, { message: "the pod was not removed", timeoutMs: 60_000, intervalMs: 100 });
    expect(runner.logs(ns, pod.metadata.name)).toMatch(/drain|SIGTERM|shutting down/i);
    await waitFor(async () => (await client.get(RESOURCES.deployments, ns, "after-failover")) === undefined, { message: "the Deployment was not collected", timeoutMs: 60_000, intervalMs: 100 });
    await waitFor(async () => (await client.get(RESOURCES.services, ns, "after-failover")) === undefined, { message: "the Service was not collected", timeoutMs: 60_000, intervalMs: 100 });
    const response = await generate("corral/after");
    expect(response.status).toBe(404);
  });

  it("the operators and routers made no call the chart's RBAC forbids", () => {
    const calls = [...auditEntries(kube!, { user: operatorSA.username }), ...auditEntries(kube!, { user: routerSA.username })];
    expect(calls.length).toBeGreaterThan(50);
    expect(forbidden(calls)).toEqual([]);
    figure("API calls as the chart's ServiceAccounts", `${calls.length}, none forbidden`);
  });
});
