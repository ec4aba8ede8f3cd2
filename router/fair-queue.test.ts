import { describe, expect, it } from "vitest";
import { FairQueue, type QueueKey } from "./fair-queue.js";

const key = (name: string, weight = 1, maxQueued = 1000): QueueKey => ({ name, weight, maxQueued });

/** Queues `count` items `<name>-<i>` of a key. */
function fill(queue: FairQueue<string>, k: QueueKey, count: number): void {
  for (let i = 0; i < count; i++) expect(queue.push(k, `${k.name}-${i}`)).toBe(true);
}

/** Pops `count` items and counts them by key (the part before the dash). */
function serve(queue: FairQueue<string>, count: number): Map<string, number> {
  const served = new Map<string, number>();
  for (let i = 0; i < count; i++) {
    const item = queue.pop()!;
    const name = item.slice(0, item.lastIndexOf("-"));
    served.set(name, (served.get(name) ?? 0) + 1);
  }
  return served;
}

describe("FairQueue", () => {
  it("serves one key's requests in arrival order", () => {
    const queue = new FairQueue<string>();
    fill(queue, key("a"), 3);
    expect([queue.pop(), queue.pop(), queue.pop(), queue.pop()]).toEqual(["a-0", "a-1", "a-2", undefined]);
    expect(queue.size).toBe(0);
  });

  it("gives two backlogged keys of weights 1 and 1 equal service, turn by turn", () => {
    const queue = new FairQueue<string>();
    fill(queue, key("a"), 50);
    fill(queue, key("b"), 50);
    expect(Array.from({ length: 6 }, () => queue.pop())).toEqual(["a-0", "b-0", "a-1", "b-1", "a-2", "b-2"]);
    expect(serve(queue, 40)).toEqual(new Map([["a", 20], ["b", 20]]));
  });

  it("gives keys of weights 1 and 3 service 1:3 while both are backlogged", () => {
    const queue = new FairQueue<string>();
    fill(queue, key("light", 1), 100);
    fill(queue, key("heavy", 3), 300);
    expect(serve(queue, 200)).toEqual(new Map([["light", 50], ["heavy", 150]]));
  });

  it("serves a light key within a turn or two while a heavy key has 10 times its requests waiting", () => {
    const queue = new FairQueue<string>();
    const heavy = key("heavy");
    const light = key("light");
    fill(queue, heavy, 100);
    // The light key sends one request every 11 services; the heavy one keeps 100 waiting.
    let next = 0;
    const waits: number[] = [];
    for (let round = 0; round < 50; round++) {
      const mine = `light-${round}`;
      queue.push(light, mine);
      let turns = 0;
      for (;;) {
        turns++;
        const item = queue.pop()!;
        if (item === mine) break;
        queue.push(heavy, `heavy-x${next++}`);
      }
      waits.push(turns);
      for (let i = 0; i < 10; i++) {
        queue.pop();
        queue.push(heavy, `heavy-x${next++}`);
      }
    }
    // Start-time fair queueing: a key that arrives starts at the virtual time of the last request
    // served, at or below the busy key's next one, so it goes next, or after one heavy request on a
    // tie (the first round, before anything was served). Without fair queueing it would wait 100.
    expect(Math.max(...waits)).toBeLessThanOrEqual(2);
    expect(waits.slice(1).every((turns) => turns === 1)).toBe(true);
  });

  it("refuses a key's request beyond its bound, and only that key's", () => {
    const queue = new FairQueue<string>();
    fill(queue, key("a", 1, 2), 2);
    expect(queue.push(key("a", 1, 2), "a-2")).toBe(false);
    expect(queue.push(key("b", 1, 2), "b-0")).toBe(true);
    expect(queue.sizeOf("a")).toBe(2);
    expect(queue.size).toBe(3);
    queue.pop();
    expect(queue.push(key("a", 1, 2), "a-2")).toBe(true);
    expect(queue.push(key("c", 1, 0), "c-0")).toBe(false);
  });

  it("takes a removed request out at once; its key keeps its place for the others", () => {
    const queue = new FairQueue<string>();
    fill(queue, key("a"), 2);
    fill(queue, key("b"), 2);
    expect(queue.remove("a-0")).toBe(true);
    expect(queue.remove("a-0")).toBe(false);
    expect(queue.size).toBe(3);
    expect(queue.order()).toEqual(["a-1", "b-0", "b-1"]);
    expect([queue.pop(), queue.pop(), queue.pop()]).toEqual(["a-1", "b-0", "b-1"]);
    // A key whose every request left is inactive: nothing lingers.
    queue.push(key("c"), "c-0");
    queue.remove("c-0");
    expect(queue.size).toBe(0);
    expect(queue.sizeOf("c")).toBe(0);
    expect(queue.pop()).toBeUndefined();
  });

  it("lets an idle key bank no credit: after a long idle time it starts at the queue's time", () => {
    const queue = new FairQueue<string>();
    fill(queue, key("a"), 1);
    queue.pop();
    // b serves alone for a long time, then a comes back: they alternate, a does not get 100 turns in a row.
    fill(queue, key("b"), 200);
    serve(queue, 100);
    fill(queue, key("a"), 10);
    const next = Array.from({ length: 6 }, () => queue.pop()!.split("-")[0]);
    expect(next.filter((name) => name === "a").length).toBe(3);
  });

  it("tells the order pop will serve in", () => {
    const queue = new FairQueue<string>();
    fill(queue, key("a", 1), 3);
    fill(queue, key("b", 2), 4);
    fill(queue, key("c", 1 / 3), 2);
    const predicted = queue.order();
    const actual = Array.from({ length: queue.size }, () => queue.pop());
    expect(actual).toEqual(predicted);
  });
});
