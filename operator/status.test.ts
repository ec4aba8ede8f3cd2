import { describe, expect, it } from "vitest";
import type { Deployment, Pod } from "../common/kube/types.js";
import type { Model, ModelStatus } from "../common/kube/model-resource.js";
import { computeStatus, getCondition, sameStatus, setCondition, type Observation, type RuntimeInfo } from "./status.js";

const now = new Date("2025-01-02T03:04:05Z");

function model(replicas = 1, status?: ModelStatus): Model {
  return {
    apiVersion: "corral.dev/v1alpha1",
    kind: "Model",
    metadata: { name: "tiny", namespace: "ml", uid: "u", generation: 2 },
    spec: { source: "hf:o/r/f.gguf", replicas },
    status,
  };
}

function deployment(status: Deployment["status"], generation = 1): Deployment {
  return { metadata: { name: "tiny", namespace: "ml", generation }, status };
}

function pod(name: string, extra: Partial<NonNullable<Pod["status"]>> = {}): Pod {
  return { metadata: { name, namespace: "ml", labels: { "corral.dev/model": "tiny" } }, spec: { containers: [{ name: "runtime", image: "corral:1" }] }, status: { phase: "Pending", ...extra } };
}

const running = (name: string) =>
  pod(name, { phase: "Running", podIP: "10.0.0.1", containerStatuses: [{ name: "runtime", ready: false, restartCount: 0, state: { running: {} } }] });

function observe(o: Partial<Observation> & { model?: Model } = {}): ModelStatus {
  const m = o.model ?? model();
  return computeStatus({
    model: m,
    desiredReplicas: m.spec.replicas ?? 1,
    deployment: undefined,
    pods: [],
    runtimeInfo: new Map(),
    problems: [],
    endpoint: "http://tiny.ml.svc:8080",
    now,
    ...o,
  });
}

describe("computeStatus", () => {
  it("is Pending while the Deployment has no pods, with observedGeneration and the endpoint", () => {
    const status = observe();
    expect(status).toMatchObject({ phase: "Pending", modelId: "tiny", replicas: 0, readyReplicas: 0, ready: "0/1", observedGeneration: 2 });
    expect(status.endpoint).toBe("http://tiny.ml.svc:8080");
    expect(status.selector).toBe("corral.dev/model=tiny");
    expect(getCondition(status, "Ready")).toMatchObject({ status: "False", reason: "WaitingForPods" });
    expect(getCondition(status, "Progressing")).toMatchObject({ status: "True", reason: "RollingOut" });
    expect(getCondition(status, "Degraded")).toMatchObject({ status: "False", reason: "AsExpected" });
    expect(status.conditions!.map((c) => c.type)).toEqual(["Ready", "Progressing", "Degraded"]);
  });

  it("is Ready once a replica is, and the rollout is complete when all are", () => {
    const status = observe({
      deployment: deployment({ observedGeneration: 1, replicas: 1, updatedReplicas: 1, readyReplicas: 1 }),
      pods: [pod("p1", { phase: "Running", conditions: [{ type: "Ready", status: "True" }] })],
    });
    expect(status.phase).toBe("Ready");
    expect(status.ready).toBe("1/1");
    expect(getCondition(status, "Ready")).toMatchObject({ status: "True", reason: "ReplicasReady" });
    expect(getCondition(status, "Ready")!.message).toContain("http://tiny.ml.svc:8080");
    expect(getCondition(status, "Progressing")).toMatchObject({ status: "False", reason: "RolloutComplete" });
  });

  it("says RollingOut until the deployment controller has seen the new spec", () => {
    const status = observe({ deployment: deployment({ observedGeneration: 1, replicas: 1, updatedReplicas: 1, readyReplicas: 1 }, 2) });
    expect(status.phase).toBe("Ready");
    expect(getCondition(status, "Progressing")).toMatchObject({ status: "True", reason: "RollingOut" });
  });

  it("is ScaledToZero at zero replicas, and says how to start it", () => {
    const status = observe({ model: model(0), deployment: deployment({ observedGeneration: 1, replicas: 0 }) });
    expect(status.phase).toBe("ScaledToZero");
    expect(getCondition(status, "Ready")!.message).toContain("kubectl scale model/tiny --replicas=1");
    expect(getCondition(status, "Progressing")).toMatchObject({ status: "False", reason: "ScaledToZero" });
  });

  it("reports download progress and loading from the runtime's /info", () => {
    const downloading: RuntimeInfo = { state: "downloading", progress: { bytes_done: 1024 ** 3, bytes_total: 4 * 1024 ** 3 } };
    const status = observe({ pods: [running("p1")], runtimeInfo: new Map([["p1", downloading]]) });
    expect(status.phase).toBe("Downloading");
    expect(getCondition(status, "Ready")!.message).toBe("pod p1 is downloading hf:o/r/f.gguf: 1.0 GiB of 4.0 GiB (25%)");
    const loading = observe({ pods: [running("p1")], runtimeInfo: new Map([["p1", { state: "loading", progress: { load_fraction: 0.5 } }]]) });
    expect(loading.phase).toBe("Loading");
    expect(getCondition(loading, "Ready")!.message).toBe("pod p1 is loading the model into memory (50%)");
    expect(observe({ pods: [running("p1")] }).phase).toBe("Loading");
  });

  it("gives status.progress while starting: scheduling, downloading and loading, in whole percent", () => {
    expect(observe().progress).toEqual({ stage: "scheduling" });
    expect(observe({ pods: [pod("p1")] }).progress).toEqual({ stage: "scheduling" });
    const unschedulable = pod("p1", { conditions: [{ type: "PodScheduled", status: "False", reason: "Unschedulable", message: "no node" }] });
    expect(observe({ pods: [unschedulable] }).progress).toEqual({ stage: "scheduling" });

    const total = 4 * 1024 ** 3;
    const downloading = (bytes_done: number, bytes_total: number | null = total) =>
      observe({ pods: [running("p1")], runtimeInfo: new Map([["p1", { state: "downloading", progress: { bytes_done, bytes_total } }]]) });
    expect(downloading(1024 ** 3).progress).toEqual({ stage: "downloading", fraction: 0.25, bytesDone: 1024 ** 3, bytesTotal: total });
    expect(downloading(0.29 * total).progress).toMatchObject({ fraction: 0.29 });
    // Bytes move in 1% steps: a download polled every few seconds does not rewrite the status each time.
    const a = downloading(0.421 * total);
    const b = downloading(0.4299 * total);
    expect(a.progress).toEqual({ stage: "downloading", fraction: 0.42, bytesDone: Math.floor(total * 0.42), bytesTotal: total });
    expect(sameStatus({ ...a, conditions: [] }, { ...b, conditions: [] })).toBe(true);
    // Without a known size: whole MiB, no fraction.
    expect(downloading(5 * 1024 * 1024 + 12345, null).progress).toEqual({ stage: "downloading", bytesDone: 5 * 1024 * 1024 });

    const loading = (info: RuntimeInfo | undefined) => observe({ pods: [running("p1")], runtimeInfo: new Map(info ? [["p1", info]] : []) }).progress;
    expect(loading({ state: "loading", progress: { load_fraction: 0.806 } })).toEqual({ stage: "loading", fraction: 0.8 });
    expect(loading({ state: "loading", progress: null })).toEqual({ stage: "loading" });
    // Running, /info not answered yet: loading as far as anyone can tell.
    expect(loading(undefined)).toEqual({ stage: "loading" });
  });

  it("has no status.progress once ready, at zero replicas or failed", () => {
    const ready = observe({
      deployment: deployment({ observedGeneration: 1, replicas: 2, updatedReplicas: 2, readyReplicas: 1 }),
      pods: [pod("p1", { phase: "Running", conditions: [{ type: "Ready", status: "True" }] }), running("p2")],
      model: model(2),
    });
    expect(ready.phase).toBe("Ready");
    expect(ready.progress).toBeUndefined();
    expect(observe({ model: model(0) }).progress).toBeUndefined();
    const failed = observe({ pods: [running("p1")], runtimeInfo: new Map([["p1", { state: "failed", failure: "not a GGUF file" }]]) });
    expect(failed.phase).toBe("Failed");
    expect(failed.progress).toBeUndefined();
  });

  it("is Failed with the runtime's reason when the model cannot load", () => {
    const status = observe({ pods: [running("p1")], runtimeInfo: new Map([["p1", { state: "failed", failure: "not a GGUF file" }]]) });
    expect(status.phase).toBe("Failed");
    expect(getCondition(status, "Degraded")).toMatchObject({ status: "True", reason: "ModelLoadFailed" });
    expect(getCondition(status, "Degraded")!.message).toContain("not a GGUF file");
  });

  it("is Failed for a crash loop, quoting the runtime's last output", () => {
    const crashing = pod("p1", {
      phase: "Running",
      containerStatuses: [
        {
          name: "runtime",
          ready: false,
          restartCount: 4,
          state: { waiting: { reason: "CrashLoopBackOff", message: "back-off 40s" } },
          lastState: { terminated: { exitCode: 1, message: "loading\ncorral: out of memory loading model" } },
        },
      ],
    });
    const status = observe({ pods: [crashing] });
    expect(status.phase).toBe("Failed");
    expect(getCondition(status, "Ready")).toMatchObject({ status: "False", reason: "CrashLoopBackOff" });
    expect(getCondition(status, "Ready")!.message).toContain("4 restarts, exit code 1");
    expect(getCondition(status, "Ready")!.message).toContain("out of memory loading model");
    expect(getCondition(status, "Progressing")).toMatchObject({ status: "False" });
  });

  it("stays Ready but Degraded for ten minutes after a runtime was killed and restarted, saying how it died", () => {
    const restarted = (finishedAt: string) =>
      pod("p1", {
        phase: "Running",
        podIP: "10.0.0.1",
        conditions: [{ type: "Ready", status: "True" }],
        containerStatuses: [
          { name: "runtime", ready: true, restartCount: 1, state: { running: {} }, lastState: { terminated: { exitCode: 137, reason: "Error", finishedAt } } },
        ],
      });
    const ready = { observedGeneration: 1, replicas: 1, updatedReplicas: 1, readyReplicas: 1 };
    const recent = observe({ deployment: deployment(ready), pods: [restarted("2025-01-02T03:00:00Z")] });
    expect(recent.phase).toBe("Ready");
    expect(getCondition(recent, "Degraded")).toMatchObject({ status: "True", reason: "RuntimeRestarted" });
    expect(getCondition(recent, "Degraded")!.message).toBe(
      "the runtime of pod p1 killed (exit code 137: SIGKILL, often the kernel's out-of-memory killer) at 2025-01-02T03:00:00Z and was restarted (1 restart); " +
        "`kubectl logs p1 --previous` shows its last output. Raise spec.resources.memory if it repeats.",
    );
    const old = observe({ deployment: deployment(ready), pods: [restarted("2025-01-02T02:50:00Z")] });
    expect(getCondition(old, "Degraded")).toMatchObject({ status: "False", reason: "AsExpected" });
  });

  it("is Failed when the image cannot be pulled", () => {
    const status = observe({
      pods: [pod("p1", { containerStatuses: [{ name: "runtime", ready: false, restartCount: 0, state: { waiting: { reason: "ImagePullBackOff", message: "not found" } } }] })],
    });
    expect(status.phase).toBe("Failed");
    expect(getCondition(status, "Ready")!.message).toContain("cannot pull corral:1");
  });

  it("is Pending and Degraded when no node fits", () => {
    const status = observe({
      pods: [pod("p1", { conditions: [{ type: "PodScheduled", status: "False", reason: "Unschedulable", message: "0/3 nodes are available: 3 Insufficient nvidia.com/gpu." }] })],
    });
    expect(status.phase).toBe("Pending");
    expect(getCondition(status, "Ready")).toMatchObject({ reason: "Unschedulable" });
    expect(getCondition(status, "Degraded")).toMatchObject({ status: "True", reason: "Unschedulable" });
    expect(getCondition(status, "Degraded")!.message).toContain("3 Insufficient nvidia.com/gpu");
  });

  it("is Failed when the Deployment cannot create pods, with the API server's reason", () => {
    const status = observe({
      deployment: deployment({
        observedGeneration: 1,
        replicas: 0,
        conditions: [{ type: "ReplicaFailure", status: "True", reason: "FailedCreate", message: 'pods "tiny-x" is forbidden: exceeded quota: gpu' }],
      }),
    });
    expect(status.phase).toBe("Failed");
    expect(getCondition(status, "Degraded")).toMatchObject({ status: "True", reason: "FailedCreate" });
    expect(getCondition(status, "Degraded")!.message).toContain("exceeded quota: gpu");
  });

  it("is Failed for a problem only a person can fix", () => {
    const status = observe({ problems: [{ reason: "ChildConflict", message: "Deployment ml/tiny already exists", fatal: true }] });
    expect(status.phase).toBe("Failed");
    expect(getCondition(status, "Degraded")).toMatchObject({ status: "True", reason: "ChildConflict", message: "Deployment ml/tiny already exists" });
  });

  it("keeps lastTransitionTime while a condition's status does not change", () => {
    const first = observe();
    const later = observe({ model: model(1, first), now: new Date("2025-01-02T04:00:00Z"), pods: [running("p1")] });
    expect(getCondition(later, "Ready")!.lastTransitionTime).toBe(getCondition(first, "Ready")!.lastTransitionTime);
    expect(getCondition(later, "Ready")!.reason).toBe("Starting");
    const ready = observe({
      model: model(1, later),
      now: new Date("2025-01-02T05:00:00Z"),
      deployment: deployment({ observedGeneration: 1, replicas: 1, updatedReplicas: 1, readyReplicas: 1 }),
    });
    expect(getCondition(ready, "Ready")!.lastTransitionTime).toBe("2025-01-02T05:00:00Z");
  });
});

describe("setCondition and sameStatus", () => {
  it("replaces a condition by type", () => {
    const one = setCondition([], { type: "Ready", status: "False", reason: "A", message: "a" }, now);
    const two = setCondition(one, { type: "Ready", status: "True", reason: "B", message: "b" }, new Date("2025-02-01T00:00:00Z"));
    expect(two).toEqual([{ type: "Ready", status: "True", reason: "B", message: "b", lastTransitionTime: "2025-02-01T00:00:00Z" }]);
  });

  it("ignores key order and absent values", () => {
    expect(sameStatus({ phase: "Ready", replicas: 1 }, { replicas: 1, phase: "Ready", endpoint: undefined })).toBe(true);
    expect(sameStatus({ phase: "Ready" }, { phase: "Pending" })).toBe(false);
    expect(sameStatus(undefined, {})).toBe(true);
  });
});
