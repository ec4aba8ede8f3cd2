// The autoscaler with pods that really run: the real control plane (Deployment and ReplicaSet
// controllers), test/kube/pod-runner.ts running `corral runtime` with the benchmark-shaped model,
// the operator and a router (Kubernetes backend) in this process, and clients sending real
// requests through the router. A load step scales the Model out, a lower load scales it back in
// after the delay while a client keeps sending, no load takes it to zero, and a request after that
// starts it again; no request fails on the way. The timeline is printed as a table.

import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KubeClient, RESOURCES } from "../../common/kube/client.js";
import { MODELS, type Model } from "../../common/kube/model-resource.js";
import type { KubeObject } from "../../common/kube/types.js";
import { run as runOperator, type OperatorHandle } from "../../operator/run.js";
import { run as runRouter, type RouterHandle } from "../../router/run.js";
import { testOperatorConfig, testRouterConfig } from "../helpers/config.js";
import { postJson } from "../helpers/runtime.js";
import { ensureTestModel } from "../helpers/test-models.js";
import { waitFor } from "../helpers/wait.js";
import { installCrd, realKube, startModelTestBed, type ModelTestBed } from "./cluster.js";

const kube = realKube();

/** What the Model asks of the autoscaler: one sequence per pod, so a pod carries a load of 1. */
const AUTOSCALING = { targetLoad: 1, windowSeconds: 6, scaleDownDelaySeconds: 8, scaleToZeroSeconds: 10 };
const MAX_REPLICAS = 3;
const INTERVAL_SECONDS = 1;

/** Closed-loop clients through the router: each sends its next request when the last is answered. */
class Clients {
  answered = 0;
  readonly failures: string[] = [];
  private readonly loops: { running: boolean; done: Promise<void> }[] = [];

  constructor(private readonly url: string) {}

  get count(): number {
    return this.loops.filter((l) => l.running).length;
  }

  add(n: number): void {
    for (let i = 0; i < n; i++) {
      const loop = { running: true, done: Promise.resolve() };
      loop.done = (async () => {
        while (loop.running) await this.one();
      })();
      this.loops.push(loop);
    }
  }

  /** Stops all but `keep` clients, after their request in flight. */
  async reduceTo(keep: number): Promise<void> {
    const stopping = this.loops.filter((l) => l.running).slice(keep);
    for (const loop of stopping) loop.running = false;
    await Promise.all(stopping.map((l) => l.done));
  }

  async one(): Promise<void> {
    try {
      const response = await postJson(`${this.url}/generate`, { model_id: "chat", prompt: "The quick brown fox", max_length: 12, temperature: 0 });
      const body = (await response.json()) as { response?: string; detail?: string };
      if (response.status === 200 && typeof body.response === "string") this.answered++;
      else this.failures.push(`${response.status} ${JSON.stringify(body)}`);
    } catch (error) {
      this.failures.push(String(error));
    }
  }
}

describe.skipIf(!kube)("autoscaling on load, with runtimes that really run", () => {
  let client: KubeClient;
  let ns: string;
  let bed: ModelTestBed;
  let operator: OperatorHandle;
  let router: RouterHandle;

  beforeAll(async () => {
    client = new KubeClient(kube!.kubeConfig);
    await installCrd(client);
    bed = await startModelTestBed(kube!, client, "autoscale", { "bench.gguf": await ensureTestModel("bench", "q8_0") });
    ns = bed.ns;
    const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
    operator = await runOperator(
      testOperatorConfig({ namespaces: [ns], leaseNamespace: ns, image: "corral:test", drainSeconds: 5, autoscaleIntervalSeconds: INTERVAL_SECONDS }),
      { kubeConfig: kube!.kubeConfig, logger },
    );
    router = await runRouter(
      testRouterConfig({ backend: "kubernetes", kubeconfig: kube!.kubeconfigPath, namespace: ns, rateLimitPoints: 0, readyWaitSeconds: 90 }),
      { logger },
    );
  }, 180_000);

  afterAll(async () => {
    await router?.close();
    await operator?.close();
    await bed?.close();
  }, 60_000);

  it("scales out on a load step, in after the delay with a client still sending, to zero when idle, and starts again; no request fails", async () => {
    await client.apply<Model>(
      MODELS,
      {
        apiVersion: "corral.dev/v1alpha1",
        kind: "Model",
        metadata: { name: "chat", namespace: ns },
        spec: { source: "bench.gguf", cache: { claimName: "models" }, threads: 1, parallel: 1, contextSize: 256, replicas: 1, minReplicas: 0, maxReplicas: MAX_REPLICAS, autoscaling: AUTOSCALING },
      } as Model,
      { fieldManager: "kubectl", force: true },
    );

    // The timeline: every change of spec.replicas or ready pods, with the clients sending then.
    const start = Date.now();
    const clients = new Clients(router.url);
    const timeline: { at: number; replicas: number; ready: number; clients: number; note: string }[] = [];
    let note = "Model applied";
    let watching = true;
    const watcher = (async () => {
      let last = "";
      while (watching) {
        const m = await client.get<Model>(MODELS, ns, "chat").catch(() => undefined);
        const replicas = m?.spec.replicas ?? -1;
        const ready = m?.status?.readyReplicas ?? 0;
        const key = `${replicas}/${ready}/${clients.count}/${note}`;
        if (key !== last) timeline.push({ at: (Date.now() - start) / 1000, replicas, ready, clients: clients.count, note });
        last = key;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    })();
    const model = () => client.get<Model>(MODELS, ns, "chat");
    const when = (what: string, check: (m: Model) => boolean, timeoutMs: number) =>
      waitFor(async () => {
        const m = await model();
        return m && check(m) ? (Date.now() - start) / 1000 : undefined;
      }, { message: what, timeoutMs, intervalMs: 100 });

    try {
      await when("the first pod is ready", (m) => m.status?.readyReplicas === 1, 120_000);
      // Warm: one request, so the page cache holds the weights before the clock starts.
      await clients.one();

      // 1. A load step: three clients on one pod of one sequence is a load of 3 at a target of 1.
      note = "load step: 3 clients";
      const stepAt = (Date.now() - start) / 1000;
      clients.add(3);
      const outAt = await when("scale-out", (m) => (m.spec.replicas ?? 0) > 1, 60_000);
      const allReadyAt = await when("three pods ready", (m) => m.spec.replicas === MAX_REPLICAS && m.status?.readyReplicas === MAX_REPLICAS, 120_000);
      // Served by three pods for a while.
      await new Promise((resolve) => setTimeout(resolve, 5000));
      const answeredAtThree = clients.answered;

      // 2. Down to one client: a load of 1. Scale-in comes after the delay, with the client sending.
      note = "load drops: 1 client";
      await clients.reduceTo(1);
      const dropAt = (Date.now() - start) / 1000;
      const inAt = await when("scale-in to 1", (m) => m.spec.replicas === 1, 90_000);
      await when("the other pods gone", (m) => m.status?.replicas === 1, 60_000);
      await new Promise((resolve) => setTimeout(resolve, 2000));

      // 3. No load: zero after scaleToZeroSeconds.
      note = "load gone";
      await clients.reduceTo(0);
      const idleAt = (Date.now() - start) / 1000;
      const zeroAt = await when("scale to zero", (m) => m.spec.replicas === 0, 90_000);
      await when("no pods", (m) => (m.status?.replicas ?? 0) === 0, 60_000);

      // 4. A request at zero is held while the router starts the Model again, then answered.
      note = "one request at zero";
      const requestAt = Date.now();
      const before = clients.answered;
      await clients.one();
      const coldSeconds = (Date.now() - requestAt) / 1000;
      note = "done";
      await new Promise((resolve) => setTimeout(resolve, 400));

      const events = (await client.list<KubeObject & { reason: string; message: string; involvedObject: { name: string } }>(RESOURCES.events, ns)).items
        .filter((e) => e.involvedObject.name === "chat" && e.reason === "Autoscaled")
        .map((e) => e.message);
      const rows = timeline.map((t) => `| ${t.at.toFixed(1)} | ${t.replicas} | ${t.ready} | ${t.clients} | ${t.note} |`);
      console.log(`\n| t (s) | spec.replicas | ready pods | clients | phase |\n|---|---|---|---|---|\n${rows.join("\n")}\n`);
      console.log(
        `\n| autoscaling (window ${AUTOSCALING.windowSeconds} s, delay ${AUTOSCALING.scaleDownDelaySeconds} s, to zero after ${AUTOSCALING.scaleToZeroSeconds} s, target ${AUTOSCALING.targetLoad}, interval ${INTERVAL_SECONDS} s) | measured |\n|---|---|\n` +
          `| load step to first scale-out | ${(outAt - stepAt).toFixed(1)} s |\n` +
          `| load step to ${MAX_REPLICAS} pods ready | ${(allReadyAt - stepAt).toFixed(1)} s |\n` +
          `| load drop to scale-in (1 client still sending) | ${(inAt - dropAt).toFixed(1)} s |\n` +
          `| load gone to zero replicas | ${(zeroAt - idleAt).toFixed(1)} s |\n` +
          `| request at zero answered after | ${coldSeconds.toFixed(1)} s |\n` +
          `| requests answered / failed | ${clients.answered} / ${clients.failures.length} |\n` +
          `| Autoscaled events | ${events.length}: ${events.map((m) => m.split(":")[0]).join("; ")} |\n`,
      );

      expect(clients.failures).toEqual([]);
      expect(clients.answered).toBe(before + 1);
      expect(answeredAtThree).toBeGreaterThan(0);
      // The step reached the autoscaler within the window (one interval for the read, one for the write).
      expect(outAt - stepAt).toBeLessThanOrEqual(AUTOSCALING.windowSeconds + 2 * INTERVAL_SECONDS + 2);
      // Fewer pods only once the delay has passed without a higher recommendation, and zero only after
      // the idle time (less one interval: the last read that saw load may precede the last answer).
      expect(inAt - dropAt).toBeGreaterThanOrEqual(AUTOSCALING.scaleDownDelaySeconds - INTERVAL_SECONDS);
      expect(zeroAt - idleAt).toBeGreaterThanOrEqual(AUTOSCALING.scaleToZeroSeconds - INTERVAL_SECONDS);
      expect(events.some((m) => m.startsWith("scaled up from 1 to"))).toBe(true);
      expect(events.some((m) => m.startsWith("scaled down from"))).toBe(true);
      expect(events.some((m) => m.startsWith("scaled to zero from 1"))).toBe(true);
    } finally {
      watching = false;
      await watcher;
      await clients.reduceTo(0);
    }
  }, 420_000);
});
