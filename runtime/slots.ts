import { serviceUnavailable, tooManyRequests } from "../common/errors.js";

interface Waiter<T> {
  resolve: (slot: T) => void;
  reject: (error: unknown) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

/**
 * A fixed set of slots (one context sequence each) and a bounded FIFO queue of requests waiting
 * for one. A full queue answers 429 at once, so memory never grows with waiting clients; a waiter
 * whose client goes away leaves the queue at once.
 */
export class SlotPool<T> {
  private readonly free: T[];
  private readonly waiters: Waiter<T>[] = [];
  private closedReason: string | undefined;

  constructor(
    slots: readonly T[],
    private readonly maxQueue: number,
  ) {
    this.free = [...slots];
    this.total = slots.length;
  }

  readonly total: number;

  get busy(): number {
    return this.total - this.free.length;
  }

  get queued(): number {
    return this.waiters.length;
  }

  /** Whether `count` more requests can be admitted (run now or wait) without overflowing the queue. */
  canAdmit(count: number): boolean {
    const waiting = Math.max(0, count - this.free.length);
    return this.waiters.length + waiting <= this.maxQueue;
  }

  /**
   * A free slot now, or a place in the queue. `prefer` scores free slots (highest wins; the most
   * recently freed on a tie); a queued request takes whichever slot frees first.
   */
  acquire(signal?: AbortSignal, prefer?: (slot: T) => number): Promise<T> {
    if (this.closedReason !== undefined) return Promise.reject(serviceUnavailable(this.closedReason, 1));
    if (signal?.aborted) return Promise.reject(signal.reason);
    const slot = this.takeFree(prefer);
    if (slot !== undefined) return Promise.resolve(slot);
    if (this.waiters.length >= this.maxQueue) {
      return Promise.reject(
        tooManyRequests(`all ${this.total} sequences are busy and ${this.waiters.length} requests are already waiting; retry shortly`, 1),
      );
    }
    return this.enqueue(signal);
  }

  /** Like acquire, but admission was already checked for a group (a batch), so it always queues. */
  acquireAdmitted(signal?: AbortSignal, prefer?: (slot: T) => number): Promise<T> {
    if (this.closedReason !== undefined) return Promise.reject(serviceUnavailable(this.closedReason, 1));
    const slot = this.takeFree(prefer);
    if (slot !== undefined) return Promise.resolve(slot);
    return this.enqueue(signal);
  }

  release(slot: T): void {
    const next = this.waiters.shift();
    if (next) {
      if (next.onAbort) next.signal?.removeEventListener("abort", next.onAbort);
      next.resolve(slot);
    } else {
      this.free.push(slot);
    }
  }

  /** Rejects everyone waiting and every later acquire (used when draining). */
  close(reason: string): void {
    this.closedReason = reason;
    for (const waiter of this.waiters.splice(0)) {
      if (waiter.onAbort) waiter.signal?.removeEventListener("abort", waiter.onAbort);
      waiter.reject(serviceUnavailable(reason, 1));
    }
  }

  private takeFree(prefer?: (slot: T) => number): T | undefined {
    if (prefer === undefined || this.free.length < 2) return this.free.pop();
    let best = this.free.length - 1;
    let bestScore = prefer(this.free[best]!);
    for (let i = best - 1; i >= 0; i--) {
      const score = prefer(this.free[i]!);
      if (score > bestScore) {
        best = i;
        bestScore = score;
      }
    }
    return this.free.splice(best, 1)[0];
  }

  private enqueue(signal?: AbortSignal): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const waiter: Waiter<T> = { resolve, reject, signal };
      if (signal) {
        waiter.onAbort = () => {
          const index = this.waiters.indexOf(waiter);
          if (index >= 0) this.waiters.splice(index, 1);
          reject(signal.reason);
        };
        signal.addEventListener("abort", waiter.onAbort, { once: true });
      }
      this.waiters.push(waiter);
    });
  }
}
