/**
 * `npm run bench:operator`: 500 Models applied at once to a real control plane (kube-apiserver,
 * etcd and kube-controller-manager from CORRAL_KUBE_ASSETS; test/kube/control-plane.ts), reconciled
 * by `corral operator` running as its own process (so its memory is its own). Reports the seconds
 * until every Model has its Deployment and Service, until every status is written, the API
 * requests the operator sent per Model (counted by the fault proxy it talks through, which injects
 * nothing here), and the operator's peak resident memory (VmHWM). Goals: under 30 s, under 200 MB.
 * Prints markdown tables; medians over --runs runs, each in a namespace of its own on one control
 * plane. The Deployment controller makes each Model's pods (--replicas, default 1); no kubelet
 * runs them, so they stay Pending, as on a cluster with no room.
 *
 *   CORRAL_KUBE_ASSETS=<dir> npm run bench:operator -- --models 500 --runs 3 [--replicas 1] [--workers 8]
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { KubeClient, RESOURCES } from "../common/kube/client.js";
import type { KubeObject, Lease } from "../common/kube/types.js";
import { MODELS as MODEL_RESOURCE, MODEL_CRD_NAME, loadModelCrd, type Model } from "../common/kube/model-resource.js";
import { PACKAGE_ROOT } from "../common/package-root.js";
import { findKubeAssets, startControlPlane } from "../test/kube/control-plane.js";
import { startFaultProxy, type FaultProxy } from "../test/kube/fault-proxy.js";
import { waitFor } from "../test/helpers/wait.js";
import { argValue, fixed, median, runConcurrently, table } from "./lib.js";

const MODELS = Number(argValue("models", "500"));
const RUNS = Number(argValue("runs", "3"));
const WORKERS = argValue("workers", "8");
const REPLICAS = Number(argValue("replicas", "1"));
const OPERATOR_MAIN = path.join(PACKAGE_ROOT, "dist", "operator", "main.js");

interface RunResult {
  childrenSeconds: number;
  statusSeconds: number;
  requests: number;
  byVerb: Record<string, number>;
  peakMb: number;
  idleMb: number;
  cpuSeconds: number;
}

/** Peak and current resident memory of a process, from /proc (Linux). */
function memoryMb(pid: number): { peak: number; current: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
  return { peak: kb("VmHWM") / 1024, current: kb("VmRSS") / 1024 };
}

function startOperator(kubeconfig: string, namespace: string): ChildProcess {
  const script = `import { operatorCommand } from ${JSON.stringify(OPERATOR_MAIN)}; await operatorCommand().parseAsync(process.argv.slice(1), { from: "user" });`;
  const args = ["--kubeconfig", kubeconfig, "--namespaces", namespace, "--lease-namespace", namespace, "--port", "0", "--host", "127.0.0.1",
    "--log-level", "warn", "--workers", WORKERS, "--image", "corral:bench"];
  return spawn(process.execPath, ["--input-type=module", "-e", script, "--", ...args], { stdio: ["ignore", "ignore", "inherit"] });
}

/** Applies the Model CRD and waits until Models can be listed. */
async function installCrd(client: KubeClient): Promise<void> {
  await client.apply(RESOURCES.customResourceDefinitions, loadModelCrd() as KubeObject, { fieldManager: "corral-bench", force: true });
  await waitFor(
    async () => {
      const crd = await client.get<KubeObject & { status?: { conditions?: { type: string; status: string }[] } }>(RESOURCES.customResourceDefinitions, undefined, MODEL_CRD_NAME);
      return crd?.status?.conditions?.some((c) => c.type === "Established" && c.status === "True") && (await client.list(MODEL_RESOURCE, "default", { pageSize: 1 }));
    },
    { timeoutMs: 30_000, intervalMs: 100, message: "the Model CRD was not established" },
  );
}

async function once(run: number, client: KubeClient, proxy: FaultProxy, kubeconfig: string): Promise<RunResult> {
  const namespace = `bench-${run}`;
  await client.create(RESOURCES.namespaces, undefined, { apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } });
  const child = startOperator(kubeconfig, namespace);
  try {
    // Started: it holds the Lease and watches Models.
    await waitFor(async () => (await client.get<Lease>(RESOURCES.leases, namespace, "corral-operator"))?.spec?.holderIdentity, {
      timeoutMs: 30_000,
      intervalMs: 100,
      message: "the operator did not start",
    });
    await waitFor(() => proxy.openWatches("models.corral.dev") > 0, { timeoutMs: 30_000, message: "the operator does not watch Models" });
    await new Promise((resolve) => setTimeout(resolve, 500));
    const idleMb = memoryMb(child.pid!).current;
    proxy.resetRequestLog();

    const started = performance.now();
    // Applied straight to the API server (not through the proxy), so every request in its log is the operator's.
    await runConcurrently(16, MODELS, async (i) => {
      await client.create<Model>(MODEL_RESOURCE, namespace, {
        apiVersion: "corral.dev/v1alpha1",
        kind: "Model",
        metadata: { name: `model-${i}`, namespace },
        spec: { source: `hf:bench/model-${i}/model.gguf`, replicas: REPLICAS, resources: { cpu: "1", memory: "1Gi" }, parallel: 2 },
      });
    });
    const count = async (rt: (typeof RESOURCES)[keyof typeof RESOURCES]) => (await client.list(rt, namespace)).items.length;
    await waitFor(async () => (await count(RESOURCES.deployments)) === MODELS && (await count(RESOURCES.services)) === MODELS, {
      timeoutMs: 300_000,
      intervalMs: 250,
      message: "not every Model got its Deployment and Service",
    });
    const childrenSeconds = (performance.now() - started) / 1000;
    await waitFor(async () => (await client.list<Model>(MODEL_RESOURCE, namespace)).items.every((m) => m.status?.observedGeneration === 1), {
      timeoutMs: 300_000,
      intervalMs: 250,
      message: "not every status was written",
    });
    const statusSeconds = (performance.now() - started) / 1000;
    // Let the last events and watch-triggered reconciles settle before counting.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const byVerb: Record<string, number> = {};
    let requests = 0;
    for (const entry of proxy.requestLog) {
      if (entry.resource === "leases.coordination.k8s.io") continue; // leader election: per time, not per Model
      const key = `${entry.verb} ${entry.resource ?? entry.path}${entry.subresource ? `/${entry.subresource}` : ""}`;
      byVerb[key] = (byVerb[key] ?? 0) + 1;
      requests++;
    }
    const peakMb = memoryMb(child.pid!).peak;
    const stat = readFileSync(`/proc/${child.pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    const cpuSeconds = (Number(stat[11]) + Number(stat[12])) / 100; // utime + stime, in clock ticks (100/s)
    process.stderr.write(`run ${run}: ${fixed(childrenSeconds, 2)} s children, ${fixed(statusSeconds, 2)} s status, ${fixed(requests / MODELS, 2)} requests/Model, ${fixed(peakMb, 0)} MB peak\n`);
    return { childrenSeconds, statusSeconds, requests, byVerb, peakMb, idleMb, cpuSeconds };
  } finally {
    child.kill("SIGTERM");
    await new Promise((resolve) => child.once("exit", resolve));
    // The namespace stays: deleting 500 Models' children would load the next run; plane.stop() ends it all.
  }
}

const assets = findKubeAssets();
if (!assets.dir) {
  console.error(`bench:operator needs a real control plane and cannot run: ${assets.reason}`);
  process.exit(1);
}
process.stderr.write("starting the control plane (etcd, kube-apiserver, kube-controller-manager)...\n");
const plane = await startControlPlane({ assets: assets.dir });
const results: RunResult[] = [];
let proxy: FaultProxy | undefined;
try {
  const client = new KubeClient(plane.kubeConfig);
  await installCrd(client);
  proxy = await startFaultProxy(plane);
  const kubeconfig = path.join(plane.dir, "bench-operator.kubeconfig");
  writeFileSync(kubeconfig, proxy.kubeConfig.exportConfig());
  for (let run = 1; run <= RUNS; run++) results.push(await once(run, client, proxy, kubeconfig));
} finally {
  await proxy?.close();
  await plane.stop();
}


console.log(`\n### bench:operator — ${MODELS} Models of ${REPLICAS} replica(s), ${WORKERS} workers, real kube-apiserver and kube-controller-manager, ${RUNS} run(s)\n`);
console.log(
  table(
    ["run", "all Deployments + Services (s)", "all statuses written (s)", "API requests / Model", "operator peak RSS (MB)", "operator RSS before (MB)", "operator CPU (s)"],
    [
      ...results.map((r, i) => [i + 1, fixed(r.childrenSeconds, 2), fixed(r.statusSeconds, 2), fixed(r.requests / MODELS, 2), fixed(r.peakMb, 0), fixed(r.idleMb, 0), fixed(r.cpuSeconds, 1)]),
      [
        "median",
        fixed(median(results.map((r) => r.childrenSeconds)), 2),
        fixed(median(results.map((r) => r.statusSeconds)), 2),
        fixed(median(results.map((r) => r.requests / MODELS)), 2),
        fixed(median(results.map((r) => r.peakMb)), 0),
        fixed(median(results.map((r) => r.idleMb)), 0),
        fixed(median(results.map((r) => r.cpuSeconds)), 1),
      ],
    ],
  ),
);
const last = results[results.length - 1]!;
console.log(`\nRequests of the last run by verb and resource (leader-election Lease traffic excluded):\n`);
console.log(
  table(
    ["request", "count", "per Model"],
    Object.entries(last.byVerb)
      .sort(([, a], [, b]) => b - a)
      .map(([key, count]) => [key, count, fixed(count / MODELS, 2)]),
  ),
);
console.log(
  `\nGoals: under 30 s to all Deployments and Services, under 200 MB peak. The times include creating the Models over HTTP ` +
    `(16 at a time) and share the machine with etcd, kube-apiserver and kube-controller-manager (which also makes the ReplicaSets ` +
    `and pods); on 2 shared cores timings vary by 2x between runs.`,
);
