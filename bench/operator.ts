/**
 * `npm run bench:operator`: 500 Models applied at once to the fake API server, reconciled by
 * `corral operator` running as its own process (so its memory is its own). Reports the seconds
 * until every Model has its Deployment and Service, until every status is written, the API
 * requests the operator sent per Model, and the operator's peak resident memory (VmHWM).
 * Goals: under 30 s, under 200 MB. Prints markdown tables; medians over --runs runs.
 *
 *   npm run bench:operator -- --models 500 --runs 3 [--pods] [--workers 8]
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { loadModelCrd } from "../common/model-resource.js";
import { PACKAGE_ROOT } from "../common/package-root.js";
import { startFakeKube, waitFor, type FakeKube } from "../test/fake-kube/index.js";
import { argValue, fixed, median, table } from "./lib.js";

const MODELS = Number(argValue("models", "500"));
const RUNS = Number(argValue("runs", "3"));
const WORKERS = argValue("workers", "8");
const PODS = process.argv.includes("--pods");
const NAMESPACE = "bench";
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

function startOperator(kubeconfig: string): ChildProcess {
  const script = `import { operatorCommand } from ${JSON.stringify(OPERATOR_MAIN)}; await operatorCommand().parseAsync(process.argv.slice(1), { from: "user" });`;
  const args = ["--kubeconfig", kubeconfig, "--namespaces", NAMESPACE, "--lease-namespace", NAMESPACE, "--port", "0", "--host", "127.0.0.1",
    "--log-level", "warn", "--workers", WORKERS, "--image", "corral:bench"];
  return spawn(process.execPath, ["--input-type=module", "-e", script, "--", ...args], { stdio: ["ignore", "ignore", "inherit"] });
}

async function once(run: number): Promise<RunResult> {
  const fake: FakeKube = await startFakeKube({ deploymentController: PODS, crdInitDelayMs: 0, namespaces: [NAMESPACE], historySize: 100_000 });
  fake.create(loadModelCrd());
  fake.flushControllers();
  const dir = mkdtempSync(path.join(tmpdir(), "corral-bench-"));
  const kubeconfig = path.join(dir, "kubeconfig");
  writeFileSync(kubeconfig, fake.kubeconfigYaml);
  const child = startOperator(kubeconfig);
  try {
    // Started: it holds the Lease and watches Models.
    await waitFor(() => fake.list("leases.coordination.k8s.io", NAMESPACE)[0]?.spec?.holderIdentity, { timeoutMs: 30_000, message: "the operator did not start" });
    await waitFor(() => fake.requestLog.some((e) => e.verb === "watch" && e.resource === "models.corral.dev"), { timeoutMs: 30_000 });
    await new Promise((resolve) => setTimeout(resolve, 500));
    const idleMb = memoryMb(child.pid!).current;
    fake.resetRequestLog();

    const started = performance.now();
    // Applied in-process (not over HTTP), so every request in the log is the operator's.
    for (let i = 0; i < MODELS; i++) {
      fake.create({
        apiVersion: "corral.dev/v1alpha1",
        kind: "Model",
        metadata: { name: `model-${i}`, namespace: NAMESPACE },
        spec: { source: `hf:bench/model-${i}/model.gguf`, resources: { cpu: "1", memory: "1Gi" }, parallel: 2 },
      });
    }
    await waitFor(
      () => fake.list("deployments.apps", NAMESPACE).length === MODELS && fake.list("services", NAMESPACE).length === MODELS,
      { timeoutMs: 300_000, intervalMs: 50, message: "not every Model got its Deployment and Service" },
    );
    const childrenSeconds = (performance.now() - started) / 1000;
    await waitFor(() => fake.list("models.corral.dev", NAMESPACE).every((m) => m.status?.observedGeneration === 1), {
      timeoutMs: 300_000,
      intervalMs: 50,
      message: "not every status was written",
    });
    const statusSeconds = (performance.now() - started) / 1000;
    // Let the last events and watch-triggered reconciles settle before counting.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const byVerb: Record<string, number> = {};
    let requests = 0;
    for (const entry of fake.requestLog) {
      if (entry.resource === "leases.coordination.k8s.io") continue; // leader election: per time, not per Model
      const key = `${entry.verb} ${entry.resource}${entry.subresource ? `/${entry.subresource}` : ""}`;
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
    await fake.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const results: RunResult[] = [];
for (let run = 1; run <= RUNS; run++) results.push(await once(run));

console.log(`\n### bench:operator — ${MODELS} Models, ${WORKERS} workers, fake API server${PODS ? " with its Deployment controller (pods)" : ""}, ${RUNS} run(s)\n`);
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
  `\nGoals: under 30 s to all Deployments and Services, under 200 MB peak. The fake API server runs in this process ` +
    `and is the bottleneck (the operator is mostly idle, waiting for answers); on 2 shared cores timings vary by 2x between runs.`,
);
