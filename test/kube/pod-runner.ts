// A kubelet stand-in for tests (KWOK's idea, but it runs the real process): it registers a Node
// with the real control plane, binds the pending pods of its namespaces to it, and runs each
// container's command as a local child process on a loopback address of its own, reporting pod
// status through the API as a kubelet does. Several runners (one per test file) share a control
// plane: each handles only its namespaces, and they claim pod addresses in one shared folder.
//
// What it does as a kubelet does:
// - a Node (Ready, capacity/allocatable, InternalIP 127.0.0.1) whose Lease in kube-node-lease and
//   Ready heartbeat stay fresh, so the node lifecycle controller never taints it or evicts pods;
//   close() deletes the Node and the Lease;
// - binding: pending pods of its namespaces (schedulerName unset or default-scheduler) whose
//   nodeSelector matches the Node's labels and whose requests fit its allocatable are bound through
//   pods/<name>/binding; the others get PodScheduled=False, reason Unschedulable, as the scheduler
//   writes it (so a second runner, or kube-scheduler, must not serve the same namespaces);
// - each pod gets an address 127.0.1.N (claimed with mkdir in `claimDir`, released when the pod is
//   gone), a working folder, emptyDir folders, PersistentVolumeClaims mapped to host folders
//   (`volumes.claims`), hostPath folders as they are, configMap, secret and projected volumes
//   written out as files (the ServiceAccount admission's kube-api-access-*: a TokenRequest token,
//   the CA, the namespace); containers run with the pod's env only (value, valueFrom
//   secretKeyRef/configMapKeyRef/fieldRef, envFrom, `$(VAR)` expansion; PATH and HOSTNAME added,
//   nothing inherited), stdout and stderr in a log file per container instance (`logs()`);
// - status through pods/<name>/status: hostIP(s), podIP(s), startTime, phase, the conditions
//   PodScheduled, PodReadyToStartContainers, Initialized, ContainersReady and Ready, and
//   containerStatuses (state running/waiting/terminated, lastState, restartCount, started, ready)
//   written level-triggered: computed from the local state and sent when it changed;
// - probes (httpGet, tcpSocket, exec) with initialDelaySeconds, periodSeconds, timeoutSeconds,
//   successThreshold and failureThreshold; a startupProbe gates readiness and liveness; a failed
//   liveness (or startup) probe kills and restarts the container;
// - restarts per restartPolicy with the kubelet's back-off: the first restart is immediate, then
//   CrashLoopBackOff waits of base, 2 x base, ... up to 300 s, reset after 10 minutes; lastState
//   holds the terminated instance with exit code, reason (Completed/Error) and the termination
//   message (terminationMessagePath when it lies on a volume, or with FallbackToLogsOnError and a
//   non-zero exit the last 80 lines / 2048 bytes of the log);
// - deletion: SIGTERM to the container's process group, SIGKILL after the pod's
//   deletionGracePeriodSeconds, a last status, then DELETE with grace 0 and a uid precondition.
//
// Its only deviations in what a process sees, as there are no network or mount namespaces here:
// - network: a command argument or env value "0.0.0.0" (also "0.0.0.0:<port>" and
//   "--flag=0.0.0.0") becomes the pod's IP, since a pod's "all interfaces" is its own address (a
//   process that binds 0.0.0.0 by itself binds every pod's address and clashes with its peers);
// - mounts: an argument, env value, workingDir or terminationMessagePath that starts with a
//   volumeMount's mountPath (also after "--flag=") is rewritten to that volume's host folder (a
//   path the process builds by itself is not).
// Not emulated: the image (command[0], or the image's name when there is no command, is looked up
// in `commands`; an unknown one leaves the container waiting with reason CreateContainerError),
// securityContext (processes run as the test's user), resource limits, init containers, lifecycle
// hooks, service links and KUBERNETES_SERVICE_* variables, grpc probes. The process group of a
// container is killed when its main process exits (as a PID namespace ends).
//
// Use (see pod-runner.test.ts):
//   const kube = realKube()!;
//   const runner = await startPodRunner({
//     kubeConfig: kube.kubeConfig, namespaces: [ns], nodeName: `${ns}-node`,
//     claimDir: path.join(kube.dir, "pod-addresses"),
//     volumes: { claims: { models: TEST_MODEL_DIR } },
//     commands: { corral: [process.execPath, path.join(REPO_ROOT, "dist/bin/corral.js")] },
//     backoffBaseSeconds: 1, maxProbePeriodSeconds: 1,
//   });
//   ... pods of `ns` now run; runner.logs(ns, pod) ...
//   await runner.close();

import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, fstatSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { HttpMethod, type KubeConfig } from "@kubernetes/client-node";
import { KubeClient, RESOURCES, describeKubeError, isConflict, isNotFound, resourcePath, type ResourceType } from "../../common/kube/client.js";
import { Informer } from "../../common/kube/informer.js";
import { kubeMicroTime, kubeTime, objectKey, type KubeObject } from "../../common/kube/types.js";
import { createLogger, type Logger } from "../../common/logger.js";

export interface PodRunnerOptions {
  /** An admin kubeconfig (the runner writes Nodes, Leases, bindings and pod status). */
  kubeConfig: KubeConfig;
  /** Only pods of these namespaces are bound and run. */
  namespaces: string[];
  /** And of those, only pods matching this label selector (e.g. `corral.dev/model`); default all. */
  labelSelector?: string;
  /** Default: pod-runner-<random>. Must be unique among runners sharing a control plane. */
  nodeName?: string;
  /** A folder shared by every runner of the control plane, where pod addresses are claimed. */
  claimDir: string;
  /** PersistentVolumeClaim claimName -> host folder. */
  volumes?: { claims?: Record<string, string> };
  /** A container's command[0] (or image name) -> the host command line that runs it. */
  commands: Record<string, string[]>;
  /** The crash-loop back-off's first wait (kubelet: 10 s); it doubles up to `backoffMaxSeconds`. */
  backoffBaseSeconds?: number;
  /** Kubelet: 300 s. */
  backoffMaxSeconds?: number;
  /** Caps every probe's periodSeconds (default: none, as the spec says). */
  maxProbePeriodSeconds?: number;
  /** Node Lease renewal and Ready heartbeat (kubelet: 10 s). */
  leaseRenewSeconds?: number;
  /** Extra or replaced capacity (= allocatable), e.g. { "nvidia.com/gpu": "1" }. Default cpu 16, memory 64Gi, pods 110. */
  capacity?: Record<string, string>;
  /** Extra Node labels (nodeSelectors are matched against them). */
  labels?: Record<string, string>;
  /** Pod folders and logs; default a new temp folder, removed by close(). */
  workDir?: string;
  /** close(): SIGTERM, then SIGKILL after this long (default 2 s). */
  closeGraceSeconds?: number;
  /** close() deletes the pods bound to this node with grace 0 (default true). */
  deletePodsOnClose?: boolean;
  logger?: Logger;
}

export interface PodRunner {
  readonly nodeName: string;
  readonly workDir: string;
  /** A container's output (default: the pod's first container, its current or latest instance). */
  logs(namespace: string, pod: string, options?: { container?: string; previous?: boolean }): string;
  /** Signals a running container's processes (default: the first container); false when none runs. */
  kill(namespace: string, pod: string, signal: NodeJS.Signals, container?: string): boolean;
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Wire shapes the runner reads (loosely typed: pods may carry more).

interface Probe {
  httpGet?: { path?: string; port: number | string; host?: string; scheme?: string; httpHeaders?: { name: string; value: string }[] };
  tcpSocket?: { port: number | string; host?: string };
  exec?: { command?: string[] };
  grpc?: unknown;
  initialDelaySeconds?: number;
  periodSeconds?: number;
  timeoutSeconds?: number;
  successThreshold?: number;
  failureThreshold?: number;
  terminationGracePeriodSeconds?: number;
}

interface KeyRef {
  name?: string;
  key: string;
  optional?: boolean;
}

interface EnvSpec {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: KeyRef; configMapKeyRef?: KeyRef; fieldRef?: { fieldPath: string }; resourceFieldRef?: unknown };
}

interface ContainerSpec {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  workingDir?: string;
  env?: EnvSpec[];
  envFrom?: { prefix?: string; configMapRef?: { name: string; optional?: boolean }; secretRef?: { name: string; optional?: boolean } }[];
  ports?: { name?: string; containerPort: number }[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  startupProbe?: Probe;
  volumeMounts?: { name: string; mountPath: string; subPath?: string }[];
  terminationMessagePath?: string;
  terminationMessagePolicy?: string;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
}

interface VolumeSpec {
  name: string;
  emptyDir?: unknown;
  persistentVolumeClaim?: { claimName: string };
  hostPath?: { path: string };
  configMap?: { name: string; items?: { key: string; path: string }[]; optional?: boolean };
  secret?: { secretName: string; items?: { key: string; path: string }[]; optional?: boolean };
  projected?: { sources?: ProjectedSource[] };
}

interface ProjectedSource {
  serviceAccountToken?: { path: string; audience?: string; expirationSeconds?: number };
  configMap?: { name: string; items?: { key: string; path: string }[]; optional?: boolean };
  secret?: { name: string; items?: { key: string; path: string }[]; optional?: boolean };
  downwardAPI?: { items?: { path: string; fieldRef?: { fieldPath: string } }[] };
}

interface PodCondition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  lastTransitionTime?: string;
}

interface RunPod extends KubeObject {
  spec: {
    containers: ContainerSpec[];
    volumes?: VolumeSpec[];
    nodeName?: string;
    nodeSelector?: Record<string, string>;
    schedulerName?: string;
    restartPolicy?: string;
    terminationGracePeriodSeconds?: number;
    serviceAccountName?: string;
  };
  status?: { phase?: string; conditions?: PodCondition[] };
  metadata: KubeObject["metadata"] & { deletionGracePeriodSeconds?: number };
}

type State =
  | { waiting: { reason: string; message?: string } }
  | { running: { startedAt: string } }
  | { terminated: Terminated };

interface Terminated {
  exitCode: number;
  reason: string;
  message?: string;
  startedAt: string;
  finishedAt: string;
  containerID?: string;
  signal?: number;
}

const SECRETS: ResourceType = { group: "", version: "v1", plural: "secrets", kind: "Secret", namespaced: true };
const SERVICE_ACCOUNTS: ResourceType = { group: "", version: "v1", plural: "serviceaccounts", kind: "ServiceAccount", namespaced: true };
const NODES: ResourceType = { group: "", version: "v1", plural: "nodes", kind: "Node", namespaced: false };
const LEASE_NAMESPACE = "kube-node-lease";
const HOST_IP = "127.0.0.1";
const KUBELET_VERSION = "v1.34.0-corral-pod-runner";
const TERMINATION_LOG_LINES = 80;
const TERMINATION_LOG_BYTES = 2048;
const TERMINATION_MESSAGE_BYTES = 4096;
const BACKOFF_RESET_FACTOR = 2; // the kubelet forgets a back-off after 2 x its cap without a crash
const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGABRT: 6, SIGKILL: 9, SIGUSR1: 10, SIGSEGV: 11, SIGUSR2: 12, SIGPIPE: 13, SIGALRM: 14, SIGTERM: 15 };

/** A container cannot be created (reason and message go to state.waiting). */
class CreateError extends Error {
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------
// Small pure helpers.

/** A Kubernetes quantity as a number (cpu in cores, memory in bytes). */
export function parseQuantity(value: string | number | undefined): number {
  if (value === undefined) return 0;
  if (typeof value === "number") return value;
  const match = /^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)([a-zA-Z]*)$/.exec(value.trim());
  if (!match) return NaN;
  const scale: Record<string, number> = {
    "": 1, n: 1e-9, u: 1e-6, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
    Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
  };
  const factor = scale[match[2]];
  return factor === undefined ? NaN : Number(match[1]) * factor;
}

/** Go's time.Duration text for whole or fractional seconds: 10s, 1m20s, 5m0s, 500ms. */
export function goDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const seconds = ms / 1000;
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = Math.round((seconds % 60) * 1000) / 1000;
  if (h) return `${h}h${m}m${s}s`;
  if (m) return `${m}m${s}s`;
  return `${s}s`;
}

/** `$(VAR)` references in env values, command and args (`$$` escapes a `$`), as the kubelet expands them. */
export function expandVars(value: string, vars: Record<string, string>): string {
  return value.replace(/\$(\$|\(([A-Za-z_][A-Za-z0-9_.-]*)\))/g, (whole, inner: string, name: string | undefined) => {
    if (inner === "$") return "$";
    return name !== undefined && name in vars ? vars[name] : whole;
  });
}

/** The last 80 lines, then the last 2048 bytes of them (the kubelet's FallbackToLogsOnError message). */
export function logTail(text: string): string {
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  const tail = lines.slice(-TERMINATION_LOG_LINES).join("\n") + (text.endsWith("\n") ? "\n" : "");
  const bytes = Buffer.from(tail);
  return bytes.length <= TERMINATION_LOG_BYTES ? tail : bytes.subarray(bytes.length - TERMINATION_LOG_BYTES).toString();
}

function readTail(file: string, maxBytes: number): string {
  let fd: number | undefined;
  try {
    fd = openSync(file, "r");
    const size = fstatSync(fd).size;
    const length = Math.min(size, maxBytes);
    const buffer = Buffer.alloc(length);
    readSync(fd, buffer, 0, length, size - length);
    return buffer.toString();
  } catch {
    return "";
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function writeFile(file: string, content: string): void {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, content);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

const processGroups = new Set<number>();
let exitHookInstalled = false;

/** Children run in their own process groups: kill what is left if the test process exits abruptly. */
function trackGroup(pid: number): void {
  processGroups.add(pid);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const group of processGroups) killGroup(group, "SIGKILL");
  });
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

// ---------------------------------------------------------------------------------------------
// Pod addresses: 127.0.1.N claimed with an atomic mkdir in a folder every runner shares.

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

function claimAddress(claimDir: string, owner: string): string {
  mkdirSync(claimDir, { recursive: true });
  for (let n = 1; n <= 254; n++) {
    const ip = `127.0.1.${n}`;
    const dir = path.join(claimDir, ip);
    try {
      mkdirSync(dir);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      // A claim whose runner process died is stale: move it away (atomic; one taker wins), retry.
      let pid = NaN;
      try {
        pid = Number(readFileSync(path.join(dir, "owner"), "utf8").split(" ")[0]);
      } catch {
        continue; // being written right now
      }
      if (!Number.isInteger(pid) || pidAlive(pid)) continue;
      try {
        const stale = `${dir}.stale-${process.pid}-${randomBytes(4).toString("hex")}`;
        renameSync(dir, stale);
        rmSync(stale, { recursive: true, force: true });
        mkdirSync(dir);
      } catch {
        continue;
      }
    }
    writeFileSync(path.join(dir, "owner"), `${process.pid} ${owner}\n`);
    return ip;
  }
  throw new CreateError("ContainerCreating", `no free pod address 127.0.1.1-254 in ${claimDir}`);
}

function releaseAddress(claimDir: string, ip: string): void {
  rmSync(path.join(claimDir, ip), { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------

interface ProbeResult {
  ok: boolean;
  message?: string;
}

class ProbeWorker {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private lastResult: boolean | undefined;
  private run = 0;
  /** Readiness starts failed, liveness succeeded, startup failed (unknown). */
  result: boolean;

  constructor(
    private readonly container: ContainerInstance,
    readonly kind: "startup" | "readiness" | "liveness",
    readonly probe: Probe,
    private readonly periodMs: number,
  ) {
    this.result = kind === "liveness";
  }

  start(): void {
    this.timer = setTimeout(() => void this.tick(), 0);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    const began = Date.now();
    try {
      await this.step();
    } catch (error) {
      this.container.log.warn({ probe: this.kind, reason: (error as Error).message }, "probe step failed");
    }
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.tick(), Math.max(0, this.periodMs - (Date.now() - began)));
  }

  private async step(): Promise<void> {
    const c = this.container;
    if (!c.isRunning) return;
    if (this.kind === "startup" && c.started) return this.stop();
    if (this.kind !== "startup" && !c.started) return;
    if (Date.now() - c.startedAtMs < (this.probe.initialDelaySeconds ?? 0) * 1000) return;
    const outcome = await c.runProbe(this.probe);
    if (this.stopped || !c.isRunning) return;
    if (this.lastResult === outcome.ok) this.run++;
    else {
      this.lastResult = outcome.ok;
      this.run = 1;
    }
    const threshold = outcome.ok ? (this.probe.successThreshold ?? 1) : (this.probe.failureThreshold ?? 3);
    if (this.run < threshold) return;
    const changed = this.result !== outcome.ok;
    this.result = outcome.ok;
    if (!changed) return;
    c.probeChanged(this, outcome);
  }
}

/** One container of a pod, across its restarts. */
class ContainerInstance {
  state: State = { waiting: { reason: "ContainerCreating" } };
  lastTerminated: Terminated | undefined;
  restartCount = 0;
  containerID: string | undefined;
  started = false;
  startedAtMs = 0;
  private starts = 0;
  private child: ChildProcess | undefined;
  private exited: Promise<void> | undefined;
  private probes: ProbeWorker[] = [];
  private restartTimer: NodeJS.Timeout | undefined;
  private stopping = false;
  private backoff: { ms: number; lastUpdate: number } | undefined;
  private killTimers: NodeJS.Timeout[] = [];
  private createFailures = 0;
  /** Terminated for good: the restart policy does not restart it, or the pod is going away. */
  done = false;
  readonly log: Logger;

  constructor(
    private readonly pod: PodInstance,
    readonly spec: ContainerSpec,
  ) {
    this.log = pod.log.child({ container: spec.name });
  }

  get isRunning(): boolean {
    return this.child !== undefined;
  }

  /** Sends a signal to the running process (what a crash, an OOM kill or `kill` in the container does). */
  sendSignal(signal: NodeJS.Signals): boolean {
    const pid = this.child?.pid;
    if (pid === undefined) return false;
    killGroup(pid, signal);
    return true;
  }

  get ready(): boolean {
    if (!this.isRunning || !this.started) return false;
    const readiness = this.probes.find((p) => p.kind === "readiness");
    return readiness ? readiness.result : true;
  }

  get everStarted(): boolean {
    return this.starts > 0;
  }

  logFile(instance: number): string {
    return path.join(this.pod.logDir, this.spec.name, `${instance}.log`);
  }

  /** The current (or latest) instance's log, or the one before. */
  readLog(previous: boolean): string {
    const instance = this.starts - 1 - (previous ? 1 : 0);
    if (instance < 0) return "";
    try {
      return readFileSync(this.logFile(instance), "utf8");
    } catch {
      return "";
    }
  }

  status(): Record<string, unknown> {
    const image = this.spec.image ?? "";
    return {
      name: this.spec.name,
      image,
      imageID: `sha256:${createHash("sha256").update(image).digest("hex")}`,
      ...(this.containerID ? { containerID: this.containerID } : {}),
      started: this.isRunning && this.started,
      ready: this.ready,
      restartCount: this.restartCount,
      state: this.state,
      lastState: this.lastTerminated ? { terminated: this.lastTerminated } : {},
    };
  }

  /** Starts (or restarts) the process; a failure leaves the container waiting and retries later. */
  async start(): Promise<void> {
    if (this.stopping || this.pod.terminating) return;
    try {
      await this.spawnProcess();
    } catch (error) {
      const failure = error instanceof CreateError ? error : new CreateError("CreateContainerError", (error as Error).message);
      this.state = { waiting: { reason: failure.reason, message: failure.message } };
      const { backoffBaseMs, backoffMaxMs } = this.pod.runner;
      const delay = Math.min(backoffBaseMs * 2 ** this.createFailures++, backoffMaxMs);
      if (this.createFailures === 1) this.log.warn({ reason: failure.reason, message: failure.message }, "container could not be started; retrying with back-off");
      this.pod.statusChanged();
      this.scheduleRestart(delay);
    }
  }

  private async spawnProcess(): Promise<void> {
    const { pod } = this;
    const env = await pod.containerEnv(this.spec);
    const expand = (value: string) => pod.rewrite(this.spec, expandVars(value, env));
    const line = this.spec.command?.length ? this.spec.command : undefined;
    const name = line ? line[0] : this.imageCommandName();
    const mapped = name === undefined ? undefined : pod.runner.commands[name];
    if (!mapped?.length) {
      throw new CreateError(
        "CreateContainerError",
        `the pod runner has no command ${JSON.stringify(name ?? "")} (options.commands maps ${Object.keys(pod.runner.commands).join(", ") || "nothing"})`,
      );
    }
    const argv = [...mapped, ...(line ?? []).slice(1).map(expand), ...(this.spec.args ?? []).map(expand)];
    const processEnv: Record<string, string> = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOSTNAME: pod.name };
    for (const [key, value] of Object.entries(env)) processEnv[key] = pod.rewrite(this.spec, value);
    const cwd = this.spec.workingDir ? pod.rewrite(this.spec, this.spec.workingDir) : pod.dir;
    mkdirSync(cwd, { recursive: true });

    const instance = this.starts;
    mkdirSync(path.dirname(this.logFile(instance)), { recursive: true });
    const out = openSync(this.logFile(instance), "a");
    let child: ChildProcess;
    try {
      child = spawn(argv[0], argv.slice(1), { cwd, env: processEnv, stdio: ["ignore", out, out], detached: true });
    } finally {
      closeSync(out);
    }
    if (child.pid === undefined) {
      const error = await new Promise<Error>((resolve) => child.once("error", resolve));
      throw new CreateError("StartError", `failed to start ${argv[0]}: ${error.message}`);
    }
    child.on("error", (error) => this.log.warn({ reason: error.message }, "process error"));
    trackGroup(child.pid);
    if (this.starts > 0) this.restartCount++;
    this.starts++;
    this.createFailures = 0;
    this.child = child;
    this.started = false;
    this.startedAtMs = Date.now();
    const startedAt = kubeTime(new Date(this.startedAtMs));
    this.containerID = `pod-runner://${randomBytes(32).toString("hex")}`;
    this.state = { running: { startedAt } };
    this.log.debug({ pid: child.pid, argv }, "container started");
    const pid = child.pid;
    this.exited = new Promise<void>((resolve) =>
      child.once("exit", (code, signal) => {
        processGroups.delete(pid);
        killGroup(pid, "SIGKILL"); // the container's other processes end with it
        this.onExit(code, signal, startedAt, instance);
        resolve();
      }),
    );
    this.startProbes();
    this.pod.statusChanged();
  }

  private imageCommandName(): string | undefined {
    const image = this.spec.image;
    if (!image) return undefined;
    if (this.pod.runner.commands[image]) return image;
    return image.split("/").at(-1)!.split("@")[0].split(":")[0];
  }

  private startProbes(): void {
    const cap = this.pod.runner.maxProbePeriodSeconds;
    const make = (kind: ProbeWorker["kind"], probe: Probe | undefined) => {
      if (!probe) return;
      const period = Math.min(probe.periodSeconds ?? 10, cap ?? Infinity);
      this.probes.push(new ProbeWorker(this, kind, probe, period * 1000));
    };
    make("startup", this.spec.startupProbe);
    make("readiness", this.spec.readinessProbe);
    make("liveness", this.spec.livenessProbe);
    if (!this.spec.startupProbe) this.started = true;
    for (const probe of this.probes) probe.start();
  }

  private stopProbes(): void {
    for (const probe of this.probes) probe.stop();
    this.probes = [];
  }

  probeChanged(worker: ProbeWorker, outcome: ProbeResult): void {
    if (worker.kind === "startup" && worker.result) this.started = true;
    if ((worker.kind === "liveness" || worker.kind === "startup") && !worker.result) {
      this.log.info({ probe: worker.kind, reason: outcome.message }, "container failed its probe; killing it to restart");
      worker.stop();
      const grace = worker.probe.terminationGracePeriodSeconds ?? this.pod.pod.spec.terminationGracePeriodSeconds ?? 30;
      this.signal(grace * 1000);
    }
    this.pod.statusChanged();
  }

  runProbe(probe: Probe): Promise<ProbeResult> {
    const timeoutMs = (probe.timeoutSeconds ?? 1) * 1000;
    const ip = this.pod.ip!;
    if (probe.httpGet) {
      const get = probe.httpGet;
      const port = this.resolvePort(get.port);
      const https = (get.scheme ?? "HTTP").toUpperCase() === "HTTPS";
      return new Promise((resolve) => {
        const headers: Record<string, string> = { "User-Agent": "kube-probe/1.34" };
        for (const header of get.httpHeaders ?? []) headers[header.name] = header.value;
        const request = (https ? httpsRequest : httpRequest)(
          { host: get.host || ip, port, path: get.path || "/", method: "GET", headers, timeout: timeoutMs, rejectUnauthorized: false },
          (response) => {
            response.resume();
            const code = response.statusCode ?? 0;
            resolve({ ok: code >= 200 && code < 400, message: `HTTP probe failed with statuscode: ${code}` });
          },
        );
        request.on("timeout", () => request.destroy(new Error(`context deadline exceeded (Client.Timeout exceeded while awaiting headers)`)));
        request.on("error", (error) => resolve({ ok: false, message: error.message }));
        request.end();
      });
    }
    if (probe.tcpSocket) {
      const port = this.resolvePort(probe.tcpSocket.port);
      return new Promise((resolve) => {
        const socket = connect({ host: probe.tcpSocket!.host || ip, port, timeout: timeoutMs });
        socket.once("connect", () => {
          socket.destroy();
          resolve({ ok: true });
        });
        socket.once("timeout", () => {
          socket.destroy();
          resolve({ ok: false, message: "dial timeout" });
        });
        socket.once("error", (error) => resolve({ ok: false, message: error.message }));
      });
    }
    if (probe.exec?.command?.length) return this.execProbe(probe.exec.command, timeoutMs);
    this.log.warn("unsupported probe (grpc or empty): counted as a success");
    return Promise.resolve({ ok: true });
  }

  private async execProbe(command: string[], timeoutMs: number): Promise<ProbeResult> {
    const mapped = this.pod.runner.commands[command[0]];
    if (!mapped) return { ok: false, message: `the pod runner has no command ${JSON.stringify(command[0])}` };
    const env = await this.pod.containerEnv(this.spec).catch(() => ({}) as Record<string, string>);
    const processEnv: Record<string, string> = { PATH: process.env.PATH ?? "/usr/bin:/bin", HOSTNAME: this.pod.name };
    for (const [key, value] of Object.entries(env)) processEnv[key] = this.pod.rewrite(this.spec, value);
    const argv = [...mapped, ...command.slice(1).map((arg) => this.pod.rewrite(this.spec, expandVars(arg, env)))];
    return new Promise((resolve) => {
      const child = spawn(argv[0], argv.slice(1), { cwd: this.pod.dir, env: processEnv, stdio: "ignore", timeout: timeoutMs, killSignal: "SIGKILL" });
      child.once("error", (error) => resolve({ ok: false, message: error.message }));
      child.once("exit", (code, signal) => resolve({ ok: code === 0, message: signal ? `command timed out` : `command exited with ${code}` }));
    });
  }

  private resolvePort(port: number | string): number {
    if (typeof port === "number") return port;
    const named = this.spec.ports?.find((p) => p.name === port);
    return named ? named.containerPort : Number(port);
  }

  private terminationMessage(exitCode: number, instance: number): string | undefined {
    const file = this.pod.rewrite(this.spec, this.spec.terminationMessagePath ?? "/dev/termination-log");
    let message = "";
    if (!file.startsWith("/dev/")) message = readTail(file, TERMINATION_MESSAGE_BYTES);
    if (!message && exitCode !== 0 && this.spec.terminationMessagePolicy === "FallbackToLogsOnError") {
      message = logTail(readTail(this.logFile(instance), 256 * 1024));
    }
    return message || undefined;
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null, startedAt: string, instance: number): void {
    this.child = undefined;
    this.stopProbes();
    for (const timer of this.killTimers) clearTimeout(timer);
    this.killTimers = [];
    const finished = Date.now();
    const exitCode = code ?? 128 + (signal ? (SIGNALS[signal] ?? 0) : 0);
    const message = this.terminationMessage(exitCode, instance);
    const terminated: Terminated = {
      exitCode,
      reason: exitCode === 0 ? "Completed" : "Error",
      ...(message ? { message } : {}),
      startedAt,
      finishedAt: kubeTime(new Date(finished)),
      containerID: this.containerID,
    };
    this.log.debug({ exitCode, signal }, "container exited");
    const policy = this.pod.pod.spec.restartPolicy ?? "Always";
    const restart = !this.stopping && !this.pod.terminating && (policy === "Always" || (policy === "OnFailure" && exitCode !== 0));
    if (!restart) {
      this.state = { terminated };
      this.done = true;
      this.pod.statusChanged();
      return;
    }
    this.lastTerminated = terminated;
    // The kubelet's back-off: a crash within the current back-off of the previous restart waits
    // out the rest of it; otherwise the restart is immediate and the back-off doubles (or resets
    // to the base after 2 x the cap without one).
    const { backoffBaseMs: base, backoffMaxMs: max } = this.pod.runner;
    if (this.backoff && Date.now() - finished < this.backoff.ms) {
      const wait = this.backoff.ms;
      this.state = {
        waiting: {
          reason: "CrashLoopBackOff",
          message: `back-off ${goDuration(wait)} restarting failed container=${this.spec.name} pod=${this.pod.name}_${this.pod.namespace}(${this.pod.uid})`,
        },
      };
      this.pod.statusChanged();
      this.restartTimer = setTimeout(() => {
        this.advanceBackoff(finished, base, max);
        void this.start();
      }, wait);
      return;
    }
    this.advanceBackoff(finished, base, max);
    this.state = { terminated };
    void this.start();
  }

  private advanceBackoff(at: number, base: number, max: number): void {
    if (!this.backoff || at - this.backoff.lastUpdate > BACKOFF_RESET_FACTOR * max) this.backoff = { ms: base, lastUpdate: at };
    else this.backoff = { ms: Math.min(this.backoff.ms * 2, max), lastUpdate: at };
  }

  private scheduleRestart(ms: number): void {
    clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => void this.start(), ms);
  }

  /** SIGTERM now, SIGKILL after `graceMs`; resolves when the process has exited. */
  private signal(graceMs: number): Promise<void> {
    const child = this.child;
    if (!child?.pid) return Promise.resolve();
    const pid = child.pid;
    killGroup(pid, "SIGTERM");
    const timer = setTimeout(() => killGroup(pid, "SIGKILL"), Math.max(0, graceMs));
    this.killTimers.push(timer);
    return this.exited ?? Promise.resolve();
  }

  /** Stops for good (pod deletion or close). A second call with a shorter grace shortens the wait. */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    if (!this.isRunning) {
      if (!("terminated" in this.state)) this.done = true;
      return;
    }
    await this.signal(graceMs);
  }
}

/** A pod bound to this node, with its address, folders and containers. */
class PodInstance {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly key: string;
  readonly dir: string;
  readonly logDir: string;
  readonly log: Logger;
  ip: string | undefined;
  terminating = false;
  pod: RunPod;
  containers: ContainerInstance[];
  private startTime = kubeTime();
  private volumes = new Map<string, string>();
  private sandboxReady = false;
  private setupError: string | undefined;
  private conditionTimes = new Map<string, { status: string; time: string }>();
  private writing = false;
  private writeAgain = false;
  private lastWritten = "";
  private gone = false;

  constructor(
    readonly runner: Runner,
    pod: RunPod,
  ) {
    this.pod = pod;
    this.namespace = pod.metadata.namespace!;
    this.name = pod.metadata.name;
    this.uid = pod.metadata.uid!;
    this.key = objectKey(pod);
    const folder = `${this.namespace}_${this.name}_${this.uid}`;
    this.dir = path.join(runner.workDir, "pods", folder);
    this.logDir = path.join(runner.workDir, "logs", folder);
    this.log = runner.log.child({ pod: this.key });
    this.containers = pod.spec.containers.map((spec) => new ContainerInstance(this, spec));
  }

  async start(): Promise<void> {
    this.statusChanged();
    try {
      this.ip = claimAddress(this.runner.claimDir, `${this.runner.nodeName} ${this.key} ${this.uid}`);
      mkdirSync(this.dir, { recursive: true });
      await this.setUpVolumes();
      this.sandboxReady = true;
    } catch (error) {
      this.setupError = (error as Error).message;
      this.log.warn({ reason: this.setupError }, "pod could not be set up");
      for (const c of this.containers) c.state = { waiting: { reason: "ContainerCreating", message: this.setupError } };
      this.statusChanged();
      return;
    }
    this.statusChanged();
    for (const c of this.containers) void c.start();
  }

  private async setUpVolumes(): Promise<void> {
    for (const volume of this.pod.spec.volumes ?? []) {
      let host: string;
      if (volume.persistentVolumeClaim) {
        const mapped = this.runner.claims[volume.persistentVolumeClaim.claimName];
        if (!mapped) throw new Error(`the pod runner maps no host folder to PersistentVolumeClaim "${volume.persistentVolumeClaim.claimName}" (options.volumes.claims)`);
        host = mapped;
      } else if (volume.hostPath) {
        host = volume.hostPath.path;
      } else {
        host = path.join(this.dir, "volumes", volume.name);
        mkdirSync(host, { recursive: true });
        if (volume.configMap) await this.writeObjectKeys(host, RESOURCES.configMaps, volume.configMap.name, volume.configMap);
        else if (volume.secret) await this.writeObjectKeys(host, SECRETS, volume.secret.secretName, volume.secret);
        else if (volume.projected) await this.writeProjected(host, volume.projected.sources ?? []);
        else if (!volume.emptyDir) this.log.warn({ volume: volume.name }, "unsupported volume type: an empty folder stands in");
      }
      this.volumes.set(volume.name, host);
    }
  }

  /** A configMap or secret volume (or projection): its keys as files. */
  private async writeObjectKeys(host: string, rt: ResourceType, name: string, source: { items?: { key: string; path: string }[]; optional?: boolean }): Promise<void> {
    const object = await this.runner.client.get<KubeObject>(rt, this.namespace, name);
    if (!object && !source.optional) throw new Error(`${rt.kind.toLowerCase()} "${name}" not found`);
    const data = decodeData(object);
    for (const item of source.items ?? Object.keys(data).map((key) => ({ key, path: key }))) {
      if (item.key in data) writeFile(path.join(host, item.path), data[item.key]);
    }
  }

  /** A projected volume (the ServiceAccount admission adds kube-api-access-*: a token, the CA, the namespace). */
  private async writeProjected(host: string, sources: ProjectedSource[]): Promise<void> {
    for (const source of sources) {
      if (source.configMap) await this.writeObjectKeys(host, RESOURCES.configMaps, source.configMap.name, source.configMap);
      else if (source.secret) await this.writeObjectKeys(host, SECRETS, source.secret.name, source.secret);
      else if (source.downwardAPI) {
        for (const item of source.downwardAPI.items ?? []) if (item.fieldRef) writeFile(path.join(host, item.path), this.fieldValue(item.fieldRef.fieldPath));
      } else if (source.serviceAccountToken) {
        const account = this.pod.spec.serviceAccountName ?? "default";
        const spec = source.serviceAccountToken;
        try {
          const answer = await this.runner.client.request<{ status: { token: string } }>(
            HttpMethod.POST,
            `${resourcePath(SERVICE_ACCOUNTS, this.namespace, account)}/token`,
            {
              body: {
                apiVersion: "authentication.k8s.io/v1",
                kind: "TokenRequest",
                spec: {
                  ...(spec.audience ? { audiences: [spec.audience] } : {}),
                  expirationSeconds: spec.expirationSeconds ?? 3607,
                  boundObjectRef: { apiVersion: "v1", kind: "Pod", name: this.name, uid: this.uid },
                },
              },
            },
          );
          writeFile(path.join(host, spec.path), answer.status.token);
        } catch (error) {
          this.log.warn({ account, reason: describeKubeError(error) }, "no ServiceAccount token for the projected volume");
        }
      }
    }
  }

  /** The mount emulation and the 0.0.0.0 rewrite, for one argument or env value. */
  rewrite(container: ContainerSpec, value: string): string {
    const flag = /^(--?[A-Za-z0-9][A-Za-z0-9_.-]*=)(.*)$/s.exec(value);
    if (flag) return flag[1] + this.rewriteValue(container, flag[2]);
    return this.rewriteValue(container, value);
  }

  private rewriteValue(container: ContainerSpec, value: string): string {
    if (this.ip && (value === "0.0.0.0" || value.startsWith("0.0.0.0:"))) return this.ip + value.slice("0.0.0.0".length);
    const mounts = [...(container.volumeMounts ?? [])].sort((a, b) => b.mountPath.length - a.mountPath.length);
    for (const mount of mounts) {
      const mountPath = mount.mountPath.replace(/\/+$/, "") || "/";
      const host = this.volumes.get(mount.name);
      if (host === undefined) continue;
      const target = mount.subPath ? path.join(host, mount.subPath) : host;
      if (value === mountPath) return target;
      if (value.startsWith(mountPath === "/" ? "/" : `${mountPath}/`)) return path.join(target, value.slice(mountPath.length));
    }
    return value;
  }

  /** The container's environment from its spec (not yet rewritten). */
  async containerEnv(container: ContainerSpec): Promise<Record<string, string>> {
    const client = this.runner.client;
    const env: Record<string, string> = {};
    const fetched = new Map<string, Record<string, string> | undefined>();
    const source = async (rt: ResourceType, name: string) => {
      const key = `${rt.plural}/${name}`;
      if (!fetched.has(key)) {
        const object = await client.get<KubeObject>(rt, this.namespace, name);
        fetched.set(key, object ? decodeData(object) : undefined);
      }
      return fetched.get(key);
    };
    for (const from of container.envFrom ?? []) {
      const ref = from.configMapRef ?? from.secretRef;
      if (!ref) continue;
      const rt = from.configMapRef ? RESOURCES.configMaps : SECRETS;
      const data = await source(rt, ref.name);
      if (!data) {
        if (ref.optional) continue;
        throw new CreateError("CreateContainerConfigError", `${rt.kind.toLowerCase()} "${ref.name}" not found`);
      }
      for (const [key, value] of Object.entries(data)) env[`${from.prefix ?? ""}${key}`] = value;
    }
    for (const variable of container.env ?? []) {
      if (variable.value !== undefined || !variable.valueFrom) {
        env[variable.name] = expandVars(variable.value ?? "", env);
        continue;
      }
      const from = variable.valueFrom;
      const keyRef = from.secretKeyRef ?? from.configMapKeyRef;
      if (keyRef) {
        const rt = from.secretKeyRef ? SECRETS : RESOURCES.configMaps;
        const data = await source(rt, keyRef.name ?? "");
        if (!data || !(keyRef.key in data)) {
          if (keyRef.optional) continue;
          throw new CreateError(
            "CreateContainerConfigError",
            data ? `couldn't find key ${keyRef.key} in ${rt.kind} ${this.namespace}/${keyRef.name}` : `${rt.kind.toLowerCase()} "${keyRef.name}" not found`,
          );
        }
        env[variable.name] = data[keyRef.key];
      } else if (from.fieldRef) {
        env[variable.name] = this.fieldValue(from.fieldRef.fieldPath);
      } else {
        this.log.warn({ variable: variable.name }, "unsupported valueFrom: set to an empty string");
        env[variable.name] = "";
      }
    }
    return env;
  }

  private fieldValue(fieldPath: string): string {
    const meta = this.pod.metadata;
    const indexed = /^metadata\.(labels|annotations)\['(.*)'\]$/.exec(fieldPath);
    if (indexed) return (indexed[1] === "labels" ? meta.labels : meta.annotations)?.[indexed[2]] ?? "";
    switch (fieldPath) {
      case "metadata.name":
        return meta.name;
      case "metadata.namespace":
        return this.namespace;
      case "metadata.uid":
        return this.uid;
      case "spec.nodeName":
        return this.runner.nodeName;
      case "spec.serviceAccountName":
        return this.pod.spec.serviceAccountName ?? "default";
      case "status.hostIP":
      case "status.hostIPs":
        return HOST_IP;
      case "status.podIP":
      case "status.podIPs":
        return this.ip ?? "";
      default:
        this.log.warn({ fieldPath }, "unsupported fieldRef: set to an empty string");
        return "";
    }
  }

  update(pod: RunPod): void {
    this.pod = pod;
  }

  /** Stops every container (SIGTERM, SIGKILL after graceMs); shorter graces from later calls apply too. */
  stop(graceMs: number): Promise<void> {
    this.terminating = true;
    return Promise.all(this.containers.map((c) => c.stop(graceMs))).then(() => undefined);
  }

  /** Releases the address and the folders (the logs stay until the runner closes). */
  release(): void {
    this.gone = true;
    if (this.ip) releaseAddress(this.runner.claimDir, this.ip);
    rmSync(this.dir, { recursive: true, force: true });
  }

  private condition(type: string, ok: boolean, reason?: string, message?: string): PodCondition {
    const status = ok ? "True" : "False";
    let entry = this.conditionTimes.get(type);
    if (!entry || entry.status !== status) {
      entry = { status, time: kubeTime() };
      this.conditionTimes.set(type, entry);
    }
    return { type, status, ...(reason ? { reason } : {}), ...(message ? { message } : {}), lastTransitionTime: entry.time };
  }

  computeStatus(): Record<string, unknown> {
    const containers = this.containers;
    const allDone = containers.every((c) => c.done);
    const phase = allDone
      ? containers.every((c) => "terminated" in c.state && c.state.terminated.exitCode === 0)
        ? "Succeeded"
        : "Failed"
      : containers.some((c) => c.everStarted)
        ? "Running"
        : "Pending";
    const unready = containers.filter((c) => !c.ready).map((c) => c.spec.name);
    const ready = unready.length === 0;
    const notReadyReason = allDone ? "PodCompleted" : "ContainersNotReady";
    const notReadyMessage = allDone ? undefined : `containers with unready status: [${unready.join(" ")}]`;
    const scheduled = this.pod.status?.conditions?.find((c) => c.type === "PodScheduled");
    const conditions: PodCondition[] = [
      this.condition("PodReadyToStartContainers", this.sandboxReady && !allDone),
      this.condition("Initialized", true),
      this.condition("Ready", ready, ready ? undefined : notReadyReason, ready ? undefined : notReadyMessage),
      this.condition("ContainersReady", ready, ready ? undefined : notReadyReason, ready ? undefined : notReadyMessage),
      scheduled ?? this.condition("PodScheduled", true),
    ];
    return {
      ...(this.pod.metadata.generation !== undefined ? { observedGeneration: this.pod.metadata.generation } : {}),
      phase,
      conditions,
      hostIP: HOST_IP,
      hostIPs: [{ ip: HOST_IP }],
      ...(this.ip && this.sandboxReady ? { podIP: this.ip, podIPs: [{ ip: this.ip }] } : {}),
      startTime: this.startTime,
      containerStatuses: containers.map((c) => c.status()),
    };
  }

  /** Level-triggered status: computed from the local state when written, sent only when it changed. */
  statusChanged(): void {
    if (this.gone || this.runner.closing) return;
    if (this.writing) {
      this.writeAgain = true;
      return;
    }
    this.writing = true;
    void this.writeLoop();
  }

  private async writeLoop(): Promise<void> {
    let failures = 0;
    try {
      do {
        this.writeAgain = false;
        if (this.gone || this.runner.closing) return;
        const status = this.computeStatus();
        const text = JSON.stringify(status);
        if (text === this.lastWritten) continue;
        try {
          await this.runner.client.mergePatch(RESOURCES.pods, this.namespace, this.name, { status }, { subresource: "status", fieldManager: "pod-runner" });
          this.lastWritten = text;
          failures = 0;
        } catch (error) {
          if (isNotFound(error)) return;
          failures++;
          this.log.warn({ reason: describeKubeError(error) }, "status write failed; retrying");
          this.writeAgain = true;
          await sleep(Math.min(200 * 2 ** failures, 5000));
        }
      } while (this.writeAgain);
    } finally {
      this.writing = false;
    }
  }

  /** Writes the final status now (before the pod's deletion is finished). */
  async flushStatus(): Promise<void> {
    while (this.writing) await sleep(20);
    this.statusChanged();
    while (this.writing) await sleep(20);
  }
}

function decodeData(object: (KubeObject & { data?: Record<string, string>; stringData?: Record<string, string> }) | undefined): Record<string, string> {
  if (!object) return {};
  if (object.kind === "Secret") {
    return Object.fromEntries(Object.entries(object.data ?? {}).map(([k, v]) => [k, Buffer.from(v, "base64").toString()]));
  }
  return { ...(object.data ?? {}) };
}

// ---------------------------------------------------------------------------------------------

class Runner implements PodRunner {
  readonly client: KubeClient;
  readonly nodeName: string;
  readonly workDir: string;
  readonly claimDir: string;
  readonly claims: Record<string, string>;
  readonly commands: Record<string, string[]>;
  readonly backoffBaseMs: number;
  readonly backoffMaxMs: number;
  readonly maxProbePeriodSeconds: number | undefined;
  readonly log: Logger;
  closing = false;
  private readonly informer: Informer<RunPod>;
  private readonly pods = new Map<string, PodInstance>();
  /** Logs of pods gone, by namespace/name (kept until close). */
  private readonly retired = new Map<string, PodInstance>();
  private readonly queued = new Set<string>();
  private readonly running = new Map<string, Promise<void>>();
  private readonly ownWorkDir: boolean;
  private heartbeat: NodeJS.Timeout | undefined;
  private nodeUid = "";
  private readonly startedAt = kubeTime();
  private readonly capacity: Record<string, string>;
  private readonly labels: Record<string, string>;

  constructor(private readonly options: PodRunnerOptions) {
    this.client = new KubeClient(options.kubeConfig);
    this.nodeName = options.nodeName ?? `pod-runner-${randomBytes(4).toString("hex")}`;
    this.ownWorkDir = !options.workDir;
    this.workDir = options.workDir ?? mkdtempSync(path.join(tmpdir(), "corral-pod-runner-"));
    this.claimDir = options.claimDir;
    this.claims = options.volumes?.claims ?? {};
    this.commands = options.commands;
    this.backoffBaseMs = (options.backoffBaseSeconds ?? 10) * 1000;
    this.backoffMaxMs = (options.backoffMaxSeconds ?? 300) * 1000;
    this.maxProbePeriodSeconds = options.maxProbePeriodSeconds;
    this.log = (options.logger ?? createLogger({ name: "pod-runner", level: process.env.LOG_LEVEL ?? "warn", pretty: false })).child({ node: this.nodeName });
    this.capacity = { cpu: "16", memory: "64Gi", pods: "110", "ephemeral-storage": "100Gi", ...(options.capacity ?? {}) };
    this.labels = {
      "kubernetes.io/hostname": this.nodeName,
      "kubernetes.io/os": "linux",
      "kubernetes.io/arch": process.arch === "x64" ? "amd64" : process.arch,
      ...(options.labels ?? {}),
    };
    this.informer = new Informer<RunPod>({ client: this.client, resource: RESOURCES.pods, namespaces: options.namespaces, labelSelector: options.labelSelector, logger: this.log, backoff: { initialMs: 100, maxMs: 5000 } });
    this.informer.on((_type, pod) => this.kick(objectKey(pod)));
  }

  async start(): Promise<void> {
    await this.registerNode();
    await this.renewLease();
    this.heartbeat = setInterval(() => void this.beat(), (this.options.leaseRenewSeconds ?? 10) * 1000);
    this.informer.start();
    await this.informer.waitForSync();
  }

  private nodeStatus(): Record<string, unknown> {
    const now = kubeTime();
    const condition = (type: string, status: string, reason: string, message: string) => ({
      type,
      status,
      reason,
      message,
      lastHeartbeatTime: now,
      lastTransitionTime: this.startedAt,
    });
    return {
      capacity: this.capacity,
      allocatable: this.capacity,
      conditions: [
        condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
      ],
      addresses: [
        { type: "InternalIP", address: HOST_IP },
        { type: "Hostname", address: this.nodeName },
      ],
      daemonEndpoints: { kubeletEndpoint: { Port: 0 } },
      nodeInfo: {
        machineID: "",
        systemUUID: "",
        bootID: "",
        kernelVersion: "",
        osImage: "corral pod runner",
        containerRuntimeVersion: "pod-runner://1",
        kubeletVersion: KUBELET_VERSION,
        kubeProxyVersion: "",
        operatingSystem: "linux",
        architecture: this.labels["kubernetes.io/arch"],
      },
    };
  }

  private async registerNode(): Promise<void> {
    const node = { apiVersion: "v1", kind: "Node", metadata: { name: this.nodeName, labels: this.labels }, spec: {}, status: this.nodeStatus() };
    let created: KubeObject;
    try {
      created = await this.client.create(NODES, undefined, node);
    } catch (error) {
      if (!isConflict(error)) throw new Error(`registering Node ${this.nodeName}`, { cause: error });
      // A Node of this name is left over: take it over.
      created = await this.client.mergePatch(NODES, undefined, this.nodeName, { metadata: { labels: this.labels } });
    }
    this.nodeUid = created.metadata.uid ?? "";
    // Status on create is kept, but write it through the subresource too (a taken-over Node).
    await this.client.mergePatch(NODES, undefined, this.nodeName, { status: this.nodeStatus() }, { subresource: "status" });
  }

  private async renewLease(): Promise<void> {
    const renewTime = kubeMicroTime();
    try {
      await this.client.mergePatch(RESOURCES.leases, LEASE_NAMESPACE, this.nodeName, { spec: { holderIdentity: this.nodeName, renewTime } });
    } catch (error) {
      if (!isNotFound(error)) throw error;
      await this.client.create(RESOURCES.leases, LEASE_NAMESPACE, {
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
        metadata: {
          name: this.nodeName,
          namespace: LEASE_NAMESPACE,
          ownerReferences: [{ apiVersion: "v1", kind: "Node", name: this.nodeName, uid: this.nodeUid }],
        },
        spec: { holderIdentity: this.nodeName, leaseDurationSeconds: 40, renewTime },
      });
    }
  }

  private async beat(): Promise<void> {
    if (this.closing) return;
    try {
      await this.renewLease();
      await this.client.mergePatch(NODES, undefined, this.nodeName, { status: { conditions: (this.nodeStatus() as { conditions: unknown }).conditions } }, { subresource: "status" });
    } catch (error) {
      if (isNotFound(error) && !this.closing) {
        this.log.warn("the Node was deleted; registering it again");
        await this.registerNode().catch((e: unknown) => this.log.warn({ reason: describeKubeError(e) }, "re-registering failed"));
        return;
      }
      this.log.warn({ reason: describeKubeError(error) }, "heartbeat failed");
    }
  }

  /** One sync per pod key at a time; events meanwhile coalesce into one more sync. */
  private kick(key: string): void {
    if (this.closing) return;
    if (this.running.has(key)) {
      this.queued.add(key);
      return;
    }
    const work = (async () => {
      do {
        this.queued.delete(key);
        try {
          await this.sync(key);
        } catch (error) {
          this.log.warn({ pod: key, reason: describeKubeError(error) }, "pod sync failed; retrying");
          setTimeout(() => this.kick(key), 1000).unref();
        }
      } while (this.queued.has(key) && !this.closing);
    })().finally(() => this.running.delete(key));
    this.running.set(key, work);
  }

  private async sync(key: string): Promise<void> {
    const [namespace, name] = [key.slice(0, key.indexOf("/")), key.slice(key.indexOf("/") + 1)];
    const pod = this.informer.get(namespace, name);
    let local = this.pods.get(key);
    if (local && (!pod || pod.metadata.uid !== local.uid)) {
      // Deleted without us (grace 0 / force) or replaced by a new pod of the same name.
      await local.stop(1000);
      this.retire(local);
      local = undefined;
    }
    if (!pod) return;
    if (!pod.spec.nodeName) return this.schedule(pod);
    if (pod.spec.nodeName !== this.nodeName) return;
    if (pod.metadata.deletionTimestamp) {
      if (local) {
        local.update(pod);
        const graceMs = (pod.metadata.deletionGracePeriodSeconds ?? pod.spec.terminationGracePeriodSeconds ?? 30) * 1000;
        await local.stop(graceMs);
        await local.flushStatus().catch(() => undefined);
        this.retire(local);
      }
      await this.finishDeletion(pod);
      return;
    }
    if (local) {
      local.update(pod);
      local.statusChanged();
      return;
    }
    const phase = pod.status?.phase;
    if (phase === "Succeeded" || phase === "Failed") return; // terminal before this runner saw it
    local = new PodInstance(this, pod);
    this.pods.set(key, local);
    await local.start();
  }

  private retire(local: PodInstance): void {
    local.release();
    if (this.pods.get(local.key) === local) this.pods.delete(local.key);
    this.retired.set(local.key, local);
    // Resources were freed: pending pods may fit now.
    for (const pod of this.informer.list()) if (!pod.spec.nodeName) this.kick(objectKey(pod));
  }

  private async finishDeletion(pod: RunPod): Promise<void> {
    try {
      await this.client.request(HttpMethod.DELETE, resourcePath(RESOURCES.pods, pod.metadata.namespace, pod.metadata.name), {
        body: { apiVersion: "v1", kind: "DeleteOptions", gracePeriodSeconds: 0, preconditions: { uid: pod.metadata.uid } },
      });
    } catch (error) {
      if (!isNotFound(error) && !isConflict(error)) throw error;
    }
  }

  /** The scheduler's part: bind the pod here when it fits, else say why it is unschedulable. */
  private async schedule(pod: RunPod): Promise<void> {
    if (pod.metadata.deletionTimestamp) return;
    if (pod.spec.schedulerName && pod.spec.schedulerName !== "default-scheduler") return;
    const why = this.unfit(pod);
    if (why) {
      const message = `0/1 nodes are available: 1 ${why}.`;
      const current = pod.status?.conditions?.find((c) => c.type === "PodScheduled");
      if (current?.status === "False" && current.message === message) return;
      await this.client.mergePatch(
        RESOURCES.pods,
        pod.metadata.namespace,
        pod.metadata.name,
        { status: { conditions: [{ type: "PodScheduled", status: "False", reason: "Unschedulable", message, lastTransitionTime: kubeTime() }] } },
        { subresource: "status", fieldManager: "pod-runner" },
      );
      return;
    }
    try {
      await this.client.request(HttpMethod.POST, resourcePath(RESOURCES.pods, pod.metadata.namespace, pod.metadata.name, "binding"), {
        body: { apiVersion: "v1", kind: "Binding", metadata: { name: pod.metadata.name, namespace: pod.metadata.namespace, uid: pod.metadata.uid }, target: { apiVersion: "v1", kind: "Node", name: this.nodeName } },
      });
    } catch (error) {
      if (!isNotFound(error) && !isConflict(error)) throw error; // gone, or bound meanwhile
    }
  }

  private unfit(pod: RunPod): string | undefined {
    for (const [key, value] of Object.entries(pod.spec.nodeSelector ?? {})) {
      if (this.labels[key] !== value) return "node(s) didn't match Pod's node affinity/selector";
    }
    const requests = (p: RunPod) => {
      const sum: Record<string, number> = {};
      for (const c of p.spec.containers) {
        for (const [resource, value] of Object.entries(c.resources?.requests ?? c.resources?.limits ?? {})) sum[resource] = (sum[resource] ?? 0) + parseQuantity(value);
      }
      return sum;
    };
    const used: Record<string, number> = { pods: 0 };
    for (const other of this.informer.list()) {
      if (other.spec.nodeName !== this.nodeName || other.status?.phase === "Succeeded" || other.status?.phase === "Failed") continue;
      used.pods++;
      for (const [resource, amount] of Object.entries(requests(other))) used[resource] = (used[resource] ?? 0) + amount;
    }
    if (used.pods + 1 > parseQuantity(this.capacity.pods)) return "Too many pods";
    for (const [resource, amount] of Object.entries(requests(pod))) {
      if (amount > 0 && (used[resource] ?? 0) + amount > parseQuantity(this.capacity[resource] ?? "0")) return `Insufficient ${resource}`;
    }
    return undefined;
  }

  logs(namespace: string, pod: string, options: { container?: string; previous?: boolean } = {}): string {
    const key = `${namespace}/${pod}`;
    const local = this.pods.get(key) ?? this.retired.get(key);
    if (!local) return "";
    const container = options.container ? local.containers.find((c) => c.spec.name === options.container) : local.containers[0];
    return container?.readLog(options.previous ?? false) ?? "";
  }

  kill(namespace: string, pod: string, signal: NodeJS.Signals, container?: string): boolean {
    const local = this.pods.get(`${namespace}/${pod}`);
    const target = container ? local?.containers.find((c) => c.spec.name === container) : local?.containers[0];
    return target?.sendSignal(signal) ?? false;
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    clearInterval(this.heartbeat);
    await this.informer.stop();
    const graceMs = (this.options.closeGraceSeconds ?? 2) * 1000;
    await Promise.all([...this.pods.values()].map((p) => p.stop(graceMs)));
    await Promise.allSettled([...this.running.values()]);
    for (const local of [...this.pods.values()]) this.retire(local);
    if (this.options.deletePodsOnClose ?? true) {
      for (const pod of this.informer.list()) {
        if (pod.spec.nodeName !== this.nodeName) continue;
        await this.finishDeletion(pod).catch((error: unknown) => this.log.warn({ pod: objectKey(pod), reason: describeKubeError(error) }, "deleting a pod failed"));
      }
    }
    await this.client.delete(RESOURCES.leases, LEASE_NAMESPACE, this.nodeName).catch(() => undefined);
    await this.client.delete(NODES, undefined, this.nodeName).catch(() => undefined);
    if (this.ownWorkDir) rmSync(this.workDir, { recursive: true, force: true });
  }
}

/** Registers the Node, starts watching its namespaces' pods, and resolves once the first list is done. */
export async function startPodRunner(options: PodRunnerOptions): Promise<PodRunner> {
  const runner = new Runner(options);
  try {
    await runner.start();
  } catch (error) {
    await runner.close().catch(() => undefined);
    throw error;
  }
  return runner;
}
