/**
 * The parent watch: a runtime child started by the local backend stops itself when the router
 * dies, for any reason, SIGKILL included. Its stdin is a pipe from the router, so it ends when the
 * router dies; the child then stops itself (SIGTERM: the runtime drains, with no clients left that
 * is quick) and exits at the latest SELF_STOP_GRACE_MS later. No orphan runtimes, and nothing to
 * change in the runtime: `parent-watch-preload.ts` runs it in the child (`node --import <it>`).
 *
 * Processes the runtime forks itself inherit `--import` but not the pipe (node-llama-cpp tests its
 * binary in a child with stdin ignored): only the process whose parent is the router, as named by
 * PARENT_WATCH_ENV, watches; the variable is removed so that its own children never do.
 *
 * This module has no side effects, so that the router can import PARENT_WATCH_ENV from it.
 */

/** Names the router's pid in a runtime child's environment: "watch your stdin, I am your parent". */
export const PARENT_WATCH_ENV = "CORRAL_PARENT_WATCH";

/** How long the runtime may drain after the router died before it exits anyway (it has no clients left). */
export const SELF_STOP_GRACE_MS = 5_000;

/** The parts of `process` the watch uses (a fake one in tests). */
export interface WatchedProcess {
  readonly env: NodeJS.ProcessEnv;
  readonly pid: number;
  readonly ppid: number;
  readonly stdin: NodeJS.ReadableStream & { unref(): unknown };
  kill(pid: number, signal: NodeJS.Signals): unknown;
  exit(code: number): unknown;
}

/**
 * Starts watching stdin when PARENT_WATCH_ENV names this process's parent, and removes the
 * variable either way. Returns whether it watches.
 */
export function watchParent(proc: WatchedProcess = process): boolean {
  const parent = proc.env[PARENT_WATCH_ENV];
  delete proc.env[PARENT_WATCH_ENV];
  if (!parent || parent !== String(proc.ppid)) return false;
  let stopped = false;
  const stopSelf = () => {
    if (stopped) return;
    stopped = true;
    setTimeout(() => proc.exit(1), SELF_STOP_GRACE_MS).unref();
    proc.kill(proc.pid, "SIGTERM");
  };
  const stdin = proc.stdin;
  stdin.on("end", stopSelf);
  stdin.on("close", stopSelf);
  stdin.on("error", stopSelf);
  stdin.resume();
  // The watch alone must not keep the runtime alive.
  stdin.unref();
  return true;
}
