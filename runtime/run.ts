import path from "node:path";
import { createLogger, type Logger } from "../common/logger.js";
import { createHttpServer, type CorralApp } from "../common/http.js";
import { VERSION } from "../common/version.js";
import { GgufError } from "../common/gguf/reader.js";
import type { RuntimeConfig } from "./config.js";
import { usableCpus } from "./cpus.js";
import { Engine } from "./engine.js";
import { createRuntimeMetrics, type RuntimeMetrics } from "./metrics.js";
import { defaultModelDir, parseModelSource, resolveModel, type ModelSource } from "./model-source.js";
import { parseDefaults } from "./sampling.js";
import { RuntimeState } from "./state.js";
import { runtimeApp } from "./app.js";

export interface RuntimeHandle {
  /** Base URL the server listens on, e.g. http://127.0.0.1:41234. */
  url: string;
  port: number;
  state: RuntimeState;
  logger: Logger;
  /** Settles when the model is ready; rejects with the reason it could not be loaded. */
  loaded: Promise<void>;
  /** SIGTERM behaviour: refuse new work, let in-flight work finish within drainSeconds, stop. */
  drain(): Promise<void>;
  /** Stops at once (in-flight generations are aborted). */
  close(): Promise<void>;
}

/** Public model id from a source when none is given: `hf:org/repo/x.gguf` -> `org/repo`. */
export function modelIdFromSource(source: string, parsed: ModelSource): string {
  if (source.startsWith("hf:")) return source.slice(3).split("/").slice(0, 2).join("/");
  if (parsed.kind === "builtin") return parsed.name;
  const file = parsed.kind === "file" ? parsed.path : new URL(parsed.url).pathname;
  return path.basename(file).replace(/\.gguf$/i, "");
}

/** Wires the runtime: config -> server listening -> model resolved and loaded in the background. */
export async function run(config: RuntimeConfig, options: { logger?: Logger } = {}): Promise<RuntimeHandle> {
  const logger = options.logger ?? createLogger({ name: "corral-runtime", level: config.logLevel });
  const source = parseModelSource(config.model);
  const defaults = parseDefaults(config.defaults);
  const threads = config.threads ?? usableCpus();
  const modelId = config.modelId ?? modelIdFromSource(config.model, source);
  const state = new RuntimeState(modelId, config.model, defaults, threads);
  const metrics = createRuntimeMetrics(modelId, () => state.engine);
  const log = logger.child({ model: modelId });

  // A broken local file is reported before anything listens: one clear message, no server.
  if (source.kind === "file") state.summary = await resolveModel(source, { modelDir: "", logger: log });

  const app = createHttpServer({ logger: log, bodyLimitBytes: config.bodyLimitBytes });
  await app.register(runtimeApp, { state, metrics, maxBatchPrompts: config.maxBatchPrompts, version: VERSION });
  await app.listen({ host: config.host, port: config.port });
  const address = app.server.address();
  const port = typeof address === "object" && address ? address.port : config.port;
  const host = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host;
  log.info({ port, threads, parallel: config.parallel }, "runtime listening");

  const loadAbort = new AbortController();
  const loaded = loadModel({ config, source, state, metrics, threads, log, signal: loadAbort.signal });
  loaded.catch((error: unknown) => {
    state.phase = "failed";
    state.failure = error instanceof GgufError ? error.message : (error as Error).message;
  });

  let stopping: Promise<void> | undefined;
  const stop = (drainSeconds: number) => stopRuntime({ drainSeconds, state, log, app, loaded, loadAbort });

  return {
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    port,
    state,
    logger: log,
    loaded,
    drain: () => (stopping ??= stop(config.drainSeconds)),
    close: () => (stopping ??= stop(0)),
  };
}

/** What loading the model needs from run(). */
interface ModelLoad {
  config: RuntimeConfig;
  source: ModelSource;
  state: RuntimeState;
  metrics: RuntimeMetrics;
  threads: number;
  log: Logger;
  /** Aborts a download when the runtime stops first. */
  signal: AbortSignal;
}

/**
 * Downloads the model if it is not local yet, then loads it into an engine; runs while the server
 * already answers (/health shows the phase and progress). A runtime stopped during the load
 * disposes of the engine instead of serving with it.
 */
async function loadModel({ config, source, state, metrics, threads, log, signal }: ModelLoad): Promise<void> {
  if (!state.summary) {
    state.phase = "downloading";
    state.summary = await resolveModel(source, {
      modelDir: config.modelDir ?? defaultModelDir(),
      logger: log,
      hfToken: config.hfToken,
      signal,
      onProgress: (progress) => (state.download = progress),
    });
  }
  state.phase = "loading";
  const started = performance.now();
  const engine = await Engine.load({
    modelPath: state.summary.path,
    parallel: config.parallel,
    contextSize: config.contextSize,
    batchSize: config.batchSize,
    threads,
    gpu: config.gpu,
    gpuLayers: config.gpuLayers,
    maxQueue: config.maxQueue,
    promptAdmission: config.promptAdmission,
    logger: log,
    onLoadProgress: (fraction) => (state.loadFraction = fraction),
    arriving: () => state.arriving,
    onDecodeStep: (tokens, sequences, seconds) => {
      metrics.decodeStepSeconds.observe(seconds);
      metrics.decodeStepSequences.observe(sequences);
      metrics.decodeStepTokens.inc(tokens);
    },
  });
  if (state.phase !== "loading") {
    await engine.dispose();
    return;
  }
  state.engine = engine;
  state.loadFraction = 1;
  state.phase = "ready";
  log.info(
    {
      loadMs: Math.round(performance.now() - started),
      contextSize: engine.contextSize,
      backend: engine.llama.gpu === false ? "cpu" : engine.llama.gpu,
      chatTemplate: engine.chatTemplateName,
    },
    "model ready",
  );
}

/**
 * The stop sequence: refuse new work (503), let in-flight work finish within drainSeconds, abort
 * what is left past the bound, then close the server and free the model.
 */
async function stopRuntime(parts: { drainSeconds: number; state: RuntimeState; log: Logger; app: CorralApp; loaded: Promise<void>; loadAbort: AbortController }): Promise<void> {
  const { drainSeconds, state, log, app, loaded, loadAbort } = parts;
  state.phase = "draining";
  loadAbort.abort(new Error("runtime is stopping"));
  log.info({ inFlight: state.inFlight, drainSeconds }, "draining");
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, drainSeconds * 1000)));
  await Promise.race([state.idle(), deadline]);
  clearTimeout(timer);
  if (state.inFlight > 0) {
    log.warn({ inFlight: state.inFlight }, "drain deadline passed; aborting what is left");
    state.engine?.stopAdmitting("runtime is shutting down");
    state.abortAll("runtime is shutting down");
    await Promise.race([state.idle(), new Promise((resolve) => setTimeout(resolve, 2000))]);
  }
  await app.close();
  await loaded.catch(() => undefined);
  await state.engine?.dispose();
  state.engine = undefined;
  log.info("runtime stopped");
}
