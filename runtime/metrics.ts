import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** What the load gauges read from the engine on each scrape (runtime/engine.ts implements it). */
export interface EngineLoad {
  readonly slotsBusy: number;
  readonly parallel: number;
  readonly queueDepth: number;
  readonly kvCacheCells: { used: number; total: number };
}

/** The fraction of the context's KV cells in use, 0 to 1 (0 before a model is loaded). */
export function kvCacheUsage(engine: EngineLoad | undefined): number {
  const cells = engine?.kvCacheCells;
  return cells && cells.total > 0 ? Math.min(1, cells.used / cells.total) : 0;
}

/** Busy sequences plus queued requests: the load Corral's autoscaler scales on (and HPA/KEDA can). */
export function podLoad(engine: EngineLoad | undefined): number {
  return (engine?.slotsBusy ?? 0) + (engine?.queueDepth ?? 0);
}

/**
 * The runtime's Prometheus metrics, on their own registry (tests run several in one process).
 * `engine` is read when /metrics is scraped: the load gauges cost the decode loop nothing.
 */
export function createRuntimeMetrics(model: string, engine: () => EngineLoad | undefined = () => undefined) {
  const registry = new Registry();
  registry.setDefaultLabels({ model });
  collectDefaultMetrics({ register: registry, prefix: "corral_runtime_process_" });
  return {
    registry,
    requests: new Counter({
      name: "corral_runtime_requests_total",
      help: "Requests answered, by endpoint and status code.",
      labelNames: ["endpoint", "status"] as const,
      registers: [registry],
    }),
    promptTokens: new Counter({ name: "corral_runtime_prompt_tokens_total", help: "Prompt tokens processed.", registers: [registry] }),
    promptTokensReused: new Counter({
      name: "corral_runtime_prompt_tokens_reused_total",
      help: "Prompt tokens a sequence still held from its previous request, so they were not decoded again.",
      registers: [registry],
    }),
    completionTokens: new Counter({ name: "corral_runtime_completion_tokens_total", help: "Tokens generated.", registers: [registry] }),
    timeToFirstToken: new Histogram({
      name: "corral_runtime_time_to_first_token_seconds",
      help: "Time from request arrival to the first generated token.",
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    tokensPerSecond: new Histogram({
      name: "corral_runtime_generation_tokens_per_second",
      help: "Generation speed of each request after its first token.",
      buckets: [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000],
      registers: [registry],
    }),
    requestDuration: new Histogram({
      name: "corral_runtime_request_duration_seconds",
      help: "Time to answer a generation request, streamed or not.",
      labelNames: ["endpoint"] as const,
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers: [registry],
    }),
    decodeStepSeconds: new Histogram({
      name: "corral_runtime_decode_step_seconds",
      help: "Time of one batched decode step (one token for every generating sequence, plus prompt chunks).",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    decodeStepSequences: new Histogram({
      name: "corral_runtime_decode_step_sequences",
      help: "Sequences in one batched decode step.",
      buckets: [1, 2, 4, 8, 16, 32, 64, 128],
      registers: [registry],
    }),
    decodeStepTokens: new Counter({ name: "corral_runtime_decode_step_tokens_total", help: "Tokens decoded in batched steps, prompt tokens included.", registers: [registry] }),
    ...loadGauges(registry, engine),
  };
}

export type RuntimeMetrics = ReturnType<typeof createRuntimeMetrics>;

/** A gauge whose value is read when the registry is collected. */
function scraped(registry: Registry, name: string, help: string, read: () => number): Gauge {
  return new Gauge({
    name,
    help,
    registers: [registry],
    collect() {
      this.set(read());
    },
  });
}

/**
 * The engine's load, under Corral's names and, for the Gateway API Inference Extension's endpoint
 * picker, under the vLLM names its model-server protocol defaults to (docs/inference-gateway.md).
 */
function loadGauges(registry: Registry, engine: () => EngineLoad | undefined) {
  const running = () => engine()?.slotsBusy ?? 0;
  const waiting = () => engine()?.queueDepth ?? 0;
  const kv = () => kvCacheUsage(engine());
  return {
    slotsBusy: scraped(registry, "corral_runtime_slots_busy", "Sequences generating now.", running),
    slotsTotal: scraped(registry, "corral_runtime_slots_total", "Parallel sequences configured.", () => engine()?.parallel ?? 0),
    queueDepth: scraped(registry, "corral_runtime_queue_depth", "Requests waiting for a sequence.", waiting),
    requestsRunning: scraped(registry, "corral_runtime_requests_running", "Requests being served by a sequence now (the same count as corral_runtime_slots_busy).", running),
    requestsWaiting: scraped(registry, "corral_runtime_requests_waiting", "Requests queued for a free sequence (the same count as corral_runtime_queue_depth).", waiting),
    load: scraped(registry, "corral_runtime_load", "Busy sequences plus queued requests: the load Corral's autoscaler scales on (docs/autoscaling.md).", () => podLoad(engine())),
    kvCacheUsage: scraped(
      registry,
      "corral_runtime_kv_cache_usage_ratio",
      "Fraction (0 to 1) of the context's KV cells held by the sequences serving requests now; prefixes idle sequences keep for reuse count as free.",
      kv,
    ),
    vllmRequestsRunning: scraped(registry, "vllm:num_requests_running", "Alias of corral_runtime_requests_running for vLLM-configured endpoint pickers.", running),
    vllmRequestsWaiting: scraped(registry, "vllm:num_requests_waiting", "Alias of corral_runtime_requests_waiting for vLLM-configured endpoint pickers.", waiting),
    vllmKvCacheUsage: scraped(registry, "vllm:kv_cache_usage_perc", "Alias of corral_runtime_kv_cache_usage_ratio (a 0-1 fraction, as vLLM's) for vLLM-configured endpoint pickers.", kv),
    vllmGpuCacheUsage: scraped(registry, "vllm:gpu_cache_usage_perc", "Alias of corral_runtime_kv_cache_usage_ratio under vLLM's older name (the default of older endpoint pickers).", kv),
  };
}
