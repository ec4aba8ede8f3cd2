// The pod runner against the real control plane: a Node the node lifecycle controller keeps
// Ready, Deployment pods bound, run on addresses of their own and made Ready by their probes,
// crash loops with the kubelet's back-off and termination message, graceful deletion, liveness
// restarts, and the real Corral runtime serving the successor model from a pod.

import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { HttpMethod } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { KubeClient, RESOURCES, resourcePath, type ResourceType } from "../../common/kube/client.js";
import type { KubeObject, Lease } from "../../common/kube/types.js";
import { REPO_ROOT, TEST_MODEL_DIR, ensureTestModel } from "../helpers/test-models.js";
import { realKube } from "./cluster.js";
import { startPodRunner, type PodRunner } from "./pod-runner.js";
import { waitFor } from "../helpers/wait.js";

const kube = realKube();

const SECRETS: ResourceType = { group: "", version: "v1", plural: "secrets", kind: "Secret", namespaced: true };
const NODES: ResourceType = { group: "", version: "v1", plural: "nodes", kind: "Node", namespaced: false };

/** The container: serves on argv[1]:PORT, /sick fails /healthz, CRASH exits 3 after 100 lines, SIGTERM writes MARK. */
const SERVER = `
const http = require("node:http"), fs = require("node:fs");
if (process.env.CRASH) {
  for (let i = 1; i <= 100; i++) console.log("line " + i);
  console.error("fatal: " + process.env.CRASH);
  process.exit(3);
}
let healthy = true;
const server = http.createServer((req, res) => {
  if (req.url === "/sick") healthy = false;
  if (req.url === "/healthz" && !healthy) { res.statusCode = 500; return res.end("sick"); }
  if (req.url === "/env") return res.end(JSON.stringify({ env: process.env, cwd: process.cwd(), argv: process.argv.slice(1) }));
  res.end("ok");
});
server.listen(Number(process.env.PORT), process.argv[1], () => console.log("listening on " + process.argv[1] + ":" + process.env.PORT));
process.on("SIGTERM", () => {
  if (process.env.MARK) fs.writeFileSync(process.env.MARK, "SIGTERM\\n");
  process.exit(0);
});
`;

interface PodStatus {
  phase?: string;
  hostIP?: string;
  podIP?: string;
  podIPs?: { ip: string }[];
  startTime?: string;
  conditions?: { type: string; status: string; reason?: string; message?: string; lastTransitionTime?: string }[];
  containerStatuses?: {
    name: string;
    containerID?: string;
    started?: boolean;
    ready: boolean;
    restartCount: number;
    state: Record<string, any>;
    lastState: Record<string, any>;
  }[];
}
type Pod = KubeObject & { spec: Record<string, any>; status?: PodStatus };

const isReady = (pod: Pod | undefined) => pod?.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;

function serverContainer(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: "c",
    image: "example.com/server:1",
    command: ["node", "-e", SERVER],
    args: ["0.0.0.0"],
    ports: [{ name: "http", containerPort: 8080 }],
    env: [
      { name: "PORT", value: "8080" },
      { name: "POD_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
      { name: "POD_IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } },
      { name: "TOKEN", valueFrom: { secretKeyRef: { name: "creds", key: "token" } } },
      { name: "MARK", value: "/scratch/$(POD_NAME).term" },
      { name: "DATA", value: "/data/file" },
      { name: "SA_DIR", value: "/var/run/secrets/kubernetes.io/serviceaccount" },
    ],
    readinessProbe: { httpGet: { path: "/ready", port: "http" }, periodSeconds: 10 },
    volumeMounts: [
      { name: "scratch", mountPath: "/scratch" },
      { name: "data", mountPath: "/data" },
    ],
    ...extra,
  };
}

const SERVER_VOLUMES = [
  { name: "scratch", persistentVolumeClaim: { claimName: "scratch" } },
  { name: "data", emptyDir: {} },
];

describe.skipIf(!kube)("the pod runner (a kubelet stand-in) on the real control plane", () => {
  const ns = `pr-${Date.now().toString(36)}`;
  let client: KubeClient;
  let runner: PodRunner;
  let scratch: string;

  const getPod = (name: string) => client.get<Pod>(RESOURCES.pods, ns, name);
  const createPod = (name: string, spec: Record<string, unknown>) =>
    client.create(RESOURCES.pods, ns, { apiVersion: "v1", kind: "Pod", metadata: { name }, spec });

  beforeAll(async () => {
    client = new KubeClient(kube!.kubeConfig);
    scratch = mkdtempSync(path.join(tmpdir(), "pod-runner-scratch-"));
    process.env.POD_RUNNER_TEST_LEAK = "must not reach the container";
    await client.create(RESOURCES.namespaces, undefined, { apiVersion: "v1", kind: "Namespace", metadata: { name: ns } });
    await client.create(SECRETS, ns, { apiVersion: "v1", kind: "Secret", metadata: { name: "creds" }, stringData: { token: "s3cret" } });
    runner = await startPodRunner({
      kubeConfig: kube!.kubeConfig,
      namespaces: [ns],
      nodeName: `${ns}-node`,
      claimDir: path.join(kube!.dir, "pod-addresses"),
      volumes: { claims: { scratch, models: TEST_MODEL_DIR } },
      commands: { node: [process.execPath], corral: [process.execPath, path.join(REPO_ROOT, "dist/bin/corral.js")] },
      backoffBaseSeconds: 1,
      maxProbePeriodSeconds: 1,
      leaseRenewSeconds: 2,
    });
  });

  afterAll(async () => {
    await runner?.close();
    await client?.delete(RESOURCES.namespaces, undefined, ns);
    rmSync(scratch, { recursive: true, force: true });
    delete process.env.POD_RUNNER_TEST_LEAK;
  });

  it("registers a Ready Node and keeps its Lease renewed", async () => {
    const node = await client.get<KubeObject & { status: any }>(NODES, undefined, runner.nodeName);
    expect(node?.status.conditions.find((c: any) => c.type === "Ready")).toMatchObject({ status: "True", reason: "KubeletReady" });
    expect(node?.status.addresses).toContainEqual({ type: "InternalIP", address: "127.0.0.1" });
    expect(node?.status.allocatable).toMatchObject({ pods: "110" });
    const first = (await client.get<Lease>(RESOURCES.leases, "kube-node-lease", runner.nodeName))?.spec?.renewTime;
    expect(first).toBeTruthy();
    await waitFor(async () => (await client.get<Lease>(RESOURCES.leases, "kube-node-lease", runner.nodeName))?.spec?.renewTime !== first, { message: "timed out waiting for the Lease renewed", timeoutMs: 10_000, intervalMs: 100 });
  });

  it("runs a Deployment's pods on addresses of their own, Ready through their readiness probe, with the pod's env only", async () => {
    await client.create(RESOURCES.deployments, ns, {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "web" },
      spec: {
        replicas: 2,
        selector: { matchLabels: { app: "web" } },
        template: { metadata: { labels: { app: "web" } }, spec: { containers: [serverContainer()], volumes: SERVER_VOLUMES, terminationGracePeriodSeconds: 5 } },
      },
    });
    const pods = await waitFor(async () => {
      const items = (await client.list<Pod>(RESOURCES.pods, ns, { labelSelector: "app=web" })).items;
      return items.length === 2 && items.every(isReady) ? items : undefined;
    }, { message: "timed out waiting for two Ready pods", timeoutMs: 30_000, intervalMs: 100 });
    const ips = pods.map((p) => p.status!.podIP!);
    expect(new Set(ips).size).toBe(2);
    for (const pod of pods) {
      const status = pod.status!;
      expect(pod.spec.nodeName).toBe(runner.nodeName);
      expect(status.phase).toBe("Running");
      expect(status.hostIP).toBe("127.0.0.1");
      expect(status.podIP).toMatch(/^127\.0\.1\.\d+$/);
      expect(status.podIPs).toEqual([{ ip: status.podIP }]);
      expect(status.startTime).toBeTruthy();
      for (const type of ["PodScheduled", "Initialized", "ContainersReady", "Ready"]) {
        expect(status.conditions?.find((c) => c.type === type)).toMatchObject({ status: "True", lastTransitionTime: expect.any(String) });
      }
      expect(status.containerStatuses).toEqual([
        expect.objectContaining({ name: "c", ready: true, started: true, restartCount: 0, containerID: expect.stringMatching(/^pod-runner:\/\//), state: { running: { startedAt: expect.any(String) } } }),
      ]);
      const seen = (await (await fetch(`http://${status.podIP}:8080/env`)).json()) as { env: Record<string, string>; cwd: string; argv: string[] };
      expect(seen.argv).toEqual([status.podIP]); // 0.0.0.0 is the pod's address
      expect(seen.env).toMatchObject({ PORT: "8080", POD_NAME: pod.metadata.name, POD_IP: status.podIP, TOKEN: "s3cret", HOSTNAME: pod.metadata.name });
      expect(seen.env.MARK).toBe(path.join(scratch, `${pod.metadata.name}.term`)); // $(POD_NAME) expanded, /scratch mapped
      expect(seen.env.DATA).toMatch(/\/volumes\/data\/file$/); // an emptyDir folder of the pod
      expect(seen.env.POD_RUNNER_TEST_LEAK).toBeUndefined();
      // The ServiceAccount admission's projected volume, written out.
      expect(readFileSync(path.join(seen.env.SA_DIR, "namespace"), "utf8")).toBe(ns);
      expect(readFileSync(path.join(seen.env.SA_DIR, "token"), "utf8")).toMatch(/^ey/);
      expect(readFileSync(path.join(seen.env.SA_DIR, "ca.crt"), "utf8")).toContain("BEGIN CERTIFICATE");
      expect(runner.logs(ns, pod.metadata.name)).toContain(`listening on ${status.podIP}:8080`);
    }
    // The real Deployment controller counts them.
    await waitFor(async () => (await client.get<any>(RESOURCES.deployments, ns, "web"))?.status?.readyReplicas === 2, { message: "timed out waiting for the Deployment reports 2 ready replicas", timeoutMs: 30_000, intervalMs: 100 });
    // The node lifecycle controller is content: no not-ready or unreachable taints.
    expect((await client.get<KubeObject & { spec: { taints?: unknown[] } }>(NODES, undefined, runner.nodeName))?.spec.taints).toBeUndefined();
  });

  it("sends SIGTERM on deletion, then removes the pod, and the ReplicaSet's replacement starts", async () => {
    const pods = (await client.list<Pod>(RESOURCES.pods, ns, { labelSelector: "app=web" })).items;
    const victim = pods[0].metadata.name;
    await client.request(HttpMethod.DELETE, resourcePath(RESOURCES.pods, ns, victim), { body: { apiVersion: "v1", kind: "DeleteOptions", gracePeriodSeconds: 5 } });
    await waitFor(async () => (await getPod(victim)) === undefined, { message: "timed out waiting for the deleted pod gone from the API", timeoutMs: 15_000, intervalMs: 100 });
    expect(readFileSync(path.join(scratch, `${victim}.term`), "utf8")).toBe("SIGTERM\n");
    await waitFor(async () => {
      const items = (await client.list<Pod>(RESOURCES.pods, ns, { labelSelector: "app=web" })).items;
      return items.length === 2 && items.every(isReady) && !items.some((p) => p.metadata.name === victim);
    }, { message: "timed out waiting for two Ready pods again", timeoutMs: 30_000, intervalMs: 100 });
    await client.delete(RESOURCES.deployments, ns, "web");
  });

  it("restarts a crashing container with back-off, its log tail as the termination message", async () => {
    await createPod("crasher", {
      containers: [serverContainer({ terminationMessagePolicy: "FallbackToLogsOnError", env: [{ name: "CRASH", value: "boom" }] })],
      volumes: SERVER_VOLUMES,
    });
    const waiting = new Set<string>();
    const pod = await waitFor(
      async () => {
        const pod = await getPod("crasher");
        const status = pod?.status?.containerStatuses?.[0];
        if (status?.state.waiting?.reason === "CrashLoopBackOff") waiting.add(status.state.waiting.message);
        return status && status.restartCount >= 2 && waiting.size >= 1 ? pod : undefined;
      },
      { message: "timed out waiting for two restarts", timeoutMs: 30_000, intervalMs: 50 },
    );
    const uid = pod!.metadata.uid!;
    expect([...waiting].some((m) => new RegExp(`^back-off [12]s restarting failed container=c pod=crasher_${ns}\\(${uid}\\)$`).test(m))).toBe(true);
    const status = pod!.status!;
    expect(status.phase).toBe("Running");
    expect(status.conditions?.find((c) => c.type === "Ready")).toMatchObject({ status: "False", reason: "ContainersNotReady", message: "containers with unready status: [c]" });
    const last = status.containerStatuses![0].lastState.terminated;
    expect(last).toMatchObject({ exitCode: 3, reason: "Error", startedAt: expect.any(String), finishedAt: expect.any(String) });
    // The last 80 lines of the log: "line 22" to "line 100", then the error line.
    expect(last.message.split("\n").filter(Boolean)).toEqual([...Array.from({ length: 79 }, (_, i) => `line ${i + 22}`), "fatal: boom"]);
    expect(runner.logs(ns, "crasher", { previous: true })).toContain("fatal: boom");
    await client.delete(RESOURCES.pods, ns, "crasher");
  });

  it("kills and restarts a container whose liveness probe fails", async () => {
    await createPod("lively", {
      containers: [serverContainer({ livenessProbe: { httpGet: { path: "/healthz", port: 8080 }, periodSeconds: 1, failureThreshold: 2 } })],
      volumes: SERVER_VOLUMES,
      terminationGracePeriodSeconds: 5,
    });
    const pod = await waitFor(async () => {
      const pod = await getPod("lively");
      return isReady(pod) ? pod : undefined;
    }, { message: "timed out waiting for the pod Ready", timeoutMs: 30_000, intervalMs: 100 });
    await fetch(`http://${pod.status!.podIP}:8080/sick`);
    const restarted = await waitFor(async () => {
      const pod = await getPod("lively");
      return pod?.status?.containerStatuses?.[0].restartCount === 1 && isReady(pod) ? pod : undefined;
    }, { message: "timed out waiting for a restart after the liveness failures", timeoutMs: 30_000, intervalMs: 100 });
    // The server exits 0 on SIGTERM: the killed instance Completed.
    expect(restarted.status!.containerStatuses![0].lastState.terminated).toMatchObject({ exitCode: 0, reason: "Completed" });
    expect(readFileSync(path.join(scratch, "lively.term"), "utf8")).toBe("SIGTERM\n");
    await client.delete(RESOURCES.pods, ns, "lively");
  });

  it("leaves a container whose command it cannot run waiting with CreateContainerError, and keeps going", async () => {
    await createPod("unknown", { containers: [{ name: "c", image: "example.com/x", command: ["no-such-command"] }] });
    const status = await waitFor(async () => {
      const status = (await getPod("unknown"))?.status;
      return status?.containerStatuses?.[0].state.waiting?.reason === "CreateContainerError" ? status : undefined;
    }, { message: "timed out waiting for the container waiting", timeoutMs: 30_000, intervalMs: 100 });
    expect(status.phase).toBe("Pending");
    expect(status.containerStatuses![0].state.waiting.message).toContain('"no-such-command"');
    await client.delete(RESOURCES.pods, ns, "unknown");
    await waitFor(async () => (await getPod("unknown")) === undefined, { message: "timed out waiting for the pod gone", timeoutMs: 15_000, intervalMs: 100 });
  });

  it("leaves a pod that does not fit Pending and Unschedulable, as the scheduler says it", async () => {
    await createPod("gpu", { containers: [{ name: "c", image: "x", command: ["node"], resources: { limits: { "nvidia.com/gpu": "1" } } }] });
    const scheduled = await waitFor(async () => (await getPod("gpu"))?.status?.conditions?.find((c) => c.type === "PodScheduled"), { message: "timed out waiting for the PodScheduled condition", timeoutMs: 30_000, intervalMs: 100 });
    expect(scheduled).toMatchObject({ status: "False", reason: "Unschedulable", message: "0/1 nodes are available: 1 Insufficient nvidia.com/gpu." });
    expect((await getPod("gpu"))?.spec.nodeName).toBeUndefined();
    await client.delete(RESOURCES.pods, ns, "gpu");
  });

  it("runs the real Corral runtime: Ready on its pod address, serving the successor model", async () => {
    const model = path.basename(await ensureTestModel("successor"));
    await createPod("corral", {
      containers: [
        {
          name: "runtime",
          image: "ghcr.io/example/corral:test",
          command: ["corral"],
          args: ["runtime", "--model", `/models/${model}`, "--host", "0.0.0.0", "--port", "8080", "--threads", "1", "--drain-seconds", "1"],
          env: [{ name: "HOME", value: "/tmp" }],
          ports: [{ name: "http", containerPort: 8080 }],
          readinessProbe: { httpGet: { path: "/readyz", port: "http" }, periodSeconds: 5 },
          terminationMessagePolicy: "FallbackToLogsOnError",
          volumeMounts: [
            { name: "models", mountPath: "/models" },
            { name: "tmp", mountPath: "/tmp" },
          ],
        },
      ],
      volumes: [
        { name: "models", persistentVolumeClaim: { claimName: "models" } },
        { name: "tmp", emptyDir: {} },
      ],
      terminationGracePeriodSeconds: 5,
    });
    const pod = await waitFor(
      async () => {
        const pod = await getPod("corral");
        return isReady(pod) ? pod : undefined;
      },
      { message: "timed out waiting for the runtime pod Ready", timeoutMs: 60_000, intervalMs: 200 },
    ).catch((error: Error) => {
      throw new Error(`${error.message}; runtime log:\n${runner.logs(ns, "corral")}`);
    });
    expect(pod.status!.podIP).toMatch(/^127\.0\.1\.\d+$/);
    const response = await fetch(`http://${pod.status!.podIP}:8080/generate`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: "Hello wor", max_length: 16 }),
    });
    expect(response.status).toBe(200);
    expect(((await response.json()) as { response: string }).response).toBe("stuvwxyz");
    await client.delete(RESOURCES.pods, ns, "corral");
    await waitFor(async () => (await getPod("corral")) === undefined, { message: "timed out waiting for the runtime pod gone", timeoutMs: 15_000, intervalMs: 100 });
    expect(existsSync(path.join(kube!.dir, "pod-addresses", pod.status!.podIP!))).toBe(false);
  }, 90_000);
});
