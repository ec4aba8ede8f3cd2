import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** The operator's Prometheus metrics, on their own registry (tests run several operators in one process). */
export function createOperatorMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "corral_operator_process_" });
  return {
    registry,
    reconciles: new Counter({
      name: "corral_operator_reconciles_total",
      help: "Model reconciles, by result (success, requeue, error).",
      labelNames: ["result"] as const,
      registers: [registry],
    }),
    reconcileDuration: new Histogram({
      name: "corral_operator_reconcile_duration_seconds",
      help: "Time one Model reconcile took.",
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    queueDepth: new Gauge({ name: "corral_operator_queue_depth", help: "Model keys waiting to be reconciled.", registers: [registry] }),
    leader: new Gauge({ name: "corral_operator_leader", help: "1 while this replica holds the leader Lease and acts.", registers: [registry] }),
    informerFailures: new Counter({
      name: "corral_operator_informer_failures_total",
      help: "List or watch failures the informers recovered from, by resource and stage.",
      labelNames: ["resource", "stage"] as const,
      registers: [registry],
    }),
    apiRequests: new Counter({
      name: "corral_operator_api_requests_total",
      help: "Requests to the Kubernetes API, by method and status code (0: no answer).",
      labelNames: ["method", "code"] as const,
      registers: [registry],
    }),
    apiRequestDuration: new Histogram({
      name: "corral_operator_api_request_duration_seconds",
      help: "Kubernetes API request latency (watches: how long the stream lasted).",
      labelNames: ["method"] as const,
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    statusWrites: new Counter({ name: "corral_operator_status_writes_total", help: "Model status updates written.", registers: [registry] }),
    autoscalerLoad: new Gauge({
      name: "corral_operator_autoscaler_load",
      help: "Autoscaled Models' load (busy sequences plus queued requests over all pods), averaged over the Model's window.",
      labelNames: ["namespace", "model"] as const,
      registers: [registry],
    }),
    autoscalerDesiredReplicas: new Gauge({
      name: "corral_operator_autoscaler_desired_replicas",
      help: "Replicas the autoscaler wants for each autoscaled Model.",
      labelNames: ["namespace", "model"] as const,
      registers: [registry],
    }),
    autoscalerDecisions: new Counter({
      name: "corral_operator_autoscaler_decisions_total",
      help: "Changes of spec.replicas the autoscaler made, by direction (up, down, zero).",
      labelNames: ["namespace", "model", "direction"] as const,
      registers: [registry],
    }),
    autoscalerReadFailures: new Counter({
      name: "corral_operator_autoscaler_read_failures_total",
      help: "Reads of a ready pod's load (GET /info) that failed; a Model none of whose ready pods answers is not scaled.",
      registers: [registry],
    }),
    models: new Gauge({ name: "corral_operator_models", help: "Models known to the operator, by phase.", labelNames: ["phase"] as const, registers: [registry] }),
  };
}

export type OperatorMetrics = ReturnType<typeof createOperatorMetrics>;
