import { describe, expect, it } from "vitest";
import { HttpError } from "../common/errors.js";
import { SlotPool } from "./slots.js";

describe("SlotPool", () => {
  it("hands out free slots, then queues in FIFO order", async () => {
    const pool = new SlotPool(["a", "b"], 2);
    const first = await pool.acquire();
    const second = await pool.acquire();
    expect(pool.busy).toBe(2);
    const order: string[] = [];
    const third = pool.acquire().then((slot) => (order.push("third"), slot));
    const fourth = pool.acquire().then((slot) => (order.push("fourth"), slot));
    expect(pool.queued).toBe(2);
    pool.release(first);
    pool.release(second);
    expect(await third).toBe(first);
    expect(await fourth).toBe(second);
    expect(order).toEqual(["third", "fourth"]);
  });

  it("answers 429 with Retry-After when the queue is full", async () => {
    const pool = new SlotPool(["a"], 1);
    await pool.acquire();
    void pool.acquire();
    const error = await pool.acquire().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HttpError);
    expect((error as HttpError).statusCode).toBe(429);
    expect((error as HttpError).headers["retry-after"]).toBe("1");
  });

  it("drops a waiter whose client went away", async () => {
    const pool = new SlotPool(["a"], 4);
    const held = await pool.acquire();
    const controller = new AbortController();
    const waiting = pool.acquire(controller.signal);
    expect(pool.queued).toBe(1);
    controller.abort(new Error("gone"));
    await expect(waiting).rejects.toThrow("gone");
    expect(pool.queued).toBe(0);
    pool.release(held);
    expect(pool.busy).toBe(0);
  });

  it("admits a group only when the queue can hold what cannot run now", async () => {
    const pool = new SlotPool(["a", "b"], 2);
    expect(pool.canAdmit(4)).toBe(true);
    expect(pool.canAdmit(5)).toBe(false);
  });

  it("rejects waiters and new requests with 503 once closed", async () => {
    const pool = new SlotPool(["a"], 2);
    await pool.acquire();
    const waiting = pool.acquire();
    pool.close("shutting down");
    await expect(waiting).rejects.toMatchObject({ statusCode: 503 });
    await expect(pool.acquire()).rejects.toMatchObject({ statusCode: 503 });
  });
});
