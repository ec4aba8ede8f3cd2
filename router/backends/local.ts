import { spawn, type ChildProcess } from "node:child_process";
import net from "node:net";
import { createInterface } from "node:readline";
import type { Logger } from "../../common/logger.js";
import { catalogEntry, type Catalog, type CatalogModel } from "../catalog.js";
import { ModelsBusyError, ModelStartError, type Backend, type CatalogEntry, type Endpoint, type ModelProgress, type ModelState, type ModelStatus } from "./types.js";
import { withRuntimeProcessEnv } from "../../common/runtime-env.js";

/**
 * Preloaded into every runtime child (`node --import data:...`): the child's stdin is a pipe from
 * the router, so it ends when the router dies for any reason, SIGKILL included. The child then
 * stops itself (SIGTERM: the runtime drains, with no clients left that is quick) and exits at the
 * latest 5 s later. No orphan runtimes, and nothing to change in the runtime.
 *
 * Processes the runtime forks itself inherit `--import` but not the pipe (node-llama-cpp tests its
 * binary in a child with stdin ignored): only the process whose parent is the router, as named by
 * CORRAL_PARENT_WATCH, watches; the variable is removed so that its own children never do.
 */
const PARENT_WATCH = [
  "const w=process.env.CORRAL_PARENT_WATCH;delete process.env.CORRAL_PARENT_WATCH;",
  "if(w&&w===String(process.ppid)){let g=0;const f=()=>{if(g++)return;setTimeout(()=>process.exit(1),5e3).unref();process.kill(process.pid,'SIGTERM')};",
  "const s=process.stdin;s.on('end',f);s.on('close',f);s.on('error',f);s.resume();s.unref()}",
].join("");
export const PARENT_WATCH_IMPORT = `data:text/javascript,${encodeURI(PARENT_WATCH)}`;

/**
 * The router's own secrets, which a runtime child must not see (it has no use for them, and a
 * runtime's environment is easier to read than the router's: /proc, crash reports, tools it runs):
 * the API keys, the Redis URL (it may carry a password) and the Kubernetes credentials.
 */
export const ROUTER_ONLY_ENV: readonly string[] = ["CORRAL_API_KEYS", "CORRAL_API_KEYS_FILE", "REDIS_URL", "KUBECONFIG"];

/** A runtime child's environment: the router's, without ROUTER_ONLY_ENV, with RUNTIME_PROCESS_ENV and the parent watch. */
export function runtimeChildEnv(env: NodeJS.ProcessEnv, parentPid: number): NodeJS.ProcessEnv {
  const childEnv: NodeJS.ProcessEnv = { ...withRuntimeProcessEnv(env), CORRAL_PARENT_WATCH: String(parentPid) };
  for (const name of ROUTER_ONLY_ENV) delete childEnv[name];
  return childEnv;
}

export interface RuntimeFlags {
  threads?: number;
  parallel?: number;
  contextSize?: number;
  modelDir?: string;
  logLevel: string;
  bodyLimitBytes: number;
  maxBatchPrompts: number;
  drainSeconds: number;
}

export interface LocalTiming {
  /** Poll interval while a runtime is starting. */
  startingProbeMs: number;
  /** Poll interval once it is ready. */
  readyProbeMs: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  /** Consecutive starts that end before the runtime is ready, after which the model is `failed`. */
  maxStartFailures: number;
  /** How long a stopped runtime may drain before SIGKILL. */
  stopTimeoutMs: number;
}

export const DEFAULT_TIMING: LocalTiming = {
  startingProbeMs: 200,
  readyProbeMs: 2000,
  backoffBaseMs: 500,
  backoffMaxMs: 30_000,
  maxStartFailures: 3,
  stopTimeoutMs: 35_000,
};

export interface LocalBackendOptions {
  catalog: Catalog;
  /** Started by `start()` as the current model; null for none. */
  initialModel: string | null;
  maxModels: number;
  /** The corral CLI script; children run `node <entry> runtime ...`. */
  runtimeEntry: string;
  runtime: RuntimeFlags;
  logger: Logger;
  /** Where the children's log lines are copied (default: this process's stdout); null drops them. */
  logSink?: NodeJS.WritableStream | null;
  timing?: Partial<LocalTiming>;
}

/** A free loopback port: bind :0, read it, close (the runtime binds it right after). */
export async function freePort(): Promise<number> {
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
  progress?: { bytes_done?: number; bytes_total?: number | null } | null;
}

/** One catalogued model and the runtime child that serves it. */
class LocalModel {
  state: ModelState = "not_loaded";
  progress: ModelProgress | null = null;
  message: string | null = null;
  lastUsed = 0;
  private child: ChildProcess | undefined;
  private exited: Promise<void> | undefined;
  private endpoint: Endpoint | undefined;
  private ready: readonly Endpoint[] = [];
  private generation = 0;
  private startFailures = 0;
  private crashes = 0;
  /** Whether a runtime of this model was ready since the model was last started from scratch. */
  private everReady = false;
  private stopRequested = false;
  private spawning = false;
  private startAfterStop = false;
  private lastError: string | null = null;
  private failedProbes = 0;
  private probeTimer: NodeJS.Timeout | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private stableTimer: NodeJS.Timeout | undefined;
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

  get running(): boolean {
    return this.state !== "not_loaded" && this.state !== "failed";
  }

  readyEndpoints(): readonly Endpoint[] {
    return this.ready;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Requests wait for it, or the router has requests in flight to its runtime. */
  busy(inFlight: (endpoint: Endpoint) => number): boolean {
    return this.waiters.size > 0 || (this.endpoint !== undefined && inFlight(this.endpoint) > 0);
  }

  status(): ModelStatus {
    return { model_id: this.spec.id, state: this.state, progress: this.progress, message: this.message, endpoints: this.ready };
  }

  /** Starts the runtime unless one runs or is coming back (a `failed` model is started again). */
  ensureStarted(): void {
    if (this.state === "stopping") {
      this.startAfterStop = true;
      return;
    }
    if (this.running || this.spawning) return;
    this.stopRequested = false;
    this.startFailures = 0;
    this.crashes = 0;
    this.everReady = false;
    this.message = null;
    this.state = "starting";
    void this.spawnChild();
  }

  waitReady(signal: AbortSignal): Promise<void> {
    if (this.state === "ready") return Promise.resolve();
    if (this.state === "failed") return Promise.reject(new ModelStartError(this.spec.id, this.failureDetail()));
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
    this.stopRequested = true;
    this.startAfterStop = false;
    this.clearTimers();
    this.setReady(undefined);
    this.rejectWaiters(new ModelStartError(this.spec.id, `model ${this.spec.id} was ${reason}`));
    const child = this.child;
    if (!child || !this.exited) {
      this.state = "not_loaded";
      this.progress = null;
      return;
    }
    this.state = "stopping";
    this.log.info({ pid: child.pid, reason }, "stopping runtime");
    child.kill("SIGTERM");
    const kill = setTimeout(() => {
      this.log.warn({ pid: child.pid }, "runtime did not stop in time; killing it");
      child.kill("SIGKILL");
    }, this.timing.stopTimeoutMs);
    await this.exited;
    clearTimeout(kill);
  }

  /**
   * The proxy could not reach the endpoint. Nothing listening (a crash whose exit this process has
   * not seen yet) takes it out of rotation at once, so requests wait for the restart instead of
   * failing on a dead port; anything else is probed now rather than at the next tick.
   */
  probeSoon(endpoint: Endpoint, error: Error & { code?: string }): void {
    if (this.state !== "ready") return;
    if (error.code === "ECONNREFUSED" && this.ready.some((ready) => ready.id === endpoint.id)) {
      this.log.warn({ endpoint: endpoint.id }, "runtime refused a connection; not routing to it until it answers again");
      this.setReady(undefined);
      this.state = "loading";
    }
    this.scheduleProbe(0);
  }

  private async spawnChild(): Promise<void> {
    this.spawning = true;
    try {
      await this.beforeStart(this);
      if (this.stopRequested) return;
      const port = await freePort();
      if (this.stopRequested) return;
      this.generation++;
      const args = ["--import", PARENT_WATCH_IMPORT, this.options.runtimeEntry, "runtime", ...this.runtimeArgs(port)];
      const child = spawn(process.execPath, args, { stdio: ["pipe", "pipe", "pipe"], env: runtimeChildEnv(process.env, process.pid) });
      this.child = child;
      this.lastError = null;
      this.failedProbes = 0;
      const url = `http://127.0.0.1:${port}`;
      const endpoint: Endpoint = { id: `${this.spec.id}#${this.generation}`, url };
      this.log.info({ pid: child.pid, port, source: this.spec.source }, "runtime started");
      child.stdin?.on("error", () => undefined);
      this.watchOutput(child);
      this.exited = new Promise<void>((resolve) => {
        child.once("exit", (code, signal) => {
          this.onExit(child, code, signal);
          resolve();
        });
      });
      child.once("error", (error) => {
        this.lastError = `cannot start the runtime: ${error.message}`;
      });
      this.endpoint = endpoint;
      this.scheduleProbe(this.timing.startingProbeMs);
    } catch (error) {
      if (error instanceof ModelsBusyError) {
        // No room after all (models got busy meanwhile): not started, not failed.
        this.state = "not_loaded";
        this.rejectWaiters(error);
        return;
      }
      this.lastError = (error as Error).message;
      this.state = "failed";
      this.message = this.failureDetail();
      this.rejectWaiters(new ModelStartError(this.spec.id, this.message));
    } finally {
      this.spawning = false;
    }
  }

  private runtimeArgs(port: number): string[] {
    const { runtime } = this.options;
    const args = ["--model", this.spec.source, "--model-id", this.spec.id, "--host", "127.0.0.1", "--port", String(port)];
    args.push("--log-level", runtime.logLevel);
    args.push("--body-limit-bytes", String(runtime.bodyLimitBytes));
    args.push("--max-batch-prompts", String(runtime.maxBatchPrompts));
    args.push("--drain-seconds", String(runtime.drainSeconds));
    const threads = runtime.threads;
    const parallel = this.spec.parallel ?? runtime.parallel;
    const contextSize = this.spec.context_size ?? runtime.contextSize;
    if (threads !== undefined) args.push("--threads", String(threads));
    if (parallel !== undefined) args.push("--parallel", String(parallel));
    if (contextSize !== undefined) args.push("--context-size", String(contextSize));
    if (runtime.modelDir) args.push("--model-dir", runtime.modelDir);
    if (this.spec.defaults) args.push("--defaults", JSON.stringify(this.spec.defaults));
    return args;
  }

  /** Copies the child's log lines and remembers the last error, to explain a failed start. */
  private watchOutput(child: ChildProcess): void {
    const sink = this.options.logSink === undefined ? process.stdout : this.options.logSink;
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue;
      const lines = createInterface({ input: stream, crlfDelay: Infinity });
      lines.on("line", (line) => {
        if (sink) sink.write(`${line}\n`);
        const error = errorOf(line, stream === child.stderr);
        if (error) this.lastError = error;
      });
    }
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child) return;
    this.child = undefined;
    this.exited = undefined;
    this.clearTimers();
    const wasReady = this.state === "ready";
    this.setReady(undefined);
    this.endpoint = undefined;
    this.progress = null;
    const how = signal ? `signal ${signal}` : `code ${code}`;
    if (this.stopRequested) {
      this.state = "not_loaded";
      this.log.info({ how }, "runtime stopped");
      if (this.startAfterStop) {
        this.startAfterStop = false;
        this.ensureStarted();
      }
      return;
    }
    if (!wasReady) this.startFailures++;
    this.crashes++;
    const detail = this.lastError ? `${this.lastError} (runtime exited with ${how})` : `runtime exited with ${how}`;
    // A model whose runtime never got ready since it was loaded cannot load (a broken or missing
    // file, a bad flag): failed at once, no restarts. One that served and then crashed comes back
    // after a backoff, and is failed only after maxStartFailures restarts in a row that end before ready.
    if (!this.everReady || this.startFailures >= this.timing.maxStartFailures) {
      this.state = "failed";
      this.message = `model ${this.spec.id} could not be started: ${detail}`;
      this.log.error({ how, attempts: this.startFailures, reason: this.lastError }, "runtime exits before it is ready; the model is failed until it is loaded again");
      this.rejectWaiters(new ModelStartError(this.spec.id, this.message));
      return;
    }
    const delay = Math.min(this.timing.backoffMaxMs, this.timing.backoffBaseMs * 2 ** (this.crashes - 1));
    this.state = "restarting";
    this.message = detail;
    this.log.warn({ how, delayMs: delay, reason: this.lastError }, "runtime exited; restarting after a backoff");
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.stopRequested) return;
      void this.spawnChild();
    }, delay);
  }

  private scheduleProbe(delayMs: number): void {
    clearTimeout(this.probeTimer);
    this.probeTimer = setTimeout(() => void this.probe(), delayMs);
  }

  private async probe(): Promise<void> {
    const endpoint = this.endpoint;
    const child = this.child;
    if (!endpoint || !child || this.stopRequested) return;
    let ok = false;
    try {
      const response = await fetch(`${endpoint.url}/readyz`, { signal: AbortSignal.timeout(2000) });
      ok = response.status === 200;
      await response.body?.cancel();
    } catch {
      ok = false;
    }
    if (this.child !== child || this.stopRequested) return;
    if (ok) {
      this.failedProbes = 0;
      if (this.state !== "ready") this.markReady(endpoint);
    } else if (this.state === "ready") {
      // Two misses in a row take the endpoint out until it answers again (the exit handler deals with crashes).
      if (++this.failedProbes >= 2) {
        this.log.warn("runtime stopped answering /readyz; not routing to it");
        this.setReady(undefined);
        this.state = "loading";
      }
    } else {
      await this.readProgress(endpoint);
    }
    if (this.child !== child || this.stopRequested) return;
    this.scheduleProbe(this.state === "ready" ? this.timing.readyProbeMs : this.timing.startingProbeMs);
  }

  private async readProgress(endpoint: Endpoint): Promise<void> {
    try {
      const response = await fetch(`${endpoint.url}/info`, { signal: AbortSignal.timeout(2000) });
      if (response.status !== 200) {
        await response.body?.cancel();
        return;
      }
      const info = (await response.json()) as RuntimeInfo;
      if (this.state === "ready" || this.stopRequested) return;
      if (info.state === "downloading") {
        this.state = "downloading";
        const progress = info.progress;
        this.progress = progress ? { bytes_done: progress.bytes_done ?? 0, bytes_total: progress.bytes_total ?? null } : null;
      } else if (info.state === "loading") {
        this.state = "loading";
        this.progress = null;
      }
    } catch {
      // not listening yet
    }
  }

  private markReady(endpoint: Endpoint): void {
    this.state = "ready";
    this.progress = null;
    this.message = null;
    this.startFailures = 0;
    this.everReady = true;
    this.setReady(endpoint);
    this.log.info({ endpoint: endpoint.url }, "runtime ready");
    // A runtime that stays up for a while has recovered: the next crash restarts quickly again.
    clearTimeout(this.stableTimer);
    this.stableTimer = setTimeout(() => (this.crashes = 0), 30_000);
    this.stableTimer.unref();
    for (const waiter of this.waiters) waiter.resolve();
    this.waiters.clear();
  }

  private setReady(endpoint: Endpoint | undefined): void {
    this.ready = endpoint ? [endpoint] : [];
  }

  private rejectWaiters(error: Error): void {
    for (const waiter of this.waiters) waiter.reject(error);
    this.waiters.clear();
  }

  private failureDetail(): string {
    return this.message ?? `model ${this.spec.id} could not be started: ${this.lastError ?? "unknown reason"}`;
  }

  private clearTimers(): void {
    clearTimeout(this.probeTimer);
    clearTimeout(this.restartTimer);
    clearTimeout(this.stableTimer);
    this.probeTimer = this.restartTimer = this.stableTimer = undefined;
  }

  /** Synchronous last resort when the router process exits without closing the backend. */
  killNow(): void {
    this.child?.kill("SIGTERM");
  }
}

/** An error message from one line of a runtime's output (pino JSON at level error and above, or plain stderr). */
export function errorOf(line: string, isStderr: boolean): string | null {
  const text = line.trim();
  if (!text) return null;
  if (text.startsWith("{")) {
    try {
      const entry = JSON.parse(text) as { level?: number; msg?: string; reason?: string; err?: { message?: string } };
      if (typeof entry.level === "number" && entry.level >= 50) {
        const why = entry.reason ?? entry.err?.message;
        return why ? `${entry.msg ?? "error"}: ${why}` : (entry.msg ?? null);
      }
      return null;
    } catch {
      // not JSON after all
    }
  }
  return isStderr ? text.slice(0, 500) : null;
}

/**
 * The local backend: the catalog file lists the models; each loaded model runs as one
 * `corral runtime` child on a free loopback port. Children that crash come back after a backoff;
 * unload and close stop them, and a child stops itself when the router dies.
 */
export class LocalBackend implements Backend {
  readonly kind = "local";
  private readonly models = new Map<string, LocalModel>();
  private readonly entries: CatalogEntry[];
  private currentId: string | null = null;
  private inFlight: (endpoint: Endpoint) => number = () => 0;
  /** Loads run one at a time: each waits for the previous one to finish. */
  private switchQueue: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly onProcessExit = () => {
    for (const model of this.models.values()) model.killNow();
  };

  constructor(private readonly options: LocalBackendOptions) {
    const timing = { ...DEFAULT_TIMING, ...options.timing };
    for (const spec of options.catalog.models) this.models.set(spec.id, new LocalModel(spec, options, timing, (model) => this.makeRoom(model)));
    this.entries = options.catalog.models.map(catalogEntry);
  }

  async start(): Promise<void> {
    process.on("exit", this.onProcessExit);
    const initial = this.options.initialModel;
    if (initial) {
      this.currentId = initial;
      this.model(initial).ensureStarted();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.models.values()].filter((model) => model.running).map((model) => model.stop("stopped with the router")));
    process.off("exit", this.onProcessExit);
  }

  healthy(): boolean {
    return !this.closed;
  }

  list(): readonly CatalogEntry[] {
    return this.entries;
  }

  lookup(modelId: string): CatalogEntry | undefined {
    return this.models.has(modelId) ? this.entries.find((entry) => entry.model_id === modelId) : undefined;
  }

  current(): string | null {
    return this.currentId;
  }

  status(modelId: string): ModelStatus {
    return this.model(modelId).status();
  }

  readyEndpoints(modelId: string): readonly Endpoint[] {
    const model = this.models.get(modelId);
    if (!model) return [];
    model.lastUsed = Date.now();
    return model.readyEndpoints();
  }

  /** Starts a model for a request; a `failed` one is not retried (its reason at once) until it is loaded again. */
  ensureReady(modelId: string, signal: AbortSignal): Promise<void> {
    const model = this.model(modelId);
    model.lastUsed = Date.now();
    if (model.state !== "failed") {
      try {
        this.checkRoom(model);
      } catch (error) {
        return Promise.reject(error);
      }
      model.ensureStarted();
    }
    return model.waitReady(signal);
  }

  trackInFlight(inFlight: (endpoint: Endpoint) => number): void {
    this.inFlight = inFlight;
  }

  /**
   * Loads run one at a time. The model becomes the current one only once it is ready: a load
   * that fails leaves the current model current and serving (restarted when it had to make room
   * under --max-models), and the failed model `failed` with its reason.
   */
  async load(modelId: string, signal: AbortSignal): Promise<void> {
    const model = this.model(modelId);
    const previousTurn = this.switchQueue;
    let done!: () => void;
    this.switchQueue = new Promise<void>((resolve) => (done = resolve));
    try {
      await abortable(previousTurn, signal);
      await this.switchTo(model, signal);
    } finally {
      void previousTurn.then(done);
    }
  }

  private async switchTo(model: LocalModel, signal: AbortSignal): Promise<void> {
    if (this.closed) throw new ModelStartError(model.spec.id, "the router is stopping");
    model.lastUsed = Date.now();
    if (this.currentId === model.spec.id && model.state === "ready") return;
    this.checkRoom(model);
    model.ensureStarted();
    await model.waitReady(signal);
    this.currentId = model.spec.id;
  }

  async unload(modelId: string): Promise<void> {
    const model = this.model(modelId);
    if (this.currentId === modelId) this.currentId = null;
    await model.stop("unloaded");
  }

  /** The process id of a model's runtime child, if one runs (for tests and operators). */
  runtimePid(modelId: string): number | undefined {
    return this.models.get(modelId)?.pid;
  }

  reportFailure(modelId: string, endpoint: Endpoint, error: Error): void {
    this.models.get(modelId)?.probeSoon(endpoint, error);
  }

  private model(modelId: string): LocalModel {
    const model = this.models.get(modelId);
    if (!model) throw new Error(`unknown model ${modelId}`);
    return model;
  }

  /**
   * The runtimes to stop so that `starting` fits in --max-models: idle ones only (no request in
   * flight or waiting), the least recently used first, the current model last. Throws
   * ModelsBusyError when there are not enough idle ones.
   */
  private victims(starting: LocalModel): LocalModel[] {
    const others = [...this.models.values()].filter((model) => model !== starting && model.running);
    const excess = others.length + 1 - this.options.maxModels;
    if (excess <= 0) return [];
    const isCurrent = (model: LocalModel) => model.spec.id === this.currentId;
    const idle = others
      .filter((model) => !model.busy(this.inFlight))
      .sort((a, b) => Number(isCurrent(a)) - Number(isCurrent(b)) || a.lastUsed - b.lastUsed);
    if (idle.length < excess) {
      throw new ModelsBusyError(
        starting.spec.id,
        `model ${starting.spec.id} cannot start now: all loaded models are busy and --max-models ${this.options.maxModels} is reached; try again shortly`,
      );
    }
    return idle.slice(0, excess);
  }

  /** Fails fast (ModelsBusyError) when a model that does not run could not get a runtime's room now. */
  private checkRoom(model: LocalModel): void {
    if (!model.running) this.victims(model);
  }

  /**
   * Stops idle runtimes so that `starting` fits in --max-models. When the current model had to
   * make room and `starting` then cannot start, the current model is started again.
   */
  private async makeRoom(starting: LocalModel): Promise<void> {
    const victims = this.victims(starting);
    if (victims.length === 0) return;
    const current = victims.find((model) => model.spec.id === this.currentId);
    await Promise.all(victims.map((model) => model.stop(`stopped to make room for ${starting.spec.id} (--max-models ${this.options.maxModels})`)));
    if (current) {
      starting.waitReady(new AbortController().signal).catch((error: unknown) => {
        if (!(error instanceof ModelStartError) || starting.state !== "failed" || this.closed || current.running || this.currentId !== current.spec.id) return;
        this.options.logger.warn({ model: current.spec.id, failed: starting.spec.id }, "the model that took the current model's room could not start; starting the current model again");
        current.ensureStarted();
      });
    }
  }
}

/** Resolves with `promise`, or rejects with the signal's reason when it aborts first. */
function abortable(promise: Promise<void>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      () => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}
