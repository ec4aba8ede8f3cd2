import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { PACKAGE_ROOT } from "../../common/package-root.js";
import { waitFor } from "../../test/helpers/wait.js";
import type { Catalog } from "../catalog.js";
import { errorOf } from "./local-model.js";
import { LocalBackend, type LocalBackendOptions } from "./local.js";
import { ModelsBusyError, ModelStartError } from "./types.js";

const FAKE_CLI = path.join(PACKAGE_ROOT, "test/router/fixtures/fake-runtime-cli.mjs");

const catalog: Catalog = {
  defaultModel: "a",
  models: [
    { id: "a", source: "fake:ok", context_size: 256 },
    { id: "org/b", source: "fake:ok", defaults: { temperature: 0.1 } },
    { id: "broken", source: "fake:fail" },
    { id: "broken2", source: "fake:fail" },
    { id: "big", source: "fake:download" },
  ],
};

const backends: LocalBackend[] = [];
let pidDir = "";
afterEach(async () => {
  await Promise.all(backends.splice(0).map((backend) => backend.close()));
  if (pidDir) rmSync(pidDir, { recursive: true, force: true });
  delete process.env.FAKE_PID_DIR;
});

function makeBackend(overrides: Partial<LocalBackendOptions> = {}): LocalBackend {
  pidDir = mkdtempSync(path.join(os.tmpdir(), "corral-local-"));
  process.env.FAKE_PID_DIR = pidDir;
  const backend = new LocalBackend({
    catalog,
    initialModel: null,
    maxModels: 2,
    runtimeEntry: FAKE_CLI,
    runtime: { threads: 1, parallel: 2, logLevel: "warn", bodyLimitBytes: 4096, maxBatchPrompts: 8, drainSeconds: 1 },
    logger: pino({ level: "silent" }),
    logSink: null,
    timing: { startingProbeMs: 20, readyProbeMs: 100, backoffBaseMs: 50, backoffMaxMs: 200, stopTimeoutMs: 3000 },
    ...overrides,
  });
  backends.push(backend);
  return backend;
}

/** Pids of the children started for a model, oldest first. */
function pidsOf(modelId: string): number[] {
  return readdirSync(pidDir)
    .filter((name) => name.startsWith(`${modelId.replaceAll("/", "_")}.`))
    .map((name) => Number(name.split(".").pop()));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("LocalBackend", () => {
  it("starts the initial model as the current one on a loopback port, with the runtime flags", async () => {
    const backend = makeBackend({ initialModel: "a" });
    await backend.start();
    expect(backend.current()).toBe("a");
    expect(backend.status("a").state).toBe("starting");
    await backend.ensureReady("a", AbortSignal.timeout(10_000));
    const [endpoint] = backend.readyEndpoints("a");
    expect(endpoint!.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const info = (await (await fetch(`${endpoint!.url}/info`)).json()) as { args: string[] };
    const args = info.args.join(" ");
    expect(args).toMatch(/--model fake:ok --model-id a --host 127\.0\.0\.1 --port \d+/);
    expect(args).toContain("--threads 1");
    expect(args).toContain("--parallel 2");
    expect(args).toContain("--context-size 256");
    expect(args).toContain("--body-limit-bytes 4096");
    expect(args).toContain("--max-batch-prompts 8");
  });

  it("passes a model's sampling defaults from the catalog", async () => {
    const backend = makeBackend();
    await backend.start();
    await backend.load("org/b", AbortSignal.timeout(10_000));
    expect(backend.current()).toBe("org/b");
    const info = (await (await fetch(`${backend.readyEndpoints("org/b")[0]!.url}/info`)).json()) as { args: string[] };
    expect(info.args.join(" ")).toContain('--defaults {"temperature":0.1}');
  });

  it("reports download progress while the runtime downloads", async () => {
    process.env.FAKE_READY_AFTER_MS = "400";
    try {
      const backend = makeBackend();
      await backend.start();
      const ready = backend.ensureReady("big", AbortSignal.timeout(10_000));
      await waitFor(() => backend.status("big").state === "downloading" && backend.status("big").progress !== null, { message: "downloading", timeoutMs: 10_000 });
      expect(backend.status("big").progress).toMatchObject({ bytes_total: 1000 });
      await ready;
      expect(backend.status("big")).toMatchObject({ state: "ready", progress: null });
    } finally {
      delete process.env.FAKE_READY_AFTER_MS;
    }
  });

  it("a model whose runtime exits before it is ready is failed at once, with the runtime's reason; requests fail fast until a load retries", async () => {
    const backend = makeBackend();
    await backend.start();
    const error = await backend.ensureReady("broken", AbortSignal.timeout(10_000)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelStartError);
    expect((error as Error).message).toMatch(/^model broken could not be started: model could not be loaded: no such file: \/nope\.gguf \(runtime exited with code 1\)$/);
    expect(backend.status("broken")).toMatchObject({ state: "failed", message: (error as Error).message });
    expect(pidsOf("broken")).toHaveLength(1);
    // A request does not start it again: the same reason, at once.
    await expect(backend.ensureReady("broken", AbortSignal.timeout(10_000))).rejects.toThrow((error as Error).message);
    expect(pidsOf("broken")).toHaveLength(1);
    // A load tries again.
    await expect(backend.load("broken", AbortSignal.timeout(10_000))).rejects.toBeInstanceOf(ModelStartError);
    expect(pidsOf("broken")).toHaveLength(2);
  });

  it("concurrent loads of models that cannot load leave the working model current and running", async () => {
    const backend = makeBackend({ initialModel: "a" });
    await backend.start();
    await backend.ensureReady("a", AbortSignal.timeout(10_000));
    const [pid] = pidsOf("a");
    const started = Date.now();
    const loads = ["broken", "broken2", "broken", "broken2", "broken"].map((id) => backend.load(id, AbortSignal.timeout(10_000)).catch((e: unknown) => e));
    expect(backend.current()).toBe("a");
    const errors = await Promise.all(loads);
    expect(Date.now() - started).toBeLessThan(5000);
    for (const error of errors) expect(error).toBeInstanceOf(ModelStartError);
    expect(backend.current()).toBe("a");
    expect(backend.status("a").state).toBe("ready");
    expect(pidsOf("a")).toEqual([pid]);
    expect(alive(pid!)).toBe(true);
    for (const id of ["broken", "broken2"]) expect(backend.status(id)).toMatchObject({ state: "failed", message: expect.stringMatching(/no such file/) });
  });

  it("with --max-models 1, a load that fails starts the current model it made room for again", async () => {
    const backend = makeBackend({ initialModel: "a", maxModels: 1 });
    await backend.start();
    await backend.ensureReady("a", AbortSignal.timeout(10_000));
    await expect(backend.load("broken", AbortSignal.timeout(10_000))).rejects.toBeInstanceOf(ModelStartError);
    expect(backend.current()).toBe("a");
    await backend.ensureReady("a", AbortSignal.timeout(10_000));
    expect(backend.status("a").state).toBe("ready");
  });

  it("a load that fails leaves the previous model current", async () => {
    const backend = makeBackend({ initialModel: "a" });
    await backend.start();
    await backend.ensureReady("a", AbortSignal.timeout(10_000));
    await expect(backend.load("broken", AbortSignal.timeout(10_000))).rejects.toBeInstanceOf(ModelStartError);
    expect(backend.current()).toBe("a");
    expect(backend.readyEndpoints("a")).toHaveLength(1);
  });

  it("takes an endpoint that refuses connections out of rotation at once, and routes to the restarted one", async () => {
    const backend = makeBackend({ initialModel: "a" });
    await backend.start();
    await backend.ensureReady("a", AbortSignal.timeout(10_000));
    const [dead] = backend.readyEndpoints("a");
    process.kill(backend.runtimePid("a")!, "SIGKILL");
    backend.reportFailure("a", dead!, Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }));
    expect(backend.readyEndpoints("a")).toEqual([]);
    await backend.ensureReady("a", AbortSignal.timeout(10_000));
    expect(backend.readyEndpoints("a")[0]!.id).not.toBe(dead!.id);
  });

  it("restarts a runtime that was killed, on a new endpoint", async () => {
    const backend = makeBackend();
    await backend.start();
    await backend.ensureReady("a", AbortSignal.timeout(10_000));
    const before = backend.readyEndpoints("a")[0]!;
    const [pid] = pidsOf("a");
    process.kill(pid!, "SIGKILL");
    await waitFor(() => backend.readyEndpoints("a").length === 0, { message: "endpoint removed", timeoutMs: 10_000 });
    expect(["restarting", "starting", "loading"]).toContain(backend.status("a").state);
    await waitFor(() => backend.status("a").state === "ready", { message: "ready again", timeoutMs: 10_000 });
    const after = backend.readyEndpoints("a")[0]!;
    expect(after.id).not.toBe(before.id);
    expect((await fetch(`${after.url}/readyz`)).status).toBe(200);
  });

  it("stops the runtime on unload; the current model is then none", async () => {
    const backend = makeBackend();
    await backend.start();
    await backend.load("a", AbortSignal.timeout(10_000));
    const [pid] = pidsOf("a");
    await backend.unload("a");
    expect(backend.current()).toBeNull();
    expect(backend.status("a").state).toBe("not_loaded");
    expect(alive(pid!)).toBe(false);
  });

  it("keeps at most maxModels runtimes, stopping the least recently used", async () => {
    const backend = makeBackend({ maxModels: 1 });
    await backend.start();
    await backend.load("a", AbortSignal.timeout(10_000));
    await backend.load("org/b", AbortSignal.timeout(10_000));
    expect(backend.status("a").state).toBe("not_loaded");
    expect(backend.status("org/b").state).toBe("ready");
  });

  it("stops only idle runtimes to make room; when every loaded model is busy, a new one is refused at once", async () => {
    const backend = makeBackend({ maxModels: 1 });
    let busy = 1;
    backend.trackInFlight((endpoint) => (endpoint.id.startsWith("a#") ? busy : 0));
    await backend.start();
    await backend.load("a", AbortSignal.timeout(10_000));
    const [pid] = pidsOf("a");
    const error = await backend.ensureReady("org/b", AbortSignal.timeout(10_000)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelsBusyError);
    expect((error as Error).message).toBe("model org/b cannot start now: all loaded models are busy and --max-models 1 is reached; try again shortly");
    await expect(backend.load("org/b", AbortSignal.timeout(10_000))).rejects.toBeInstanceOf(ModelsBusyError);
    expect(backend.status("org/b").state).toBe("not_loaded");
    expect(pidsOf("org/b")).toEqual([]);
    expect(backend.status("a").state).toBe("ready");
    expect(alive(pid!)).toBe(true);
    busy = 0;
    await backend.ensureReady("org/b", AbortSignal.timeout(10_000));
    expect(backend.status("a").state).toBe("not_loaded");
    expect(backend.current()).toBe("a");
  });

  it("gives runtime children the router's environment without its secrets", async () => {
    const secrets = { CORRAL_API_KEYS: "sk-router-secret", CORRAL_API_KEYS_FILE: "/etc/corral/keys", REDIS_URL: "redis://:hunter2@redis:6379", KUBECONFIG: "/root/.kube/config" };
    Object.assign(process.env, secrets);
    try {
      const backend = makeBackend();
      await backend.start();
      await backend.ensureReady("a", AbortSignal.timeout(10_000));
      const environ = readFileSync(`/proc/${backend.runtimePid("a")}/environ`, "utf8");
      const names = environ.split("\0").map((entry) => entry.slice(0, entry.indexOf("=")));
      for (const name of Object.keys(secrets)) expect(names).not.toContain(name);
      for (const value of Object.values(secrets)) expect(environ).not.toContain(value);
      expect(environ.split("\0")).toEqual(expect.arrayContaining([`FAKE_PID_DIR=${pidDir}`, "UV_THREADPOOL_SIZE=1"]));
      // The router's own environment is unchanged.
      expect(process.env.CORRAL_API_KEYS).toBe("sk-router-secret");
    } finally {
      for (const name of Object.keys(secrets)) delete process.env[name];
    }
  });

  it("stops every runtime on close", async () => {
    const backend = makeBackend();
    await backend.start();
    await backend.ensureReady("a", AbortSignal.timeout(10_000));
    await backend.ensureReady("org/b", AbortSignal.timeout(10_000));
    const pids = [...pidsOf("a"), ...pidsOf("org/b")];
    await backend.close();
    expect(pids.map(alive)).toEqual([false, false]);
  });

  it("leaves no orphan when the router process is killed with SIGKILL", async () => {
    // A separate router-like process (the built backend) that starts one runtime child.
    pidDir = mkdtempSync(path.join(os.tmpdir(), "corral-orphan-"));
    const script = `
      import { pino } from "pino";
      import { LocalBackend } from ${JSON.stringify(path.join(PACKAGE_ROOT, "dist/router/backends/local.js"))};
      const backend = new LocalBackend({
        catalog: { defaultModel: "a", models: [{ id: "a", source: "fake:ok" }] },
        initialModel: "a", maxModels: 1, runtimeEntry: ${JSON.stringify(FAKE_CLI)},
        runtime: { logLevel: "warn", bodyLimitBytes: 4096, maxBatchPrompts: 8, drainSeconds: 1 },
        logger: pino({ level: "silent" }), logSink: null, timing: { startingProbeMs: 20 },
      });
      await backend.start();
      await backend.ensureReady("a", AbortSignal.timeout(10000));
      console.log("ready");
      setInterval(() => {}, 1000);
    `;
    const parent = spawn(process.execPath, ["--input-type=module", "-e", script], {
      cwd: PACKAGE_ROOT,
      env: { ...process.env, FAKE_PID_DIR: pidDir },
      stdio: ["ignore", "pipe", "inherit"],
    });
    await new Promise<void>((resolve, reject) => {
      parent.stdout!.on("data", (chunk: Buffer) => chunk.toString().includes("ready") && resolve());
      parent.once("exit", (code) => reject(new Error(`router process exited with ${code}`)));
    });
    const [child] = pidsOf("a");
    expect(alive(child!)).toBe(true);
    parent.kill("SIGKILL");
    await waitFor(() => !alive(child!), { message: "the runtime child to exit after its parent was killed", timeoutMs: 10_000 });
  });
});

describe("errorOf", () => {
  it("reads pino error lines and plain stderr", () => {
    expect(errorOf('{"level":60,"msg":"model could not be loaded","reason":"bad file"}', false)).toBe("model could not be loaded: bad file");
    expect(errorOf('{"level":30,"msg":"fine"}', false)).toBeNull();
    expect(errorOf("Error: boom", true)).toBe("Error: boom");
    expect(errorOf("plain stdout", false)).toBeNull();
  });
});
