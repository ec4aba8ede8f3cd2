/**
 * A per-key work queue (client-go's workqueue, in small):
 *
 * - a key added while queued is not queued twice; a key added while being processed runs once
 *   more after the current run (never two runs of one key at a time);
 * - at most `workers` keys are processed at once;
 * - a failed run is retried after an exponential per-key backoff (reset by a success);
 * - `addAfter` runs a key later ("waiting" is a requeue, not an error);
 * - keys wait while the queue is paused (a standby replica) and run once it is started.
 */

export interface ProcessResult {
  /** Run the key again after this long (the object is waiting on something). */
  requeueAfterMs?: number;
}

export interface WorkQueueOptions {
  workers: number;
  process: (key: string) => Promise<ProcessResult | void>;
  /** First retry delay after a failure, doubled per consecutive failure up to maxRetryMs. */
  initialRetryMs?: number;
  maxRetryMs?: number;
  /** Called after every run (for logs and metrics). */
  onResult?: (key: string, outcome: { error?: unknown; retryInMs?: number; requeueAfterMs?: number; seconds: number }) => void;
}

export class WorkQueue {
  private readonly fifo: string[] = [];
  private readonly dirty = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly delayed = new Map<string, { timer: NodeJS.Timeout; at: number }>();
  private readonly failures = new Map<string, number>();
  private running = false;
  private shutDown = false;
  private active = 0;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly options: WorkQueueOptions) {}

  /** Keys waiting to run (not counting delayed ones). */
  get depth(): number {
    return this.fifo.length;
  }

  get inFlight(): number {
    return this.active;
  }

  get isRunning(): boolean {
    return this.running;
  }

  add(key: string): void {
    if (this.shutDown || this.dirty.has(key)) return;
    this.dirty.add(key);
    if (this.processing.has(key)) return;
    this.fifo.push(key);
    this.pump();
  }

  /** Adds the key after `ms`; an earlier pending time for the same key wins. */
  addAfter(key: string, ms: number): void {
    if (this.shutDown) return;
    if (ms <= 0) return this.add(key);
    const at = Date.now() + ms;
    const existing = this.delayed.get(key);
    if (existing && existing.at <= at) return;
    if (existing) clearTimeout(existing.timer);
    const timer = setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, ms);
    timer.unref?.();
    this.delayed.set(key, { timer, at });
  }

  /** Retries the key after its backoff: initial * 2^failures, at most maxRetryMs. */
  addRateLimited(key: string): number {
    const failures = this.failures.get(key) ?? 0;
    this.failures.set(key, failures + 1);
    const delay = Math.min(this.options.maxRetryMs ?? 300_000, (this.options.initialRetryMs ?? 100) * 2 ** failures);
    this.addAfter(key, delay);
    return delay;
  }

  forget(key: string): void {
    this.failures.delete(key);
  }

  start(): void {
    if (this.shutDown) return;
    this.running = true;
    this.pump();
  }

  /** Stops taking keys; resolves when the runs in progress have finished. Queued keys stay. */
  async pause(): Promise<void> {
    this.running = false;
    await this.idle();
  }

  /** Stops for good: drops what is queued and waits up to `timeoutMs` for runs in progress. */
  async shutdown(timeoutMs: number): Promise<void> {
    this.shutDown = true;
    this.running = false;
    for (const { timer } of this.delayed.values()) clearTimeout(timer);
    this.delayed.clear();
    this.fifo.length = 0;
    this.dirty.clear();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.idle(), new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
    clearTimeout(timer);
  }

  /** Resolves when nothing is being processed. */
  idle(): Promise<void> {
    if (this.active === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private pump(): void {
    while (this.running && this.active < this.options.workers && this.fifo.length > 0) {
      const key = this.fifo.shift()!;
      this.dirty.delete(key);
      this.processing.add(key);
      this.active++;
      void this.run(key);
    }
  }

  private async run(key: string): Promise<void> {
    const started = performance.now();
    try {
      const result = await this.options.process(key);
      this.forget(key);
      const requeueAfterMs = result?.requeueAfterMs;
      if (requeueAfterMs !== undefined) this.addAfter(key, requeueAfterMs);
      this.options.onResult?.(key, { requeueAfterMs, seconds: (performance.now() - started) / 1000 });
    } catch (error) {
      const retryInMs = this.shutDown ? undefined : this.addRateLimited(key);
      this.options.onResult?.(key, { error, retryInMs, seconds: (performance.now() - started) / 1000 });
    } finally {
      this.processing.delete(key);
      this.active--;
      // Added again while it ran: it goes to the back of the line.
      if (this.dirty.has(key)) this.fifo.push(key);
      if (this.active === 0) for (const wake of this.idleWaiters.splice(0)) wake();
      this.pump();
    }
  }
}
