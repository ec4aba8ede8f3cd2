import { DEFAULT_PARALLEL } from "../common/runtime-command.js";
import { AUTOSCALING_DEFAULTS, isAutoscaled, type ModelSpec } from "../common/kube/model-resource.js";

/**
 * The autoscaler's arithmetic, pure: what a Model asks for (policy), what its pods reported
 * (samples), and how many replicas follow. The loop that reads the pods and writes spec.replicas
 * is operator/autoscaler.ts.
 *
 * Load is a pod's busy sequences plus its queued requests. Desired replicas are
 * ceil(average total load over the window / target per replica), which does not depend on how many
 * pods serve it now, so new pods that take a share of the load do not undo the decision that
 * started them. Scale-up follows at once; scale-down takes the highest recommendation of the last
 * scaleDownDelay (as the HPA's stabilisation window does), so a dip does not remove a pod that
 * the next burst needs; zero comes only after scaleToZero with no load at all.
 */

export interface AutoscalePolicy {
  minReplicas: number;
  maxReplicas: number;
  targetLoad: number;
  windowMs: number;
  scaleDownDelayMs: number;
  scaleToZeroMs: number;
}

/** The Model's autoscaling policy with defaults filled in, or undefined where it is not autoscaled. */
export function autoscalePolicy(spec: ModelSpec): AutoscalePolicy | undefined {
  if (!isAutoscaled(spec)) return undefined;
  const a = spec.autoscaling ?? {};
  const minReplicas = spec.minReplicas ?? 0;
  return {
    minReplicas,
    maxReplicas: Math.max(spec.maxReplicas!, minReplicas),
    targetLoad: a.targetLoad ?? spec.parallel ?? DEFAULT_PARALLEL,
    windowMs: (a.windowSeconds ?? AUTOSCALING_DEFAULTS.windowSeconds) * 1000,
    scaleDownDelayMs: (a.scaleDownDelaySeconds ?? AUTOSCALING_DEFAULTS.scaleDownDelaySeconds) * 1000,
    scaleToZeroMs: (a.scaleToZeroSeconds ?? AUTOSCALING_DEFAULTS.scaleToZeroSeconds) * 1000,
  };
}

/** One look at a Model's pods. */
export interface LoadSample {
  at: number;
  /** Busy sequences plus queued requests, summed over the pods that answered; undefined while no pod is ready to serve (unknown, not idle). */
  load: number | undefined;
  /** Fewer pods are ready than spec.replicas asks for: the Model is starting or scaling up. */
  starting: boolean;
  /**
   * Every ready pod is full: all its sequences busy and requests waiting. The routers hold what
   * does not fit (their fair queues), so the pods' figure is a floor of the demand, not the demand.
   */
  saturated?: boolean;
}

/** What the autoscaler remembers of one Model (per leader: a new leader starts afresh). */
export class LoadHistory {
  readonly samples: { at: number; load: number }[] = [];
  readonly recommendations: { at: number; replicas: number }[] = [];
  /** Since when this history covers the Model: decisions that look back wait until it covers enough. */
  since: number;
  /** When a pod last had load, or the Model was starting. */
  lastBusyAt: number;

  constructor(now: number) {
    this.since = now;
    this.lastBusyAt = now;
  }

  /** Forget everything (the Model went to zero: its next life starts from nothing). */
  reset(now: number): void {
    this.samples.length = 0;
    this.recommendations.length = 0;
    this.since = now;
    this.lastBusyAt = now;
  }
}

export type ScaleReason = "load" | "saturated" | "idle" | "bounds" | "steady";

export interface Decision {
  /** What spec.replicas should be. */
  replicas: number;
  /** Average total load over the window (what the decision was made on). */
  averageLoad: number;
  /** ceil(average / target), within the bounds, before the scale-down delay. */
  recommended: number;
  reason: ScaleReason;
}

/** Records `sample` in `history` and decides spec.replicas for a Model at `current` replicas. */
export function decide(history: LoadHistory, policy: AutoscalePolicy, current: number, sample: LoadSample): Decision {
  const { at } = sample;
  const floor = Math.max(policy.minReplicas, 1);
  if (current === 0) {
    // No pods, no load to read: the router scales it up when a request comes.
    history.reset(at);
    const replicas = policy.minReplicas > 0 ? policy.minReplicas : 0;
    return { replicas, averageLoad: 0, recommended: replicas, reason: replicas === 0 ? "steady" : "bounds" };
  }

  if (sample.load !== undefined) history.samples.push({ at, load: sample.load });
  dropBefore(history.samples, at - policy.windowMs);
  if (sample.load !== 0 || sample.starting) history.lastBusyAt = at;
  const averageLoad = history.samples.length ? history.samples.reduce((sum, s) => sum + s.load, 0) / history.samples.length : 0;
  // The epsilon keeps 8.000000001 / 4 from asking for a third pod. Pods that are all full hide the
  // rest of the demand in the routers' queues: then at least twice the replicas (as the HPA's
  // default scale-up policy allows), but not while pods are still starting, or it would run away.
  const fromLoad = Math.ceil(averageLoad / policy.targetLoad - 1e-9);
  const fromSaturation = sample.saturated && !sample.starting ? 2 * current : 0;
  const recommended = clamp(Math.max(fromLoad, fromSaturation), floor, policy.maxReplicas);
  history.recommendations.push({ at, replicas: recommended });
  dropBefore(history.recommendations, at - policy.scaleDownDelayMs);

  if (current > policy.maxReplicas) return { replicas: policy.maxReplicas, averageLoad, recommended, reason: "bounds" };
  if (current < floor) return { replicas: Math.max(floor, recommended), averageLoad, recommended, reason: "bounds" };
  const idleFor = at - history.lastBusyAt;
  if (policy.minReplicas === 0 && idleFor >= policy.scaleToZeroMs) return { replicas: 0, averageLoad, recommended: 0, reason: "idle" };
  if (recommended > current) return { replicas: recommended, averageLoad, recommended, reason: fromSaturation > fromLoad ? "saturated" : "load" };
  if (recommended === current) return { replicas: current, averageLoad, recommended, reason: "steady" };
  // Lower: never while pods are starting (their share of the load is not there yet), and only once
  // the whole delay asked for fewer and the history covers the delay.
  if (sample.starting || at - history.since < policy.scaleDownDelayMs) return { replicas: current, averageLoad, recommended, reason: "steady" };
  const stabilised = Math.max(...history.recommendations.map((r) => r.replicas));
  return stabilised < current ? { replicas: stabilised, averageLoad, recommended, reason: "load" } : { replicas: current, averageLoad, recommended, reason: "steady" };
}

function dropBefore(entries: { at: number }[], cutoff: number): void {
  let stale = 0;
  // Keep at least the newest entry: a window shorter than the interval still has one sample.
  while (stale < entries.length - 1 && entries[stale].at <= cutoff) stale++;
  if (stale) entries.splice(0, stale);
}

function clamp(value: number, low: number, high: number): number {
  return Math.min(Math.max(value, low), high);
}
