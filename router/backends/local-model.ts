import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import net from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath, pathToFileURL } from "node:url";
import { samplingDefaultsJson } from "../../common/api.js";
import type { Logger } from "../../common/logger.js";
import { packagePath } from "../../common/package-root.js";
import { DEFAULT_PARALLEL, runtimeArgv } from "../../common/runtime-command.js";
import { withRuntimeProcessEnv } from "../../common/runtime-env.js";
import type { CatalogModel } from "../catalog.js";
import type { LocalBackendOptions, LocalTiming } from "./local.js";
import { endpointsOf, leave, messageOf, progressOf, publicState, runtimeOf, type LocalModelKind, type LocalModelState, type Runtime } from "./local-state.js";
import { PARENT_WATCH_ENV } from "./parent-watch.js";
import { ModelsBusyError, ModelStartError, downloadProgress, type Endpoint, type ModelStatus } from "./types.js";

// One model of the local backend (local.ts) and its `corral runtime` child: spawning it, probing
// it, restarting it after a crash, stopping it.

/**
 * The parent watch (parent-watch.ts), preloaded into every runtime child with `--import`: the
 * compiled module next to this one; from the TypeScript sources (tests), the one in dist/, which
 * the tests build first, as they do for the CLI the children run.
 */
function parentWatchImport(): string {
  const sibling = new URL("./parent-watch-preload.js", import.meta.url);
  if (existsSync(fileURLToPath(sibling))) return sibling.href;
  return pathToFileURL(packagePath("dist", "router", "backends", "parent-watch-preload.js")).href;
}
export const PARENT_WATCH_IMPORT = parentWatchImport();

/**
 * The router's own secrets, which a runtime child must not see (it has no use for them, and a
 * runtime's environment is easier to read than the router's: /proc, crash reports, tools it runs):
 * the API keys, the Redis URL (it may carry a password) and the Kubernetes credentials.
 */
const ROUTER_ONLY_ENV: readonly string[] = ["CORRAL_API_KEYS", "CORRAL_API_KEYS_FILE", "REDIS_URL", "KUBECONFIG"];

/** A runtime child's environment: the router's, without ROUTER_ONLY_ENV, with RUNTIME_PROCESS_ENV and the parent watch. */
function runtimeChildEnv(env: NodeJS.ProcessEnv, parentPid: number): NodeJS.ProcessEnv {
  const childEnv: NodeJS.ProcessEnv = { ...withRuntimeProcessEnv(env), [PARENT_WATCH_ENV]: String(parentPid) };
  for (const name of ROUTER_ONLY_ENV) delete childEnv[name];
  return childEnv;
}

/** A probe that takes longer than this counts as a miss: a healthy runtime answers at once. */
const PROBE_TIMEOUT_MS = 2000;
/** /readyz misses in a row that take a ready endpoint out of rotation (one can be a hiccup). */
const MISSES_BEFORE_UNREADY = 2;
/** A runtime that stays ready this long has recovered: the next crash restarts quickly again. */
const STABLE_AFTER_MS = 30_000;
/** pino's `error` level: a runtime's JSON log lines at or above it explain a failed start. */
const PINO_ERROR_LEVEL = 50;
/** The most of a plain stderr line kept as a failure reason (a stack trace is not a message). */
const MAX_STDERR_REASON_CHARS = 500;

/** A free loopback port: bind :0, read it, close (the runtime binds it right after). */
async function freePort(): Promise<number> {
  return await new Promise<number>((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

interface Waiter {
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** The runtime's `/info`, the fields used here. */
interface RuntimeInfo {
  state?: string;
  progress?: { bytes_done?: number; bytes_total?: number | null; load_fraction?: number | null } | null;
  size_bytes?: number | null;
}

/** Since the model was last started from scratch (not restarted): what decides restart or `failed`. */
interface Attempts {
  /** Runtimes in a row that exited before they were ready. */
  startFailures: number;
  /** Exits in a row (the backoff doubles with each); forgiven once a runtime stays ready. */
  crashes: number;
  /** Whether a runtime was ready. One that never was cannot load: `failed` at once, no restarts. */
  everReady: boolean;
}

/**
 * One catalogued model and the runtime child that serves it. Its state (local-state.ts) changes
 * only through `enter()`, which clears the timers of the state it leaves.
 */
export class LocalModel {
  lastUsed = 0;
  private state: LocalModelState = { kind: "idle" };
  private attempts: Attempts = { startFailures: 0, crashes: 0, everReady: false };
  /** Numbers the endpoints, so that a restarted runtime's endpoint has a new id. */
  private generation = 0;
  private readonly waiters = new Set<Waiter>();
  private readonly log: Logger;

  constructor(
    readonly spec: CatalogModel,
    private readonly options: LocalBackendOptions,
    private readonly timing: LocalTiming,
    private readonly beforeStart: (model: LocalModel) => Promise<void>,
  ) {
    this.log = options.logger.child({ model: spec.id });
  }

  get kind(): LocalModelKind {
    return this.state.kind;
  }

  /** A runtime runs, is coming, or is stopping (it takes a place under --max-models). */
  get running(): boolean {
    return this.state.kind !== "idle" && this.state.kind !== "failed";
  }

  readyEndpoints(): readonly Endpoint[] {
    return endpointsOf(this.state);
  }

  get pid(): number | undefined {
    return runtimeOf(this.state)?.child.pid;
  }

  /** Requests wait for it, or the router has requests in flight to its runtime. */
  busy(inFlight: (endpoint: Endpoint) => number): boolean {
    const runtime = runtimeOf(this.state);
    return this.waiters.size > 0 || (runtime !== undefined && inFlight(runtime.endpoint) > 0);
  }

  status(): ModelStatus {
    const state = this.state;
    return { model_id: this.spec.id, state: publicState(state), progress: progressOf(state), message: messageOf(state), endpoints: endpointsOf(state) };
  }

  /** Starts the runtime unless one runs or is coming back (a `failed` model is started again). */
  ensureStarted(): void {
    const state = this.state;
    if (state.kind === "stopping") state.startAfter = true;
    if (state.kind !== "idle" && state.kind !== "failed") return;
    this.attempts = { startFailures: 0, crashes: 0, everReady: false };
    void this.spawnRuntime("starting", null);
  }

  waitReady(signal: AbortSignal): Promise<void> {
    const state = this.state;
    if (state.kind === "ready") return Promise.resolve();
    if (state.kind === "failed") return Promise.reject(new ModelStartError(this.spec.id, state.message));
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        this.waiters.delete(waiter);
        reject(signal.reason);
      };
      const waiter: Waiter = {
        resolve: () => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        },
        reject: (error) => {
          signal.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      this.waiters.add(waiter);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Stops the runtime: SIGTERM (it drains), SIGKILL after the bound. Resolves when it has exited. */
  async stop(reason: string): Promise<void> {
    this.rejectWaiters(new ModelStartError(this.spec.id, `model ${this.spec.id} was ${reason}`));
    const state = this.state;
    if (state.kind === "stopping") {
      // Already stopping: wait for the same exit (a second SIGTERM would cut the runtime's drain short).
      state.startAfter = false;
      return await state.runtime.exited;
    }
    if (state.kind !== "starting" && state.kind !== "ready") {
      this.enter({ kind: "idle" });
      return;
    }
    const { runtime } = state;
    const { child } = runtime;
    this.log.info({ pid: child.pid, reason }, "stopping runtime");
    child.kill("SIGTERM");
    const killTimer = setTimeout(() => {
      this.log.warn({ pid: child.pid }, "runtime did not stop in time; killing it");
      child.kill("SIGKILL");
    }, this.timing.stopTimeoutMs);
    this.enter({ kind: "stopping", runtime, killTimer, startAfter: false });
    await runtime.exited;
  }

  /**
   * The proxy could not reach the endpoint. Nothing listening (a crash whose exit this process has
   * not seen yet) takes it out of rotation at once, so requests wait for the restart instead of
   * failing on a dead port; anything else is probed now rather than at the next tick.
   */
  probeSoon(endpoint: Endpoint, error: Error & { code?: string }): void {
    const state = this.state;
    if (state.kind !== "ready") return;
    if (error.code === "ECONNREFUSED" && state.runtime.endpoint.id === endpoint.id) {
      this.log.warn({ endpoint: endpoint.id }, "runtime refused a connection; not routing to it until it answers again");
      this.enterUnready(state.runtime);
    }
    this.scheduleProbe(0);
  }

  /** Synchronous last resort when the router process exits without closing the backend. */
  killNow(): void {
    runtimeOf(this.state)?.child.kill("SIGTERM");
  }

  /** The one place the state changes: leaves the current state (clearing its timers) for `next`. */
  private enter<S extends LocalModelState>(next: S): S {
    leave(this.state);
    this.state = next;
    return next;
  }

  /** Takes a ready runtime out of rotation until it answers /readyz again. */
  private enterUnready(runtime: Runtime): void {
    this.enter({ kind: "starting", runtime, phase: "loading", progress: null, message: null });
  }

  private enterFailed(message: string): void {
    this.enter({ kind: "failed", message });
    this.rejectWaiters(new ModelStartError(this.spec.id, message));
  }

  /** Makes room, then starts a runtime child; gives up quietly when the model was stopped meanwhile. */
  private async spawnRuntime(phase: "starting" | "restarting", message: string | null): Promise<void> {
    const spawning = this.enter({ kind: "spawning", phase, message });
    try {
      await this.beforeStart(this);
      if (this.state !== spawning) return;
      const port = await freePort();
      if (this.state !== spawning) return;
      const runtime = this.startChild(port);
      this.enter({ kind: "starting", runtime, phase, progress: null, message });
      this.scheduleProbe(this.timing.startingProbeMs);
    } catch (error) {
      if (this.state !== spawning) return;
      if (error instanceof ModelsBusyError) {
        // No room after all (models got busy meanwhile): not started, not failed.
        this.enter({ kind: "idle" });
        this.rejectWaiters(error);
        return;
      }
      this.enterFailed(`model ${this.spec.id} could not be started: ${(error as Error).message}`);
    }
  }

  private startChild(port: number): Runtime {
    this.generation++;
    const args = ["--import", PARENT_WATCH_IMPORT, this.options.runtimeEntry, ...this.runtimeArgs(port)];
    const child = spawn(process.execPath, args, { stdio: ["pipe", "pipe", "pipe"], env: runtimeChildEnv(process.env, process.pid) });
    const endpoint: Endpoint = { id: `${this.spec.id}#${this.generation}`, url: `http://127.0.0.1:${port}`, capacity: this.parallel };
    this.log.info({ pid: child.pid, port, source: this.spec.source }, "runtime started");
    child.stdin?.on("error", () => undefined);
    const exited = new Promise<void>((resolve) => {
      child.once("exit", (code, signal) => {
        this.onExit(runtime, code, signal);
        resolve();
      });
    });
    const runtime: Runtime = { child, endpoint, exited, lastError: null };
    child.once("error", (error) => {
      runtime.lastError = `cannot start the runtime: ${error.message}`;
    });
    this.watchOutput(runtime);
    return runtime;
  }

  /** The runtime's parallel sequences: the model's, else the router's --parallel, else the runtime's default. */
  private get parallel(): number {
    return this.spec.parallel ?? this.options.runtime.parallel ?? DEFAULT_PARALLEL;
  }

  /** `runtime` and its flags for this model (the command line after `node <entry>`). */
  private runtimeArgs(port: number): string[] {
    const { runtime } = this.options;
    return runtimeArgv({
      model: this.spec.source,
      modelId: this.spec.id,
      host: "127.0.0.1",
      port,
      logLevel: runtime.logLevel,
      bodyLimitBytes: runtime.bodyLimitBytes,
      maxBatchPrompts: runtime.maxBatchPrompts,
      drainSeconds: runtime.drainSeconds,
      threads: runtime.threads,
      parallel: this.spec.parallel ?? runtime.parallel,
      contextSize: this.spec.context_size ?? runtime.contextSize,
      modelDir: runtime.modelDir || undefined,
      defaults: samplingDefaultsJson(this.spec.defaults),
    });
  }

  /** Copies the child's log lines and remembers the last error, to explain a failed start. */
  private watchOutput(runtime: Runtime): void {
    const { child } = runtime;
    const sink = this.options.logSink === undefined ? process.stdout : this.options.logSink;
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue;
      const lines = createInterface({ input: stream, crlfDelay: Infinity });
      lines.on("line", (line) => {
        if (sink) sink.write(`${line}\n`);
        const error = errorOf(line, stream === child.stderr);
        if (error) runtime.lastError = error;
      });
    }
  }

  private onExit(runtime: Runtime, code: number | null, signal: NodeJS.Signals | null): void {
    const state = this.state;
    if (runtimeOf(state) !== runtime) return;
    const how = signal ? `signal ${signal}` : `code ${code}`;
    if (state.kind === "stopping") {
      this.enter({ kind: "idle" });
      this.log.info({ how }, "runtime stopped");
      if (state.startAfter) this.ensureStarted();
      return;
    }
    const attempts = this.attempts;
    if (state.kind !== "ready") attempts.startFailures++;
    attempts.crashes++;
    const detail = runtime.lastError ? `${runtime.lastError} (runtime exited with ${how})` : `runtime exited with ${how}`;
    // A model whose runtime never got ready since it was loaded cannot load (a broken or missing
    // file, a bad flag): failed at once, no restarts. One that served and then crashed comes back
    // after a backoff, and is failed only after maxStartFailures restarts in a row that end before ready.
    if (!attempts.everReady || attempts.startFailures >= this.timing.maxStartFailures) {
      this.log.error({ how, attempts: attempts.startFailures, reason: runtime.lastError }, "runtime exits before it is ready; the model is failed until it is loaded again");
      this.enterFailed(`model ${this.spec.id} could not be started: ${detail}`);
      return;
    }
    const delay = Math.min(this.timing.backoffMaxMs, this.timing.backoffBaseMs * 2 ** (attempts.crashes - 1));
    this.log.warn({ how, delayMs: delay, reason: runtime.lastError }, "runtime exited; restarting after a backoff");
    const timer = setTimeout(() => void this.spawnRuntime("restarting", detail), delay);
    this.enter({ kind: "backoff", message: detail, timer });
  }

  /** Probes the runtime of the current `starting` or `ready` state again after `delayMs`. */
  private scheduleProbe(delayMs: number): void {
    const state = this.state;
    if (state.kind !== "starting" && state.kind !== "ready") return;
    clearTimeout(state.probeTimer);
    state.probeTimer = setTimeout(() => void this.probe(state.runtime), delayMs);
  }

  /** Whether `runtime` is still the one being started or served (not stopped, exited or replaced). */
  private probing(runtime: Runtime): boolean {
    const state = this.state;
    return (state.kind === "starting" || state.kind === "ready") && state.runtime === runtime;
  }

  private async probe(runtime: Runtime): Promise<void> {
    if (!this.probing(runtime)) return;
    let ok = false;
    try {
      const response = await fetch(`${runtime.endpoint.url}/readyz`, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
      ok = response.status === 200;
      await response.body?.cancel();
    } catch {
      ok = false;
    }
    if (!this.probing(runtime)) return;
    const state = this.state;
    if (ok) {
      if (state.kind === "ready") state.failedProbes = 0;
      else this.markReady(runtime);
    } else if (state.kind === "ready") {
      // Misses in a row take the endpoint out until it answers again (the exit handler deals with crashes).
      if (++state.failedProbes >= MISSES_BEFORE_UNREADY) {
        this.log.warn("runtime stopped answering /readyz; not routing to it");
        this.enterUnready(runtime);
      }
    } else {
      await this.readProgress(runtime);
    }
    if (!this.probing(runtime)) return;
    this.scheduleProbe(this.state.kind === "ready" ? this.timing.readyProbeMs : this.timing.startingProbeMs);
  }

  /** Follows a starting runtime's download and load (its `/info`). */
  private async readProgress(runtime: Runtime): Promise<void> {
    try {
      const response = await fetch(`${runtime.endpoint.url}/info`, { signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
      if (response.status !== 200) {
        await response.body?.cancel();
        return;
      }
      const info = (await response.json()) as RuntimeInfo;
      const state = this.state;
      if (state.kind !== "starting" || state.runtime !== runtime) return;
      if (info.state === "downloading") {
        const progress = info.progress;
        state.phase = "downloading";
        state.progress = progress ? downloadProgress(progress.bytes_done ?? 0, progress.bytes_total ?? null) : null;
      } else if (info.state === "loading") {
        state.phase = "loading";
        const size = info.size_bytes ?? null;
        const loaded = info.progress?.load_fraction;
        state.progress = { bytes_done: size ?? 0, bytes_total: size, fraction: typeof loaded === "number" ? Math.min(1, Math.max(0, loaded)) : null };
      }
    } catch {
      // not listening yet
    }
  }

  private markReady(runtime: Runtime): void {
    this.attempts.startFailures = 0;
    this.attempts.everReady = true;
    const stableTimer = setTimeout(() => (this.attempts.crashes = 0), STABLE_AFTER_MS);
    stableTimer.unref();
    this.enter({ kind: "ready", runtime, endpoints: [runtime.endpoint], failedProbes: 0, stableTimer });
    this.log.info({ endpoint: runtime.endpoint.url }, "runtime ready");
    for (const waiter of this.waiters) waiter.resolve();
    this.waiters.clear();
  }

  private rejectWaiters(error: Error): void {
    for (const waiter of this.waiters) waiter.reject(error);
    this.waiters.clear();
  }
}

/** An error message from one line of a runtime's output (pino JSON at level error and above, or plain stderr). */
export function errorOf(line: string, isStderr: boolean): string | null {
  const text = line.trim();
  if (!text) return null;
  if (text.startsWith("{")) {
    try {
      const entry = JSON.parse(text) as { level?: number; msg?: string; reason?: string; err?: { message?: string } };
      if (typeof entry.level === "number" && entry.level >= PINO_ERROR_LEVEL) {
        const why = entry.reason ?? entry.err?.message;
        return why ? `${entry.msg ?? "error"}: ${why}` : (entry.msg ?? null);
      }
      return null;
    } catch {
      // not JSON after all
    }
  }
  return isStderr ? text.slice(0, MAX_STDERR_REASON_CHARS) : null;
}

