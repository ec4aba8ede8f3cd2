import Type, { type Static } from "typebox";
import type { SettingSpec } from "./config.js";

/**
 * The command line of `corral runtime`: its settings (flag, environment variable, type, bounds,
 * default) in one place. The runtime parses its options from these definitions (runtime/config.ts)
 * and every launcher (the operator's pods, local mode's child processes) builds its arguments with
 * runtimeArgv() from the same ones, so renaming a flag changes both sides at once.
 */

/** Sequences a runtime decodes together when nobody says (--parallel): the router's capacity and the autoscaler's target follow it. */
export const DEFAULT_PARALLEL = 4;

/** The subcommand that runs the runtime: `corral runtime ...`. */
export const RUNTIME_COMMAND = "runtime";

export const GPU_CHOICES = ["auto", "cuda", "vulkan", "off"] as const;
export const PROMPT_ADMISSION_CHOICES = ["cost", "all"] as const;
export const RUNTIME_LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;

export const RuntimeConfigSchema = Type.Object(
  {
    model: Type.String({ minLength: 1 }),
    modelId: Type.Optional(Type.String({ minLength: 1 })),
    modelDir: Type.Optional(Type.String({ minLength: 1 })),
    host: Type.String({ default: "0.0.0.0" }),
    port: Type.Integer({ minimum: 0, maximum: 65535, default: 8080 }),
    parallel: Type.Integer({ minimum: 1, maximum: 256, default: DEFAULT_PARALLEL }),
    contextSize: Type.Optional(Type.Integer({ minimum: 64 })),
    batchSize: Type.Optional(Type.Integer({ minimum: 1 })),
    threads: Type.Optional(Type.Integer({ minimum: 1, maximum: 1024 })),
    gpu: Type.Enum([...GPU_CHOICES], { default: "auto" }),
    gpuLayers: Type.Union([Type.Literal("auto"), Type.Literal("max"), Type.Integer({ minimum: 0 })], { default: "auto" }),
    maxQueue: Type.Integer({ minimum: 0, default: 64 }),
    promptAdmission: Type.Enum([...PROMPT_ADMISSION_CHOICES], { default: "cost" }),
    maxBatchPrompts: Type.Integer({ minimum: 1, default: 64 }),
    bodyLimitBytes: Type.Integer({ minimum: 1024, default: 1_048_576 }),
    drainSeconds: Type.Number({ minimum: 0, default: 30 }),
    defaults: Type.Optional(Type.String({ description: "JSON object of sampling defaults" })),
    logLevel: Type.Enum([...RUNTIME_LOG_LEVELS], { default: "info" }),
    hfToken: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);

export type RuntimeConfig = Static<typeof RuntimeConfigSchema>;

export const RUNTIME_SETTINGS: readonly SettingSpec[] = [
  { key: "model", flag: "--model", value: "<source>", env: "CORRAL_MODEL", description: "GGUF model: a local path, an https:// URL or hf:owner/repo/file.gguf" },
  { key: "modelId", flag: "--model-id", value: "<id>", env: "CORRAL_MODEL_ID", description: "public model id reported by /info", defaultText: "derived from the source" },
  { key: "modelDir", flag: "--model-dir", value: "<dir>", env: "CORRAL_MODEL_DIR", description: "folder for downloaded models", defaultText: "~/.cache/corral/models" },
  { key: "host", flag: "--host", value: "<host>", env: "CORRAL_HOST", description: "address to listen on", defaultText: "0.0.0.0" },
  { key: "port", flag: "--port", value: "<port>", env: "CORRAL_PORT", description: "port to listen on (0 picks a free one)", defaultText: "8080" },
  { key: "parallel", flag: "--parallel", value: "<n>", env: "CORRAL_PARALLEL", description: "parallel sequences (requests decoded together in one batch)", defaultText: "4" },
  { key: "contextSize", flag: "--context-size", value: "<tokens>", env: "CORRAL_CONTEXT_SIZE", description: "context tokens per sequence", defaultText: "min(model's, 4096)" },
  { key: "batchSize", flag: "--batch-size", value: "<tokens>", env: "CORRAL_BATCH_SIZE", description: "tokens per decode batch", defaultText: "min(context size x parallel, 512)" },
  { key: "threads", flag: "--threads", value: "<n>", env: "CORRAL_THREADS", description: "CPU threads for inference", defaultText: "CPUs this process may use (cgroup quota)" },
  { key: "gpu", flag: "--gpu", value: "<kind>", env: "CORRAL_GPU", description: "GPU backend", defaultText: "auto", choices: GPU_CHOICES },
  { key: "gpuLayers", flag: "--gpu-layers", value: "<n|auto|max>", env: "CORRAL_GPU_LAYERS", description: "layers to offload to the GPU", defaultText: "auto (as many as fit)" },
  { key: "maxQueue", flag: "--max-queue", value: "<n>", env: "CORRAL_MAX_QUEUE", description: "requests that may wait for a free sequence; beyond it: 429", defaultText: "64" },
  {
    key: "promptAdmission",
    flag: "--prompt-admission",
    value: "<cost|all>",
    env: "CORRAL_PROMPT_ADMISSION",
    description:
      "which waiting prompts join a decode step: cost (the first, and more while they cost no more than the rest of the step: " +
      "first tokens sooner, streams keep flowing) or all (every one: fewest passes over the weights when clients arrive together)",
    defaultText: "cost",
    choices: PROMPT_ADMISSION_CHOICES,
  },
  { key: "maxBatchPrompts", flag: "--max-batch-prompts", value: "<n>", env: "CORRAL_MAX_BATCH_PROMPTS", description: "prompts allowed in one /generate/batch request; beyond it: 413", defaultText: "64" },
  { key: "bodyLimitBytes", flag: "--body-limit-bytes", value: "<bytes>", env: "CORRAL_BODY_LIMIT_BYTES", description: "largest request body; beyond it: 413", defaultText: "1048576" },
  { key: "drainSeconds", flag: "--drain-seconds", value: "<s>", env: "CORRAL_DRAIN_SECONDS", description: "on SIGTERM, how long in-flight requests may finish", defaultText: "30" },
  { key: "defaults", flag: "--defaults", value: "<json>", env: "CORRAL_DEFAULTS", description: "sampling defaults overriding the API's, e.g. '{\"temperature\":0.2}'" },
  { key: "logLevel", flag: "--log-level", value: "<level>", env: "LOG_LEVEL", description: "log level", defaultText: "info" },
  { key: "hfToken", flag: "--hf-token", value: "<token>", env: "HF_TOKEN", description: "token for gated Hugging Face downloads (never logged)" },
];

/** Settings that never go on a command line (anyone on the node can read it in `ps`): pass them in the environment. */
const SECRET_SETTINGS = ["hfToken"] as const;

/**
 * What a launcher may set on the runtime's command line: any runtime setting but the secrets;
 * left out (or undefined), a setting takes the runtime's default.
 */
export type RuntimeArgs = { model: string } & { [K in Exclude<keyof RuntimeConfig, "model" | (typeof SECRET_SETTINGS)[number]>]?: RuntimeConfig[K] | undefined };

/**
 * The argument vector of `corral runtime` for these settings: the subcommand, then each setting
 * that is set, as `<flag> <value>`, in the order of RUNTIME_SETTINGS.
 */
export function runtimeArgv(settings: RuntimeArgs): string[] {
  const argv = [RUNTIME_COMMAND];
  for (const [key, value] of Object.entries(settings)) {
    if (value === undefined) continue;
    const spec = RUNTIME_SETTINGS.find((s) => s.key === key);
    if (!spec) throw new Error(`runtimeArgv: ${key} is not a runtime setting`);
    if ((SECRET_SETTINGS as readonly string[]).includes(key)) throw new Error(`runtimeArgv: ${key} must be passed in the environment (${spec.env}), not on the command line`);
  }
  for (const spec of RUNTIME_SETTINGS) {
    const value = (settings as Record<string, unknown>)[spec.key];
    if (value === undefined) continue;
    if (spec.value === undefined) {
      // A switch: present or absent.
      if (value === true) argv.push(spec.flag);
      continue;
    }
    argv.push(spec.flag, String(value));
  }
  return argv;
}
