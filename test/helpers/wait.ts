// The one poller for tests and benchmarks: polls a condition with a deadline (never fixed sleeps).

export interface WaitOptions {
  /** How long to keep polling; 5000 ms unless given. */
  timeoutMs?: number;
  /** The pause between polls; 25 ms unless given. */
  intervalMs?: number;
  /** What was awaited, for the error on timeout ("timed out waiting for the pod Ready"). */
  message?: string;
  /** Stops polling at once, throwing the signal's reason (for a condition that can no longer come true). */
  signal?: AbortSignal;
}

/**
 * Polls `fn` until it returns a truthy value (or a promise of one) and returns it. An error `fn`
 * throws counts as "not yet"; after `timeoutMs` it throws `message` with the last such error.
 */
export async function waitFor<T>(fn: () => T | Promise<T>, opts: WaitOptions = {}): Promise<NonNullable<T>> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    opts.signal?.throwIfAborted();
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
      last = undefined;
    } catch (e) {
      last = e;
    }
    opts.signal?.throwIfAborted();
    if (Date.now() > deadline) {
      const why = last === undefined ? "" : `: ${last instanceof Error ? last.message : String(last)}`;
      throw new Error(`${opts.message ?? "waitFor: condition not met"} within ${timeoutMs} ms${why}`);
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 25));
  }
}
