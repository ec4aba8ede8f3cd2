import type { Condition, Deployment, Pod } from "../common/kube/types.js";
import { RUNTIME_CONTAINER, modelIdOf, modelSelector, type Model, type ModelPhase, type ModelProgress, type ModelStatus } from "../common/kube/model-resource.js";
import { kubeTime } from "../common/kube/types.js";

/**
 * A Model's status from what its children report: pure functions, unit-tested without an API
 * server. Conditions follow metav1.Condition: Ready, Progressing and Degraded, each with a
 * CamelCase reason and a message that says what is happening and what a person can do.
 */

/** What `GET /info` of a starting runtime said (the fields the operator uses). */
export interface RuntimeInfo {
  state: "downloading" | "loading" | "ready" | "draining" | "failed" | string;
  failure?: string | null;
  progress?: { bytes_done?: number | null; bytes_total?: number | null; load_fraction?: number | null } | null;
  /** Busy sequences plus queued requests: what the autoscaler scales on. */
  load?: number;
  /** Sequences decoded together: a pod whose load exceeds it is full. */
  parallel?: number | null;
}

/** Something wrong that is not in the children's status: an apply the API server refused, a name taken. */
export interface Problem {
  reason: string;
  message: string;
  /** Nothing can run until a person fixes it: the phase is Failed. */
  fatal: boolean;
}

export interface Observation {
  model: Model;
  desiredReplicas: number;
  deployment: Deployment | undefined;
  pods: readonly Pod[];
  /** /info of starting pods, by pod name (absent: not asked or no answer). */
  runtimeInfo: ReadonlyMap<string, RuntimeInfo>;
  problems: readonly Problem[];
  endpoint: string;
  now: Date;
}

/** Container waiting reasons that will not fix themselves. */
const STUCK_REASONS = new Set([
  "CrashLoopBackOff",
  "ImagePullBackOff",
  "ErrImagePull",
  "InvalidImageName",
  "CreateContainerConfigError",
  "CreateContainerError",
  "RunContainerError",
]);

function runtimeStatus(pod: Pod) {
  return pod.status?.containerStatuses?.find((status) => status.name === RUNTIME_CONTAINER) ?? pod.status?.containerStatuses?.[0];
}

export function isPodReady(pod: Pod): boolean {
  return !pod.metadata.deletionTimestamp && pod.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true;
}

function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

function lastLines(text: string | undefined, lines = 3): string {
  if (!text) return "";
  return text.trim().split("\n").slice(-lines).join(" | ").slice(0, 600);
}

/** A runtime that exited this long ago still marks its Model Degraded (after it is back and ready). */
export const RESTART_DEGRADED_SECONDS = 600;

/**
 * A runtime container that exited and was restarted recently: the pod may be Ready again, but a
 * person should see that it died and why (OOM kills, native crashes) without reading every pod.
 */
function recentRestart(pod: Pod, now: Date): Problem | undefined {
  const status = runtimeStatus(pod);
  const terminated = status?.lastState?.terminated;
  if (!status?.restartCount || !terminated?.finishedAt) return undefined;
  const age = (now.getTime() - Date.parse(terminated.finishedAt)) / 1000;
  if (!(age <= RESTART_DEGRADED_SECONDS)) return undefined;
  const how =
    terminated.reason === "OOMKilled"
      ? "killed for using more memory than its limit (OOMKilled)"
      : terminated.exitCode === 137
        ? "killed (exit code 137: SIGKILL, often the kernel's out-of-memory killer)"
        : terminated.signal
          ? `killed by signal ${terminated.signal}`
          : `exited with code ${terminated.exitCode}`;
  const output = lastLines(terminated.message);
  return {
    reason: terminated.reason === "OOMKilled" ? "OOMKilled" : "RuntimeRestarted",
    fatal: false,
    message:
      `the runtime of pod ${pod.metadata.name} ${how} at ${terminated.finishedAt} and was restarted (${status.restartCount} restart${status.restartCount === 1 ? "" : "s"})` +
      (output ? `: ${output}` : "") +
      `; \`kubectl logs ${pod.metadata.name} --previous\` shows its last output.` +
      (terminated.reason === "OOMKilled" || terminated.exitCode === 137 ? " Raise spec.resources.memory if it repeats." : ""),
  };
}

/** Why a pod cannot make progress on its own, if it cannot. */
export function podProblem(pod: Pod, model: Model, now: Date = new Date()): Problem | undefined {
  const name = pod.metadata.name;
  const status = runtimeStatus(pod);
  const waiting = status?.state?.waiting;
  if (waiting?.reason && STUCK_REASONS.has(waiting.reason)) {
    const reason = waiting.reason;
    if (reason === "ImagePullBackOff" || reason === "ErrImagePull" || reason === "InvalidImageName") {
      const image = pod.spec?.containers?.[0]?.image ?? "the image";
      return {
        reason,
        fatal: true,
        message: `pod ${name} cannot pull ${image}: ${waiting.message ?? reason}. Check spec.image (or the operator's --image) and the image pull secrets.`,
      };
    }
    if (reason === "CreateContainerConfigError") {
      return { reason, fatal: true, message: `pod ${name} cannot start: ${waiting.message ?? reason}. Check the Secrets and ConfigMaps named in spec.env.` };
    }
    const terminated = status?.lastState?.terminated;
    const output = lastLines(terminated?.message);
    return {
      reason,
      fatal: true,
      message:
        `pod ${name} keeps exiting (${status?.restartCount ?? 0} restarts${terminated?.exitCode !== undefined ? `, exit code ${terminated.exitCode}` : ""})` +
        (output ? `: ${output}` : "") +
        `. Check spec.source (${model.spec.source}) and spec.resources.memory; \`kubectl logs ${name} --previous\` shows more.`,
    };
  }
  const restarted = recentRestart(pod, now);
  if (restarted) return restarted;
  const scheduled = pod.status?.conditions?.find((c) => c.type === "PodScheduled");
  if (scheduled?.status === "False" && scheduled.reason === "Unschedulable") {
    return {
      reason: "Unschedulable",
      fatal: false,
      message: `pod ${name} cannot be scheduled: ${scheduled.message ?? "no node fits"}. Free or add capacity, or lower spec.resources, spec.nodeSelector or spec.tolerations.`,
    };
  }
  return undefined;
}

interface PhaseVerdict {
  phase: ModelPhase;
  reason: string;
  message: string;
  /** status.progress: only while the model is starting. */
  progress?: ModelProgress;
}

const MIB = 1024 * 1024;

/** A fraction in whole percent steps, rounded down: the status changes at most a hundred times per stage. */
function wholePercent(fraction: number): number {
  // The epsilon keeps 0.29 at 29% (0.29 * 100 is 28.999...).
  return Math.floor(Math.min(1, Math.max(0, fraction)) * 100 + 1e-9) / 100;
}

/**
 * A download's progress, coarse on purpose: bytes in steps of 1% of the total (whole MiB when the
 * total is unknown), so that polling a download rewrites the Model's status rarely.
 */
export function downloadProgress(bytesDone: number, bytesTotal: number | null): ModelProgress {
  const done = Math.max(0, bytesDone);
  if (bytesTotal && bytesTotal > 0) {
    const fraction = wholePercent(done / bytesTotal);
    return { stage: "downloading", fraction, bytesDone: Math.floor((bytesTotal * Math.round(fraction * 100)) / 100), bytesTotal };
  }
  return { stage: "downloading", bytesDone: Math.floor(done / MIB) * MIB };
}

/** Loading into memory, with the runtime's fraction when it reports one. */
export function loadProgress(fraction: number | null | undefined): ModelProgress {
  return typeof fraction === "number" && Number.isFinite(fraction) ? { stage: "loading", fraction: wholePercent(fraction) } : { stage: "loading" };
}

const SCHEDULING: ModelProgress = { stage: "scheduling" };

function startingVerdict(o: Observation, livePods: readonly Pod[]): PhaseVerdict {
  const model = o.model;
  for (const pod of livePods) {
    const info = o.runtimeInfo.get(pod.metadata.name);
    if (info?.state === "failed") {
      return {
        phase: "Failed",
        reason: "ModelLoadFailed",
        message: `pod ${pod.metadata.name} could not load the model: ${info.failure ?? "unknown error"}. Fix spec.source (${model.spec.source}) or the file it names.`,
      };
    }
  }
  for (const pod of livePods) {
    const info = o.runtimeInfo.get(pod.metadata.name);
    if (info?.state === "downloading") {
      const done = info.progress?.bytes_done ?? 0;
      const total = info.progress?.bytes_total ?? null;
      const amount = total ? `${formatBytes(done)} of ${formatBytes(total)} (${Math.floor((done / total) * 100)}%)` : `${formatBytes(done)} so far`;
      return {
        phase: "Downloading",
        reason: "Downloading",
        message: `pod ${pod.metadata.name} is downloading ${model.spec.source}: ${amount}`,
        progress: downloadProgress(done, total),
      };
    }
  }
  for (const pod of livePods) {
    const info = o.runtimeInfo.get(pod.metadata.name);
    if (info?.state === "loading") {
      const fraction = info.progress?.load_fraction;
      const amount = typeof fraction === "number" && fraction > 0 ? ` (${Math.floor(fraction * 100)}%)` : "";
      return { phase: "Loading", reason: "Loading", message: `pod ${pod.metadata.name} is loading the model into memory${amount}`, progress: loadProgress(fraction) };
    }
  }
  const running = livePods.find((pod) => runtimeStatus(pod)?.state?.running);
  if (running) {
    return {
      phase: "Loading",
      reason: "Starting",
      message: `pod ${running.metadata.name} is running and not ready yet (downloading or loading the model; waiting for /readyz)`,
      progress: loadProgress(undefined),
    };
  }
  if (livePods.length === 0) {
    return {
      phase: "Pending",
      reason: "WaitingForPods",
      message: `waiting for the Deployment to create ${o.desiredReplicas === 1 ? "a pod" : `${o.desiredReplicas} pods`}`,
      progress: SCHEDULING,
    };
  }
  const pod = livePods[0]!;
  const waiting = runtimeStatus(pod)?.state?.waiting;
  return {
    phase: "Pending",
    reason: "PodPending",
    message: `pod ${pod.metadata.name} is ${waiting?.reason ? `waiting (${waiting.reason})` : pod.status?.phase === "Pending" || !pod.status?.phase ? "pending (being scheduled and started)" : pod.status.phase}`,
    progress: SCHEDULING,
  };
}

/** Replaces (or adds) a condition, keeping its lastTransitionTime when its status did not change. */
export function setCondition(conditions: readonly Condition[], next: Omit<Condition, "lastTransitionTime">, now: Date): Condition[] {
  const old = conditions.find((c) => c.type === next.type);
  const condition: Condition = {
    type: next.type,
    status: next.status,
    observedGeneration: next.observedGeneration,
    lastTransitionTime: old && old.status === next.status ? old.lastTransitionTime : kubeTime(now),
    reason: next.reason,
    message: next.message,
  };
  if (condition.observedGeneration === undefined) delete condition.observedGeneration;
  return [...conditions.filter((c) => c.type !== next.type), condition];
}

export function getCondition(status: ModelStatus | undefined, type: string): Condition | undefined {
  return status?.conditions?.find((c) => c.type === type);
}

/** The whole status of a Model from what was observed. */
export function computeStatus(o: Observation): ModelStatus {
  const model = o.model;
  const generation = model.metadata.generation;
  const livePods = o.pods.filter((pod) => !pod.metadata.deletionTimestamp);
  const deploymentStatus = o.deployment?.status ?? {};
  const readyReplicas = deploymentStatus.readyReplicas ?? livePods.filter(isPodReady).length;
  const replicas = deploymentStatus.replicas ?? livePods.length;
  const podProblems = livePods.map((pod) => podProblem(pod, model, o.now)).filter((p): p is Problem => p !== undefined);
  // Pods the Deployment could not even create: quota, LimitRange, Pod Security, a missing PriorityClass.
  const replicaFailure = deploymentStatus.conditions?.find((c) => c.type === "ReplicaFailure" && c.status === "True");
  if (replicaFailure) {
    podProblems.unshift({
      reason: replicaFailure.reason ?? "ReplicaFailure",
      fatal: true,
      message:
        `the Deployment cannot create pods: ${replicaFailure.message ?? "no reason given"}. ` +
        "Check the namespace's ResourceQuota, LimitRange and Pod Security settings, and spec.priorityClassName.",
    });
  }
  const fatal = o.problems.find((p) => p.fatal);

  // The deployment controller has seen the current Deployment spec and finished rolling it out.
  const deploymentCurrent =
    o.deployment !== undefined &&
    (deploymentStatus.observedGeneration ?? 0) >= (o.deployment.metadata.generation ?? 0) &&
    (deploymentStatus.updatedReplicas ?? 0) >= o.desiredReplicas &&
    replicas === o.desiredReplicas;
  const deadlineExceeded = deploymentStatus.conditions?.find((c) => c.type === "Progressing" && c.reason === "ProgressDeadlineExceeded");

  let verdict: PhaseVerdict;
  if (fatal) {
    verdict = { phase: "Failed", reason: fatal.reason, message: fatal.message };
  } else if (o.desiredReplicas === 0) {
    verdict = {
      phase: "ScaledToZero",
      reason: "ScaledToZero",
      message: `replicas is 0: the router starts the model on its next request, or run \`kubectl scale model/${model.metadata.name} --replicas=1\``,
    };
  } else if (readyReplicas > 0) {
    verdict = {
      phase: "Ready",
      reason: "ReplicasReady",
      message: `${readyReplicas}/${o.desiredReplicas} replicas ready; model id "${modelIdOf(model)}" is served at ${o.endpoint}`,
    };
  } else {
    const stuck = podProblems.find((p) => p.fatal);
    if (stuck) verdict = { phase: "Failed", reason: stuck.reason, message: stuck.message };
    else if (deadlineExceeded) {
      verdict = {
        phase: "Failed",
        reason: "ProgressDeadlineExceeded",
        message: `no pod became ready in time: ${deadlineExceeded.message ?? ""}. Check \`kubectl describe pods -l ${modelSelector(model.metadata.name)}\`.`,
      };
    } else {
      verdict = startingVerdict(o, livePods);
      const unschedulable = podProblems.find((p) => p.reason === "Unschedulable");
      if (verdict.phase === "Pending" && unschedulable) verdict = { phase: "Pending", reason: "Unschedulable", message: unschedulable.message, progress: SCHEDULING };
    }
  }

  const now = o.now;
  let conditions: Condition[] = [...(model.status?.conditions ?? [])];

  conditions = setCondition(
    conditions,
    { type: "Ready", status: verdict.phase === "Ready" ? "True" : "False", reason: verdict.reason, message: verdict.message, observedGeneration: generation },
    now,
  );

  let progressing: Omit<Condition, "lastTransitionTime">;
  if (verdict.phase === "Failed") {
    progressing = { type: "Progressing", status: "False", reason: verdict.reason, message: `stopped: ${verdict.message}`, observedGeneration: generation };
  } else if (o.desiredReplicas === 0) {
    progressing = {
      type: "Progressing",
      status: replicas > 0 ? "True" : "False",
      reason: replicas > 0 ? "ScalingDown" : "ScaledToZero",
      message: replicas > 0 ? `stopping ${replicas} pod(s)` : "no pods run",
      observedGeneration: generation,
    };
  } else if (!deploymentCurrent) {
    progressing = {
      type: "Progressing",
      status: "True",
      reason: "RollingOut",
      message: `rolling out generation ${generation ?? "?"}: ${deploymentStatus.updatedReplicas ?? 0}/${o.desiredReplicas} pods updated, ${readyReplicas} ready`,
      observedGeneration: generation,
    };
  } else if (readyReplicas < o.desiredReplicas) {
    progressing = {
      type: "Progressing",
      status: "True",
      reason: verdict.phase === "Ready" ? "ScalingUp" : verdict.reason,
      message: verdict.phase === "Ready" ? `${readyReplicas}/${o.desiredReplicas} replicas ready; the others are starting` : verdict.message,
      observedGeneration: generation,
    };
  } else {
    progressing = {
      type: "Progressing",
      status: "False",
      reason: "RolloutComplete",
      message: `all ${o.desiredReplicas} replica(s) run generation ${generation ?? "?"} and are ready`,
      observedGeneration: generation,
    };
  }
  conditions = setCondition(conditions, progressing, now);

  const degradedBy = o.problems[0] ?? podProblems[0] ?? (verdict.phase === "Failed" ? { reason: verdict.reason, message: verdict.message } : undefined);
  conditions = setCondition(
    conditions,
    degradedBy
      ? { type: "Degraded", status: "True", reason: degradedBy.reason, message: degradedBy.message, observedGeneration: generation }
      : { type: "Degraded", status: "False", reason: "AsExpected", message: "no problems seen", observedGeneration: generation },
    now,
  );

  const order = ["Ready", "Progressing", "Degraded"];
  conditions.sort((a, b) => (order.indexOf(a.type) + 1 || 99) - (order.indexOf(b.type) + 1 || 99));

  const status: ModelStatus = {
    phase: verdict.phase,
    modelId: modelIdOf(model),
    replicas,
    readyReplicas,
    ready: `${readyReplicas}/${o.desiredReplicas}`,
    endpoint: o.endpoint,
    selector: modelSelector(model.metadata.name),
    conditions,
  };
  if (generation !== undefined) status.observedGeneration = generation;
  // A copy: the shared SCHEDULING object must not end up in a status someone mutates.
  if (verdict.progress) status.progress = { ...verdict.progress };
  return status;
}

/** True when two statuses say the same thing (key order aside). */
export function sameStatus(a: ModelStatus | undefined, b: ModelStatus | undefined): boolean {
  return canonical(a ?? {}) === canonical(b ?? {});
}

function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined && v !== null)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`)
      .join(",")}}`;
  }
  return JSON.stringify(value);
}
