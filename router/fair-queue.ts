/**
 * Weighted fair queueing of waiting requests among client keys: one FIFO per key, served by
 * start-time fair queueing (SFQ). Each key has a virtual time; serving one of its requests
 * advances it by 1/weight, and the key with the lowest virtual time goes next (ties: the key
 * that became active first). A key that becomes active starts at max(its own time, the queue's
 * virtual time, which is the time of the request served last), so a key that was idle has banked
 * no credit, and a light key arriving behind a busy one waits about one turn, not the busy key's
 * whole backlog. Pure: no timers, no clock; the balancer decides when a slot is free.
 */

/** Who a request belongs to, as the queue sees it. */
export interface QueueKey {
  /** The client key's name (or `ip:<addr>` without auth). */
  name: string;
  /** Its share of service relative to other keys (> 0): weight 3 is served 3 times as often as weight 1. */
  weight: number;
  /** The most requests of this key that may wait; one more is refused. */
  maxQueued: number;
}

interface KeyState<T> {
  readonly name: string;
  weight: number;
  /** The virtual time when the key became active (or its weight last changed)... */
  start: number;
  /** ...and the requests served since: its time is start + served / weight (computed alike everywhere, so orders agree). */
  served: number;
  /** Its waiting requests, oldest first (a Set: removal by abort is O(1) and keeps the order). */
  readonly items: Set<T>;
}

/** Idle keys whose time is ahead of the queue's are remembered; once it catches up they are dropped. */
const IDLE_SWEEP_MIN = 64;

export class FairQueue<T> {
  /** Keys with waiting requests, in the order they became active (the tie-break). */
  private readonly active = new Map<string, KeyState<T>>();
  /** Keys without waiting requests whose time may still be ahead of the queue's: name -> time. */
  private readonly idle = new Map<string, number>();
  private readonly keyOf = new Map<T, KeyState<T>>();
  private virtual = 0;
  private sweepAt = IDLE_SWEEP_MIN;

  /** Requests waiting, all keys together. */
  get size(): number {
    return this.keyOf.size;
  }

  /** The queue's virtual time: the start time of the request served last. */
  get virtualTime(): number {
    return this.virtual;
  }

  /** Requests of one key waiting. */
  sizeOf(name: string): number {
    return this.active.get(name)?.items.size ?? 0;
  }

  /** The weights of the keys that have requests waiting, summed (their shares of the next turns). */
  activeWeight(): number {
    let sum = 0;
    for (const state of this.active.values()) sum += state.weight;
    return sum;
  }

  /** Queues `item` behind its key's others; false (and nothing queued) when the key has `maxQueued` waiting already. */
  push(key: QueueKey, item: T): boolean {
    if (this.keyOf.has(item)) throw new Error("FairQueue.push: item is queued already");
    const weight = key.weight > 0 && Number.isFinite(key.weight) ? key.weight : 1;
    let state = this.active.get(key.name);
    if ((state?.items.size ?? 0) >= key.maxQueued) return false;
    if (!state) {
      // Idle keys bank no credit: never behind the queue's time.
      const start = Math.max(this.idle.get(key.name) ?? this.virtual, this.virtual);
      this.idle.delete(key.name);
      state = { name: key.name, weight, start, served: 0, items: new Set() };
      this.active.set(key.name, state);
    } else if (state.weight !== weight) {
      // A changed weight (the keys file was edited) applies from the key's next turn on.
      state.start = timeOf(state);
      state.served = 0;
      state.weight = weight;
    }
    state.items.add(item);
    this.keyOf.set(item, state);
    return true;
  }

  /** The next request to serve, taken out of the queue; undefined when none waits. */
  pop(): T | undefined {
    let next: KeyState<T> | undefined;
    let nextTime = Infinity;
    for (const state of this.active.values()) {
      const time = timeOf(state);
      if (time < nextTime) {
        next = state;
        nextTime = time;
      }
    }
    if (!next) return undefined;
    const item = next.items.values().next().value as T;
    this.virtual = nextTime;
    next.served++;
    this.take(next, item);
    this.sweepIdle();
    return item;
  }

  /** Takes a request out (its client went away); false when it is not queued. Its key's time is untouched: it was not served. */
  remove(item: T): boolean {
    const state = this.keyOf.get(item);
    if (!state) return false;
    this.take(state, item);
    return true;
  }

  /**
   * The waiting requests in the order they would be served if nobody else came: the same
   * virtual times and tie-break as `pop`. O(n log n); for telling clients their position.
   */
  order(): T[] {
    const slots: { item: T; time: number; rank: number; index: number }[] = [];
    let rank = 0;
    for (const state of this.active.values()) {
      let index = 0;
      for (const item of state.items) {
        slots.push({ item, time: timeAfter(state, index), rank, index });
        index++;
      }
      rank++;
    }
    slots.sort((a, b) => a.time - b.time || a.rank - b.rank || a.index - b.index);
    return slots.map((slot) => slot.item);
  }

  private take(state: KeyState<T>, item: T): void {
    state.items.delete(item);
    this.keyOf.delete(item);
    if (state.items.size > 0) return;
    this.active.delete(state.name);
    const time = timeOf(state);
    if (time > this.virtual) this.idle.set(state.name, time);
  }

  /** Drops idle keys the queue's time has caught up with (they would start at its time anyway); amortized. */
  private sweepIdle(): void {
    if (this.idle.size < this.sweepAt) return;
    for (const [name, time] of this.idle) if (time <= this.virtual) this.idle.delete(name);
    this.sweepAt = Math.max(IDLE_SWEEP_MIN, 2 * this.idle.size);
  }
}

/** A key's virtual time: the start time of its next request. */
function timeOf(state: KeyState<unknown>): number {
  return timeAfter(state, 0);
}

/** The start time of the key's request `index` places behind its next one. */
function timeAfter(state: KeyState<unknown>, index: number): number {
  return state.start + (state.served + index) / state.weight;
}
