import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import type { Engine } from "../engine.js";
import { kvCacheUsage, podLoad, type RuntimeMetrics } from "../metrics.js";
import type { RuntimeState } from "../state.js";

export interface SystemRouteOptions {
  state: RuntimeState;
  metrics: RuntimeMetrics;
  version: string;
}

/** Health and introspection: /healthz, /readyz, /info and /metrics. */
export const systemRoutes: FastifyPluginAsyncTypebox<SystemRouteOptions> = async (app, options) => {
  const { state, metrics } = options;

  app.get("/healthz", async () => ({ status: "alive" }));

  app.get("/readyz", async (_request, reply) => {
    if (state.ready) return { status: "ready" };
    reply.code(503);
    return { detail: state.failure ? `model failed to load: ${state.failure}` : `model is ${state.phase}` };
  });

  app.get("/info", async () => await runtimeInfo(state, options.version));

  // The load gauges read the engine themselves as the registry is collected (runtime/metrics.ts).
  app.get("/metrics", async (_request, reply) => {
    reply.header("content-type", metrics.registry.contentType);
    return metrics.registry.metrics();
  });
};

/** The body of /info: the model, the engine's settings and load, memory and progress. */
async function runtimeInfo(state: RuntimeState, version: string) {
  const engine = state.engine;
  const summary = state.summary;
  const llama = engine?.llama;
  const vram = llama && llama.gpu !== false ? await llama.getVramState().catch(() => undefined) : undefined;
  return {
    model_id: state.modelId,
    source: state.source,
    state: state.phase,
    failure: state.failure ?? null,
    file: summary?.path ?? null,
    size_bytes: summary?.fileSize ?? null,
    architecture: summary?.architecture ?? null,
    name: summary?.name ?? null,
    quantization: summary?.quantization ?? null,
    parameters: summary?.parameterCount ?? null,
    trained_context_size: summary?.contextLength ?? null,
    context_size: engine?.contextSize ?? null,
    chat_template: engine?.chatTemplateName ?? null,
    parallel: engine?.parallel ?? null,
    slots_busy: engine?.slotsBusy ?? 0,
    queue_depth: engine?.queueDepth ?? 0,
    // What the operator's autoscaler reads (corral_runtime_load): slots_busy + queue_depth.
    load: podLoad(engine),
    // The KV figure gateways read (corral_runtime_kv_cache_usage_ratio): cells held by the
    // sequences serving requests now, of all the context's cells.
    kv_cache_usage: kvCacheUsage(engine),
    kv_cache_cells_used: engine?.kvCacheCells.used ?? 0,
    kv_cache_cells_total: engine?.kvCacheCells.total ?? null,
    in_flight: state.inFlight,
    arriving: state.arriving,
    threads: state.threads,
    backend: llama ? (llama.gpu === false ? "cpu" : llama.gpu) : null,
    llama_build: llama?.buildType ?? null,
    // What a decode step costs, as the batch loop has learned it (it decides how many waiting
    // prompts join a step); null until steps of different sizes have run.
    step_cost: stepCostOf(engine),
    devices: llama && llama.gpu !== false ? await llama.getGpuDeviceNames().catch(() => []) : [],
    memory: {
      rss_bytes: process.memoryUsage().rss,
      vram_used_bytes: vram?.used ?? null,
      vram_total_bytes: vram?.total ?? null,
    },
    progress: {
      bytes_done: state.download?.bytesDone ?? null,
      bytes_total: state.download?.bytesTotal ?? null,
      load_fraction: state.loadFraction,
    },
    defaults: state.defaults,
    version,
  };
}

function stepCostOf(engine: Engine | undefined): { fixed_ms: number; per_token_ms: number } | null {
  const estimate = engine?.stepCost;
  if (estimate === undefined) return null;
  return { fixed_ms: Math.round(estimate.fixedSeconds * 1e6) / 1e3, per_token_ms: Math.round(estimate.secondsPerToken * 1e6) / 1e3 };
}
