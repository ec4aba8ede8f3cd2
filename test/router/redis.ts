import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { canConnect, freePort } from "../helpers/net.js";
import { waitFor } from "../helpers/wait.js";

/** True when `redis-server` is on the PATH (CI installs it; see .ci/run). */
export const HAS_REDIS = spawnSync("redis-server", ["--version"], { stdio: "ignore" }).status === 0;
export const NO_REDIS_MESSAGE = "redis-server is not installed (apt-get install -y redis-server): skipping the Redis rate-limit tests";

/** A redis-server of the test's own, on a random loopback port, that the test can stop and start again. */
export class TestRedis {
  private process: ChildProcess | undefined;

  private constructor(readonly port: number) {}

  static async start(): Promise<TestRedis> {
    const redis = new TestRedis(await freePort());
    await redis.resume();
    return redis;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts (again) on the same port, with no persistence: it comes back empty. */
  async resume(): Promise<void> {
    const child = spawn("redis-server", ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
    this.process = child;
    const exited = new AbortController();
    const onExit = (code: number | null) => exited.abort(new Error(`redis-server exited with ${code}`));
    child.once("exit", onExit);
    try {
      await waitFor(() => canConnect(this.port), { message: "timed out waiting for redis-server to start", timeoutMs: 10_000, intervalMs: 20, signal: exited.signal });
    } finally {
      child.off("exit", onExit);
    }
  }

  /** Hangs it (SIGSTOP): connections stay open, nothing is answered. */
  pause(): void {
    this.process?.kill("SIGSTOP");
  }

  /** Lets a paused server go on (SIGCONT); it then answers what was sent meanwhile. */
  unpause(): void {
    this.process?.kill("SIGCONT");
  }

  async stop(): Promise<void> {
    const child = this.process;
    this.process = undefined;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
  }
}
