import { describe, expect, it } from "vitest";
import { WorkQueue } from "./queue.js";
import { waitFor } from "../test/helpers/wait.js";

const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

describe("WorkQueue", () => {
  it("dedupes a key added while queued", async () => {
    const runs: string[] = [];
    const queue = new WorkQueue({ workers: 1, process: async (key) => void runs.push(key) });
    queue.add("a");
    queue.add("a");
    queue.add("b");
    queue.add("a");
    queue.start();
    await waitFor(() => runs.length === 2, { message: "timed out waiting for both runs", timeoutMs: 2000, intervalMs: 2 });
    await tick(10);
    expect(runs).toEqual(["a", "b"]);
  });

  it("never runs one key twice at once, and runs it again when it was added meanwhile", async () => {
    let active = 0;
    let maxActive = 0;
    let runs = 0;
    let release!: () => void;
    const queue = new WorkQueue({
      workers: 4,
      process: async () => {
        active++;
        maxActive = Math.max(maxActive, active);
        runs++;
        if (runs === 1) await new Promise<void>((resolve) => (release = resolve));
        active--;
      },
    });
    queue.start();
    queue.add("a");
    await waitFor(() => runs === 1, { message: "timed out waiting for the first run", timeoutMs: 2000, intervalMs: 2 });
    queue.add("a");
    queue.add("a");
    await tick(10);
    expect(runs).toBe(1);
    release();
    await waitFor(() => runs === 2, { message: "timed out waiting for the second run", timeoutMs: 2000, intervalMs: 2 });
    await tick(10);
    expect(runs).toBe(2);
    expect(maxActive).toBe(1);
  });

  it("runs at most `workers` keys at once", async () => {
    let active = 0;
    let maxActive = 0;
    const queue = new WorkQueue({
      workers: 3,
      process: async () => {
        active++;
        maxActive = Math.max(maxActive, active);
        await tick(5);
        active--;
      },
    });
    for (let i = 0; i < 20; i++) queue.add(`k${i}`);
    queue.start();
    await tick(5);
    await queue.idle();
    await waitFor(() => queue.depth === 0 && queue.inFlight === 0, { message: "timed out waiting for the queue to be empty and idle", timeoutMs: 2000, intervalMs: 2 });
    expect(maxActive).toBe(3);
  });

  it("retries a failing key with a growing backoff, and a success resets it", async () => {
    const at: number[] = [];
    let fail = 3;
    const outcomes: (number | undefined)[] = [];
    const queue = new WorkQueue({
      workers: 1,
      initialRetryMs: 20,
      maxRetryMs: 1000,
      process: async () => {
        at.push(Date.now());
        if (fail-- > 0) throw new Error("boom", { cause: new Error("api down") });
      },
      onResult: (_key, outcome) => outcomes.push(outcome.retryInMs),
    });
    queue.start();
    queue.add("a");
    await waitFor(() => at.length === 4, { message: "timed out waiting for 4 runs", timeoutMs: 2000, intervalMs: 2 });
    expect(outcomes).toEqual([20, 40, 80, undefined]);
    expect(at[1]! - at[0]!).toBeGreaterThanOrEqual(18);
    expect(at[3]! - at[2]!).toBeGreaterThanOrEqual(75);
    expect(queue.addRateLimited("a")).toBe(20);
  });

  it("requeues after the delay a run asks for", async () => {
    const at: number[] = [];
    const queue = new WorkQueue({
      workers: 1,
      process: async () => {
        at.push(Date.now());
        return at.length < 2 ? { requeueAfterMs: 50 } : {};
      },
    });
    queue.start();
    queue.add("a");
    await waitFor(() => at.length === 2, { message: "timed out waiting for 2 runs", timeoutMs: 2000, intervalMs: 2 });
    expect(at[1]! - at[0]!).toBeGreaterThanOrEqual(45);
  });

  it("holds keys while paused and runs them when started", async () => {
    const runs: string[] = [];
    const queue = new WorkQueue({ workers: 2, process: async (key) => void runs.push(key) });
    queue.add("a");
    await tick(10);
    expect(runs).toEqual([]);
    queue.start();
    await waitFor(() => runs.length === 1, { message: "timed out waiting for the first run", timeoutMs: 2000, intervalMs: 2 });
    await queue.pause();
    queue.add("b");
    await tick(10);
    expect(runs).toEqual(["a"]);
    queue.start();
    await waitFor(() => runs.length === 2, { message: "timed out waiting for both runs", timeoutMs: 2000, intervalMs: 2 });
  });

  it("shutdown waits for runs in progress and drops the rest", async () => {
    let finished = 0;
    const queue = new WorkQueue({
      workers: 1,
      process: async () => {
        await tick(30);
        finished++;
      },
    });
    queue.start();
    queue.add("a");
    queue.add("b");
    await tick(5);
    await queue.shutdown(1000);
    expect(finished).toBe(1);
    queue.add("c");
    await tick(40);
    expect(finished).toBe(1);
  });
});
