// A fake kube-apiserver for tests: see README.md in this folder.

export { startFakeKube } from "./server.js";
export type { DropWatchesOptions, Fault, FakeKube, FakeKubeOptions, RequestLogEntry, Verb } from "./server.js";
export { ApiError } from "./errors.js";
export type { Status, StatusCause, StatusDetails } from "./errors.js";
export type { Obj } from "./store.js";
export type { ApiServer } from "./apiserver.js";

/**
 * Polls `fn` until it returns a truthy value (or a promise of one) and returns it; throws after
 * `timeoutMs` with the last error or `message`.
 */
export async function waitFor<T>(
  fn: () => T | Promise<T>,
  opts: { timeoutMs?: number; intervalMs?: number; message?: string } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + (opts.timeoutMs ?? 5000);
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
      last = undefined;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      const why = last instanceof Error ? `: ${last.message}` : "";
      throw new Error(`${opts.message ?? "waitFor: condition not met"} within ${opts.timeoutMs ?? 5000} ms${why}`);
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 10));
  }
}
