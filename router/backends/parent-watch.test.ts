import { spawn } from "node:child_process";
import { PassThrough } from "node:stream";
import { afterEach, describe, expect, it, vi } from "vitest";
import { waitFor } from "../../test/helpers/wait.js";
import { PARENT_WATCH_IMPORT } from "./local-model.js";
import { PARENT_WATCH_ENV, SELF_STOP_GRACE_MS, watchParent, type WatchedProcess } from "./parent-watch.js";

/** A process whose parent is 100, with a stdin the test ends, recording what the watch does. */
function fakeProcess(env: NodeJS.ProcessEnv) {
  const stdin = Object.assign(new PassThrough(), { unref: vi.fn() });
  const calls: string[] = [];
  const proc: WatchedProcess = {
    env,
    pid: 200,
    ppid: 100,
    stdin,
    kill: (pid, signal) => calls.push(`kill ${pid} ${signal}`),
    exit: (code) => calls.push(`exit ${code}`),
  };
  return { proc, stdin, calls };
}

afterEach(() => {
  vi.useRealTimers();
});

describe("watchParent", () => {
  it("stops the process once when the parent's pipe ends, and exits after the grace period", () => {
    vi.useFakeTimers();
    const { proc, stdin, calls } = fakeProcess({ [PARENT_WATCH_ENV]: "100", OTHER: "kept" });
    expect(watchParent(proc)).toBe(true);
    // Its own children never watch, and the rest of the environment is untouched.
    expect(proc.env).toEqual({ OTHER: "kept" });
    expect(stdin.unref).toHaveBeenCalled();
    expect(calls).toEqual([]);
    stdin.emit("end");
    stdin.emit("close");
    expect(calls).toEqual(["kill 200 SIGTERM"]);
    vi.advanceTimersByTime(SELF_STOP_GRACE_MS - 1);
    expect(calls).toEqual(["kill 200 SIGTERM"]);
    vi.advanceTimersByTime(1);
    expect(calls).toEqual(["kill 200 SIGTERM", "exit 1"]);
  });

  it("a process the runtime forked (its parent is not the router) does not watch", () => {
    const { proc, stdin, calls } = fakeProcess({ [PARENT_WATCH_ENV]: "42" });
    expect(watchParent(proc)).toBe(false);
    expect(proc.env).toEqual({});
    stdin.emit("end");
    expect(calls).toEqual([]);
    expect(stdin.unref).not.toHaveBeenCalled();
  });

  it("does nothing without the variable", () => {
    const { proc, calls } = fakeProcess({});
    expect(watchParent(proc)).toBe(false);
    expect(calls).toEqual([]);
  });

  it("the preload the local backend gives its children stops a real child when its stdin from the parent closes", async () => {
    const script = "process.on('SIGTERM', () => { console.log('SIGTERM'); process.exit(0); }); setInterval(() => {}, 1000); console.log(process.env.CORRAL_PARENT_WATCH ?? 'removed');";
    const child = spawn(process.execPath, ["--import", PARENT_WATCH_IMPORT, "-e", script], {
      env: { ...process.env, [PARENT_WATCH_ENV]: String(process.pid) },
      stdio: ["pipe", "pipe", "inherit"],
    });
    let output = "";
    child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    await waitFor(() => output.includes("removed"), { message: "the child to start" });
    child.stdin!.end();
    expect(await exited).toBe(0);
    expect(output).toBe("removed\nSIGTERM\n");
  });
});
