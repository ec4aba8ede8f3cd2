import { describe, expect, it } from "vitest";
import { StepCost } from "./step-cost.js";

describe("StepCost", () => {
  it("knows nothing until it has seen enough steps of different sizes", () => {
    const cost = new StepCost();
    expect(cost.promptBudget(4)).toBe(Number.POSITIVE_INFINITY);
    for (let i = 0; i < 20; i++) cost.observe(8, 0.05);
    // Twenty steps of one size give no cost per token.
    expect(cost.estimate()).toBeUndefined();
    expect(cost.promptBudget(4)).toBe(Number.POSITIVE_INFINITY);
  });

  it("fits the fixed and per-token parts of a step", () => {
    const cost = new StepCost();
    for (let i = 0; i < 40; i++) {
      const tokens = 1 + (i % 8) * 3;
      cost.observe(tokens, 0.006 + tokens * 0.005);
    }
    const estimate = cost.estimate()!;
    expect(estimate.fixedSeconds).toBeCloseTo(0.006, 6);
    expect(estimate.secondsPerToken).toBeCloseTo(0.005, 6);
    // Prompt tokens costing at most the rest of a step with 7 generating sequences:
    // 7 tokens plus the fixed part (1.2 tokens' worth).
    expect(cost.promptBudget(7)).toBeCloseTo(8.2, 4);
  });

  it("admits any prompt where tokens are free next to the fixed part", () => {
    const cost = new StepCost();
    for (let i = 0; i < 40; i++) cost.observe(1 + (i % 16) * 10, 0.02);
    expect(cost.estimate()?.secondsPerToken).toBe(0);
    expect(cost.promptBudget(0)).toBe(Number.POSITIVE_INFINITY);
  });

  it("follows a change in cost and ignores impossible samples", () => {
    const cost = new StepCost();
    for (let i = 0; i < 100; i++) cost.observe(1 + (i % 8), 0.001 * (1 + (i % 8)));
    for (let i = 0; i < 400; i++) cost.observe(1 + (i % 8), 0.01 + 0.0001 * (1 + (i % 8)));
    cost.observe(4, Number.NaN);
    cost.observe(0, 1);
    cost.observe(4, -1);
    const estimate = cost.estimate()!;
    expect(estimate.fixedSeconds).toBeCloseTo(0.01, 4);
    expect(estimate.secondsPerToken).toBeCloseTo(0.0001, 5);
  });
});
