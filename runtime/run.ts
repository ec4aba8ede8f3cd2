import path from "node:path";
import { createLogger, type Logger } from "../common/logger.js";
import { createHttpServer } from "../common/http.js";
import { VERSION } from "../common/version.js";
import { GgufError } from "../common/gguf/reader.js";
import type { RuntimeConfig } from "./config.js";
import { usableCpus } from "./cpus.js";
import { Engine } from "./engine.js";
import { createRuntimeMetrics } from "./metrics.js";
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
  const metrics = createRuntimeMetrics(modelId);
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
  const loaded = (async () => {
    if (!state.summary) {
      state.phase = "downloading";
      state.summary = await resolveModel(source, {
        modelDir: config.modelDir ?? defaultModelDir(),
        logger: log,
        hfToken: config.hfToken,
        signal: loadAbort.signal,
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
  })();
  loaded.catch((error: unknown) => {
    state.phase = "failed";
    state.failure = error instanceof GgufError ? error.message : (error as Error).message;
  });

  let stopping: Promise<void> | undefined;
  const stop = async (drainSeconds: number) => {
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
  };

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
