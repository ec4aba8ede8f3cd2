import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** The runtime's Prometheus metrics, on their own registry (tests run several in one process). */
export function createRuntimeMetrics(model: string) {
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
    slotsBusy: new Gauge({ name: "corral_runtime_slots_busy", help: "Sequences generating now.", registers: [registry] }),
    slotsTotal: new Gauge({ name: "corral_runtime_slots_total", help: "Parallel sequences configured.", registers: [registry] }),
    queueDepth: new Gauge({ name: "corral_runtime_queue_depth", help: "Requests waiting for a sequence.", registers: [registry] }),
  };
}

export type RuntimeMetrics = ReturnType<typeof createRuntimeMetrics>;
