import { describe, expect, it } from "vitest";
import type { ModelSpec } from "../common/kube/model-resource.js";
import { LoadHistory, autoscalePolicy, decide, type AutoscalePolicy, type Decision } from "./autoscale.js";
import { describeDecision } from "./autoscaler.js";

const policy = (overrides: Partial<AutoscalePolicy> = {}): AutoscalePolicy => ({
  minReplicas: 0,
  maxReplicas: 5,
  targetLoad: 4,
  windowMs: 10_000,
  scaleDownDelayMs: 30_000,
  scaleToZeroMs: 60_000,
  ...overrides,
});

/**
 * Drives decide() the way the loop does: one sample a second, the decision applied to `replicas`
 * at once. Returns what replicas were after each second.
 */
function simulate(p: AutoscalePolicy, loads: (second: number, replicas: number) => number, seconds: number, start = 1, options: { starting?: (second: number) => boolean } = {}) {
  const history = new LoadHistory(0);
  let replicas = start;
  const trace: number[] = [];
  const decisions: Decision[] = [];
  for (let s = 1; s <= seconds; s++) {
    const decision = decide(history, p, replicas, { at: s * 1000, load: loads(s, replicas), starting: options.starting?.(s) ?? false });
    decisions.push(decision);
    replicas = decision.replicas;
    trace.push(replicas);
  }
  return { trace, decisions, history };
}

describe("autoscalePolicy", () => {
  const spec = (s: Partial<ModelSpec>): ModelSpec => ({ source: "hf:o/r/f.gguf", ...s });

  it("applies only where maxReplicas is set", () => {
    expect(autoscalePolicy(spec({ replicas: 2, minReplicas: 1 }))).toBeUndefined();
    expect(autoscalePolicy(spec({ maxReplicas: 3 }))).toBeDefined();
  });

  it("defaults the target to the pod's parallel sequences, and the times to the documented ones", () => {
    expect(autoscalePolicy(spec({ maxReplicas: 3 }))).toEqual({ minReplicas: 0, maxReplicas: 3, targetLoad: 4, windowMs: 60_000, scaleDownDelayMs: 300_000, scaleToZeroMs: 600_000 });
    expect(autoscalePolicy(spec({ maxReplicas: 3, parallel: 8 }))?.targetLoad).toBe(8);
    expect(
      autoscalePolicy(spec({ minReplicas: 1, maxReplicas: 3, parallel: 8, autoscaling: { targetLoad: 2.5, windowSeconds: 5, scaleDownDelaySeconds: 0, scaleToZeroSeconds: 30 } })),
    ).toEqual({ minReplicas: 1, maxReplicas: 3, targetLoad: 2.5, windowMs: 5000, scaleDownDelayMs: 0, scaleToZeroMs: 30_000 });
  });
});

describe("decide", () => {
  it("a load step scales out within the window, to ceil(load / target), never past maxReplicas", () => {
    // From second 5 on, 14 requests busy or queued: 4 replicas at a target of 4.
    const { trace } = simulate(policy(), (s) => (s >= 5 ? 14 : 0), 20);
    const firstUp = trace.findIndex((r) => r > 1) + 1;
    expect(firstUp).toBeGreaterThan(5);
    expect(firstUp).toBeLessThan(5 + 10);
    expect(trace.at(-1)).toBe(4);
    expect(Math.max(...trace)).toBe(4);
    expect(simulate(policy({ maxReplicas: 2 }), () => 100, 20).trace.at(-1)).toBe(2);
  });

  it("the decision does not depend on how many pods share the load, so new pods do not undo it", () => {
    // The same total load whether 1 or 3 pods carry it.
    const { trace } = simulate(policy(), () => 12, 60);
    expect(trace.at(-1)).toBe(3);
    expect(new Set(trace.slice(10))).toEqual(new Set([3]));
  });

  it("scales down only after the delay, and a short dip does not remove a pod", () => {
    // 12 for 20 s (3 replicas), then a 5 s dip to 0, then 12 again.
    const dip = simulate(policy(), (s) => (s <= 20 || s > 25 ? 12 : 0), 40);
    expect(dip.trace.slice(15)).toEqual(Array(25).fill(3));
    // The load halves for good: down to 2 only once the delay has seen nothing higher.
    const halve = simulate(policy(), (s) => (s <= 20 ? 12 : 6), 90);
    const down = halve.trace.findIndex((r, i) => i >= 20 && r < 3) + 1;
    // The 10 s window must forget the 12s first, then 30 s of lower recommendations.
    expect(down).toBeGreaterThanOrEqual(20 + 30);
    expect(halve.trace.at(-1)).toBe(2);
  });

  it("scales to zero after scaleToZero with no load where minReplicas is 0, not before, and not where it is 1", () => {
    const idle = simulate(policy(), (s) => (s <= 10 ? 4 : 0), 100);
    const zeroAt = idle.trace.indexOf(0) + 1;
    expect(zeroAt).toBe(10 + 60);
    expect(idle.decisions[zeroAt - 1].reason).toBe("idle");
    // Before zero, it rests at one replica.
    expect(idle.trace.slice(40, zeroAt - 1).every((r) => r === 1)).toBe(true);
    const kept = simulate(policy({ minReplicas: 1 }), (s) => (s <= 10 ? 4 : 0), 200);
    expect(kept.trace.at(-1)).toBe(1);
  });

  it("a Model that is starting is not idle, and one at zero is left to the router", () => {
    // Pods loading for 90 s with no load: the clock starts when they are ready.
    const loading = simulate(policy(), () => 0, 120, 1, { starting: (s) => s <= 90 });
    expect(loading.trace.every((r) => r === 1)).toBe(true);
    // At zero: no decision moves it, and what it saw before is forgotten.
    const history = new LoadHistory(0);
    for (let s = 1; s <= 5; s++) decide(history, policy(), 2, { at: s * 1000, load: 12, starting: false });
    expect(decide(history, policy(), 0, { at: 6000, load: 0, starting: false })).toMatchObject({ replicas: 0, reason: "steady" });
    expect(history.samples).toEqual([]);
    expect(decide(new LoadHistory(0), policy({ minReplicas: 2 }), 0, { at: 1000, load: 0, starting: false })).toMatchObject({ replicas: 2, reason: "bounds" });
  });

  it("does not scale down while pods start, and an unknown load (no pod ready) is neither a sample nor idle", () => {
    // Two replicas asked for, one ready and idle, the other still loading: both stay.
    const starting = simulate(policy({ scaleDownDelayMs: 0 }), () => 0, 50, 2, { starting: () => true });
    expect(starting.trace.every((r) => r === 2)).toBe(true);
    const history = new LoadHistory(0);
    for (let s = 1; s <= 100; s++) expect(decide(history, policy({ scaleToZeroMs: 5000 }), 1, { at: s * 1000, load: undefined, starting: true }).replicas).toBe(1);
    expect(history.samples).toEqual([]);
  });

  it("doubles when every pod is full (the routers hold the rest of the demand), but not while pods start", () => {
    // Two full pods carrying 10 at a target of 4: the load asks for 3, saturation for 4.
    const history = new LoadHistory(0);
    expect(decide(history, policy(), 2, { at: 1000, load: 10, starting: false, saturated: true })).toMatchObject({ replicas: 4, reason: "saturated" });
    // Still starting: what the load says, no doubling on top.
    expect(decide(new LoadHistory(0), policy(), 2, { at: 1000, load: 10, starting: true, saturated: true })).toMatchObject({ replicas: 3, reason: "load" });
    expect(decide(new LoadHistory(0), policy({ maxReplicas: 3 }), 2, { at: 1000, load: 10, starting: false, saturated: true }).replicas).toBe(3);
    expect(describeDecision(2, { replicas: 4, averageLoad: 10, recommended: 4, reason: "saturated" }, policy())).toMatch(/^scaled up from 2 to 4 replicas: every pod is full/);
  });

  it("a fresh history (a new leader) does not scale down until it has covered the delay", () => {
    const history = new LoadHistory(100_000);
    const first = decide(history, policy(), 4, { at: 101_000, load: 0, starting: false });
    expect(first.replicas).toBe(4);
    let replicas = 4;
    for (let s = 2; s <= 40; s++) replicas = decide(history, policy(), replicas, { at: 100_000 + s * 1000, load: 0, starting: false }).replicas;
    expect(replicas).toBe(1);
  });

  it("out of bounds is corrected at once", () => {
    expect(decide(new LoadHistory(0), policy({ maxReplicas: 3 }), 7, { at: 1000, load: 0, starting: false })).toMatchObject({ replicas: 3, reason: "bounds" });
    expect(decide(new LoadHistory(0), policy({ minReplicas: 2 }), 1, { at: 1000, load: 0, starting: false })).toMatchObject({ replicas: 2, reason: "bounds" });
  });

  it("a load of exactly N targets asks for N replicas, not N + 1", () => {
    expect(decide(new LoadHistory(0), policy({ targetLoad: 0.1 }), 1, { at: 1000, load: 0.3, starting: false }).recommended).toBe(3);
    expect(decide(new LoadHistory(0), policy(), 1, { at: 1000, load: 8, starting: false }).recommended).toBe(2);
  });

  it("the event says what changed and why", () => {
    const p = policy();
    expect(describeDecision(1, { replicas: 3, averageLoad: 10.456, recommended: 3, reason: "load" }, p)).toBe(
      "scaled up from 1 to 3 replicas: load 10.46 (busy sequences plus queued requests, average over 10 s) for a target of 4 per replica",
    );
    expect(describeDecision(3, { replicas: 1, averageLoad: 2, recommended: 1, reason: "load" }, p)).toMatch(/^scaled down from 3 to 1 replicas: .* lower for 30 s$/);
    expect(describeDecision(1, { replicas: 0, averageLoad: 0, recommended: 0, reason: "idle" }, p)).toMatch(/^scaled to zero from 1: no request running or queued for 60 s/);
  });
});
