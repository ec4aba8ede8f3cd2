import Value from "typebox/value";
import { DEFAULT_SAMPLING, SamplingDefaultsSchema, type SamplingDefaults, type SamplingOverrides } from "../common/api.js";
import { ConfigError } from "../common/errors.js";

/** What a request asked for, in the seed API's names; absent fields take the model's defaults. */
export interface SamplingRequest {
  max_length?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  repetition_penalty?: number | null;
  do_sample?: boolean | null;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  seed?: number | null;
  stop?: readonly string[];
}

/** Resolved generation settings handed to the engine. */
export interface SamplingPlan {
  maxTokens: number;
  temperature: number;
  topP: number;
  topK: number;
  repetitionPenalty: number;
  presencePenalty: number;
  frequencyPenalty: number;
  seed?: number;
  stop: readonly string[];
}

/** The API's defaults with a model's overrides (a JSON object from `--defaults`) on top. */
export function parseDefaults(json: string | undefined): SamplingDefaults {
  if (json === undefined || json.trim() === "") return { ...DEFAULT_SAMPLING };
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (error) {
    throw new ConfigError(`--defaults (CORRAL_DEFAULTS) is not valid JSON: ${(error as Error).message}`);
  }
  if (!Value.Check(SamplingDefaultsSchema, parsed)) {
    const first = [...Value.Errors(SamplingDefaultsSchema, parsed)][0];
    const field = first?.instancePath.replace(/^\//, "") || "defaults";
    throw new ConfigError(`--defaults (CORRAL_DEFAULTS): ${field}: ${first?.message ?? "is invalid"}`);
  }
  return { ...DEFAULT_SAMPLING, ...(parsed as SamplingOverrides) };
}

/**
 * Maps a request onto generation settings. `do_sample: false` is greedy decoding (temperature 0);
 * the token budget is clamped to what the context leaves after the prompt.
 */
export function planSampling(request: SamplingRequest, defaults: SamplingDefaults, tokensLeft: number): SamplingPlan {
  const doSample = request.do_sample ?? defaults.do_sample;
  const requested = request.max_length ?? defaults.max_length;
  return {
    maxTokens: Math.max(0, Math.min(requested, tokensLeft)),
    temperature: doSample ? (request.temperature ?? defaults.temperature) : 0,
    topP: request.top_p ?? defaults.top_p,
    topK: request.top_k ?? defaults.top_k,
    repetitionPenalty: request.repetition_penalty ?? defaults.repetition_penalty,
    presencePenalty: request.presence_penalty ?? 0,
    frequencyPenalty: request.frequency_penalty ?? 0,
    seed: request.seed ?? undefined,
    stop: request.stop ?? [],
  };
}
