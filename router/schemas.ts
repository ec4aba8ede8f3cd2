import Type, { type TSchema } from "typebox";
import { samplingDefaultsSchema } from "../common/api.js";
import { MODEL_STATES } from "./backends/types.js";

/** Shapes of the answers the router makes itself (the proxied ones are in common/api.ts). */

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);

export const ModelStateSchema = Type.Enum([...MODEL_STATES], { description: "not_loaded, starting, downloading, loading, ready, restarting, failed or stopping" });

export const Progress = Type.Object(
  {
    bytes_done: Type.Integer(),
    bytes_total: Nullable(Type.Integer()),
    fraction: Nullable(Type.Number({ minimum: 0, maximum: 1, description: "Share of the current stage done: the download's (when its size is known), or the load's." })),
  },
  { description: "Progress while the state is downloading (bytes) or loading (the weights on disk, and the share loaded)." },
);

/** The defaults a model reports: every knob of common/api.ts's sampling table, in the API's names. */
export const SamplingDefaultsSchema = samplingDefaultsSchema({ description: "Sampling defaults the model applies to parameters a request leaves out." });

export const ModelInfo = Type.Object({
  model_id: Nullable(Type.String()),
  state: ModelStateSchema,
  current: Type.Boolean({ description: "Whether requests without model_id go to this model." }),
  progress: Nullable(Progress),
  message: Nullable(Type.String({ description: "Why the model is not ready, when it is not." })),
  source: Nullable(Type.String()),
  description: Nullable(Type.String()),
  size_bytes: Nullable(Type.Integer()),
  context_size: Nullable(Type.Integer({ description: "Context tokens per sequence (known once ready)." })),
  parallel: Nullable(Type.Integer({ description: "Requests one runtime decodes together." })),
  defaults: Nullable(SamplingDefaultsSchema),
  endpoints: Type.Integer({ description: "Ready runtimes serving the model." }),
});

export const AvailableModel = Type.Object({
  model_id: Type.String(),
  source: Type.String(),
  description: Nullable(Type.String()),
  size_bytes: Nullable(Type.Integer({ description: "Bytes of the weights (approximate until downloaded)." })),
  state: ModelStateSchema,
  current: Type.Boolean(),
});

export const AvailableModels = Type.Object({
  current: Nullable(Type.String()),
  models: Type.Array(AvailableModel),
});

export const UnloadRequest = Type.Object(
  { model_id: Type.Optional(Nullable(Type.String({ minLength: 1, maxLength: 256 }))) },
  { additionalProperties: true, description: "Optional: the model to unload (default: the current one)." },
);

export const UnloadResponse = Type.Object({
  model_id: Type.String(),
  state: ModelStateSchema,
  detail: Type.String(),
});

export const OpenAiModelList = Type.Object({
  object: Type.Literal("list"),
  data: Type.Array(
    Type.Object({
      id: Type.String(),
      object: Type.Literal("model"),
      created: Type.Integer(),
      owned_by: Type.String(),
    }),
  ),
});

export const HealthResponse = Type.Object({
  status: Type.Enum(["ok", "degraded", "unavailable"]),
  version: Type.String(),
  components: Type.Object({
    router: Type.Enum(["ok", "closing"]),
    backend: Type.Object({ kind: Type.String(), state: Type.Enum(["ok", "unavailable"]) }),
    rate_limiter: Type.Enum(["off", "memory", "redis", "memory-fallback"], {
      description: "memory-fallback: Redis is unreachable and limits are kept in this replica's memory.",
    }),
    current_model: Type.Object({ model_id: Nullable(Type.String()), state: ModelStateSchema }),
  }),
});

export const SystemInfo = Type.Object({
  router: Type.Object({
    version: Type.String(),
    uptime_seconds: Type.Number(),
    started_at: Type.String(),
    node_version: Type.String(),
    pid: Type.Integer(),
    backend: Type.String(),
    auth: Type.Boolean(),
    rate_limit: Type.Object({
      store: Type.String(),
      points: Type.Integer(),
      duration_seconds: Type.Number(),
      burst: Type.Integer(),
      algorithm: Type.String(),
    }),
  }),
  requests: Type.Object({
    total: Type.Integer(),
    in_flight: Type.Integer(),
    rate_limited: Type.Integer(),
    by_status: Type.Record(Type.String(), Type.Integer()),
  }),
  host: Type.Object({
    hostname: Type.String(),
    platform: Type.String(),
    arch: Type.String(),
    cpu_count: Type.Integer(),
    cpu_model: Type.String(),
    load_average: Type.Array(Type.Number()),
    memory_total_bytes: Type.Integer(),
    memory_free_bytes: Type.Integer(),
    router_rss_bytes: Type.Integer(),
  }),
  models: Type.Array(
    Type.Object({
      model_id: Type.String(),
      state: ModelStateSchema,
      current: Type.Boolean(),
      message: Nullable(Type.String()),
      endpoints: Type.Array(
        Type.Object({
          id: Type.String(),
          in_flight: Type.Integer(),
          info: Type.Unknown({ description: "The runtime's GET /info: slots, devices, memory, ...; null when it did not answer." }),
        }),
      ),
    }),
  ),
});
