import Type, { type Static, type TObject, type TObjectOptions, type TOptional, type TSchema } from "typebox";

/**
 * The public API's request and response shapes (the seed specification), shared by the runtime
 * (which serves them) and the router (which validates before proxying).
 */

/** snake_case -> camelCase at the type level: "repetition_penalty" -> "repetitionPenalty". */
export type CamelCase<S extends string> = S extends `${infer Head}_${infer Tail}` ? `${Head}${Capitalize<CamelCase<Tail>>}` : S;

/** snake_case -> camelCase: the Model resource's name of an API field. */
export function camelCase<S extends string>(name: S): CamelCase<S> {
  return name.replace(/_([a-z])/g, (_match, letter: string) => letter.toUpperCase()) as CamelCase<S>;
}

interface SamplingKnob<S extends TSchema = TSchema> {
  /** Type, bounds and description. */
  readonly schema: S;
  /** The schema's description: what the knob means, its bounds and its default. */
  readonly description: string;
  /** The API's default, used when neither the request nor the model's defaults set it. */
  readonly default: Static<S>;
}

/** A knob: its schema is made with a description that ends with its default. */
function knob<S extends TSchema>(make: (options: { description: string }) => S, fallback: Static<S>, about: string): SamplingKnob<S> {
  const description = `${about} (default ${fallback}).`;
  return { schema: make({ description }), description, default: fallback };
}

export const MAX_LENGTH_LIMIT = 16384;
/** Upper bounds of the sampling knobs (OpenAI's for temperature); beyond them output is noise. */
export const MAX_TEMPERATURE = 2;
export const MAX_REPETITION_PENALTY = 2;

/**
 * The sampling knobs, each once: the API's (snake_case) name, its type, bounds, description and
 * default. Everything else derives from this table: the request fields (SamplingFields), the
 * runtime's `--defaults`, the router's catalog defaults and ModelInfo.defaults, and the Model
 * resource's spec.defaults (camelCase names, see ModelSamplingDefaultsSchema in
 * common/kube/model-resource.ts). The CRD's copy is checked against it by crds/model-schema.test.ts.
 * The order is the order of `--defaults` JSON keys.
 */
export const SAMPLING_KNOBS = {
  max_length: knob(
    (o) => Type.Integer({ minimum: 1, maximum: MAX_LENGTH_LIMIT, ...o }),
    8192,
    `Maximum number of tokens to generate, at most ${MAX_LENGTH_LIMIT}; clamped to what the context leaves`,
  ),
  temperature: knob((o) => Type.Number({ minimum: 0, maximum: MAX_TEMPERATURE, ...o }), 0.7, `Randomness, in [0, ${MAX_TEMPERATURE}]; 0 is greedy`),
  top_p: knob((o) => Type.Number({ exclusiveMinimum: 0, maximum: 1, ...o }), 0.9, "Nucleus sampling mass, in (0, 1]"),
  top_k: knob((o) => Type.Integer({ minimum: 0, ...o }), 80, "Sample from the K most likely tokens; 0 disables"),
  repetition_penalty: knob(
    (o) => Type.Number({ exclusiveMinimum: 0, maximum: MAX_REPETITION_PENALTY, ...o }),
    1.15,
    `Penalty for repeated tokens, in (0, ${MAX_REPETITION_PENALTY}]; 1 is none`,
  ),
  do_sample: knob((o) => Type.Boolean(o), true, "false means greedy decoding"),
} as const;

type Knobs = typeof SAMPLING_KNOBS;
export type SamplingName = keyof Knobs;
/** The knobs' names in table order. */
export const SAMPLING_NAMES = Object.keys(SAMPLING_KNOBS) as SamplingName[];

/** A full set of sampling defaults, in the API's names. */
export type SamplingDefaults = { -readonly [K in SamplingName]: Static<Knobs[K]["schema"]> };

/** The API's defaults, used whenever a request and the model leave a parameter out. */
export const DEFAULT_SAMPLING: Readonly<SamplingDefaults> = Object.freeze(
  Object.fromEntries(SAMPLING_NAMES.map((name) => [name, SAMPLING_KNOBS[name].default])) as SamplingDefaults,
);

type SamplingDefaultsProperties = { [K in SamplingName]: TOptional<Knobs[K]["schema"]> };

/**
 * Some or all sampling defaults in the API's names, nothing else: a model's overrides (the
 * runtime's `--defaults`, the catalog's `defaults`) and what a model reports (ModelInfo.defaults).
 */
export function samplingDefaultsSchema(options: TObjectOptions = {}): TObject<SamplingDefaultsProperties> {
  const properties = Object.fromEntries(SAMPLING_NAMES.map((name) => [name, Type.Optional(SAMPLING_KNOBS[name].schema)])) as SamplingDefaultsProperties;
  return Type.Object(properties, { additionalProperties: false, ...options });
}
export const SamplingDefaultsSchema = samplingDefaultsSchema();
export type SamplingOverrides = Static<typeof SamplingDefaultsSchema>;

/** Some sampling defaults as the runtime's `--defaults` JSON: the knobs in table order; undefined when there are none. */
export function samplingDefaultsJson(defaults: Partial<Record<SamplingName, number | boolean | null | undefined>> | null | undefined): string | undefined {
  if (!defaults) return undefined;
  const out: Record<string, number | boolean> = {};
  for (const name of SAMPLING_NAMES) {
    const value = defaults[name];
    if (value !== undefined && value !== null) out[name] = value;
  }
  return Object.keys(out).length ? JSON.stringify(out) : undefined;
}

const ModelId = Type.Union([Type.String({ minLength: 1, maxLength: 256 }), Type.Null()], {
  description: "Model to use; null or absent means the current model.",
});

/** The seed API's sampling parameters of a request (max_length may also be null: the default). */
export const SamplingFields = {
  model_id: Type.Optional(ModelId),
  max_length: Type.Optional(Type.Union([SAMPLING_KNOBS.max_length.schema, Type.Null()], { description: SAMPLING_KNOBS.max_length.description })),
  temperature: Type.Optional(SAMPLING_KNOBS.temperature.schema),
  top_p: Type.Optional(SAMPLING_KNOBS.top_p.schema),
  top_k: Type.Optional(SAMPLING_KNOBS.top_k.schema),
  repetition_penalty: Type.Optional(SAMPLING_KNOBS.repetition_penalty.schema),
  do_sample: Type.Optional(SAMPLING_KNOBS.do_sample.schema),
};

export const GenerateRequest = Type.Object(
  {
    prompt: Type.String({ minLength: 1, description: "The text to continue." }),
    stream: Type.Optional(Type.Boolean({ description: "Stream the answer as Server-Sent Events." })),
    ...SamplingFields,
  },
  { additionalProperties: true },
);
export type GenerateRequest = Static<typeof GenerateRequest>;

export const ChatRole = Type.Enum(["system", "user", "assistant"]);
export const ChatMessage = Type.Object({ role: ChatRole, content: Type.String() }, { additionalProperties: true });

export const ChatRequest = Type.Object(
  {
    messages: Type.Array(ChatMessage, { minItems: 1, description: "The conversation so far." }),
    stream: Type.Optional(Type.Boolean()),
    ...SamplingFields,
  },
  { additionalProperties: true },
);
export type ChatRequest = Static<typeof ChatRequest>;

export const BatchRequest = Type.Object(
  {
    prompts: Type.Array(Type.String({ minLength: 1 }), { minItems: 1, description: "Prompts generated in parallel." }),
    ...SamplingFields,
  },
  { additionalProperties: true },
);
export type BatchRequest = Static<typeof BatchRequest>;

export const Usage = Type.Object({
  prompt_tokens: Type.Integer(),
  completion_tokens: Type.Integer(),
  total_tokens: Type.Integer(),
});
export type Usage = Static<typeof Usage>;

export const FinishReason = Type.Enum(["stop", "length"]);
export type FinishReason = "stop" | "length";

export const GenerateResponse = Type.Object({ response: Type.String(), finish_reason: FinishReason, usage: Usage });
export type GenerateResponse = Static<typeof GenerateResponse>;

export const ChatResponse = Type.Object({
  choices: Type.Array(
    Type.Object({
      message: Type.Object({ role: Type.Literal("assistant"), content: Type.String() }),
      finish_reason: FinishReason,
    }),
  ),
  usage: Usage,
});
export type ChatResponse = Static<typeof ChatResponse>;

export const BatchResponse = Type.Object({ responses: Type.Array(Type.String()), usage: Usage });
export type BatchResponse = Static<typeof BatchResponse>;

export const ErrorResponse = Type.Object({ detail: Type.String() });

export const LoadModelRequest = Type.Object({ model_id: Type.String({ minLength: 1, maxLength: 256 }) }, { additionalProperties: true });

/* ---------- OpenAI-compatible shapes ---------- */

const Stop = Type.Optional(
  Type.Union([Type.String(), Type.Array(Type.String(), { maxItems: 4 }), Type.Null()], { description: "Up to 4 sequences where generation stops." }),
);

const OpenAiSampling = {
  model: Type.Optional(Type.String({ description: "Model id; the current model when absent." })),
  max_tokens: Type.Optional(Type.Union([SAMPLING_KNOBS.max_length.schema, Type.Null()])),
  temperature: Type.Optional(Type.Union([SAMPLING_KNOBS.temperature.schema, Type.Null()])),
  top_p: Type.Optional(Type.Union([SAMPLING_KNOBS.top_p.schema, Type.Null()])),
  top_k: Type.Optional(SAMPLING_KNOBS.top_k.schema),
  repetition_penalty: Type.Optional(SAMPLING_KNOBS.repetition_penalty.schema),
  presence_penalty: Type.Optional(Type.Union([Type.Number({ minimum: -2, maximum: 2 }), Type.Null()])),
  frequency_penalty: Type.Optional(Type.Union([Type.Number({ minimum: -2, maximum: 2 }), Type.Null()])),
  seed: Type.Optional(Type.Union([Type.Integer(), Type.Null()])),
  stop: Stop,
  n: Type.Optional(Type.Union([Type.Integer({ minimum: 1, maximum: 1 }), Type.Null()], { description: "Only 1 is supported." })),
  stream: Type.Optional(Type.Union([Type.Boolean(), Type.Null()])),
  stream_options: Type.Optional(Type.Union([Type.Object({ include_usage: Type.Optional(Type.Boolean()) }), Type.Null()])),
  user: Type.Optional(Type.String()),
};

export const OpenAiCompletionRequest = Type.Object(
  {
    prompt: Type.Union([Type.String({ minLength: 1 }), Type.Array(Type.String({ minLength: 1 }), { minItems: 1, maxItems: 1 })], {
      description: "A string (or an array holding one string).",
    }),
    ...OpenAiSampling,
  },
  { additionalProperties: true },
);
export type OpenAiCompletionRequest = Static<typeof OpenAiCompletionRequest>;

const ContentPart = Type.Object({ type: Type.Literal("text"), text: Type.String() }, { additionalProperties: true });
export const OpenAiChatMessage = Type.Object(
  {
    role: Type.Enum(["system", "developer", "user", "assistant"]),
    content: Type.Union([Type.String(), Type.Array(ContentPart), Type.Null()]),
  },
  { additionalProperties: true },
);

export const OpenAiChatRequest = Type.Object(
  {
    messages: Type.Array(OpenAiChatMessage, { minItems: 1 }),
    max_completion_tokens: Type.Optional(Type.Union([SAMPLING_KNOBS.max_length.schema, Type.Null()])),
    ...OpenAiSampling,
  },
  { additionalProperties: true },
);
export type OpenAiChatRequest = Static<typeof OpenAiChatRequest>;

/** OpenAI's message content may be text parts; Corral serves text models, so parts are joined. */
export function openAiContentText(content: string | readonly { text: string }[] | null): string {
  if (content === null) return "";
  if (typeof content === "string") return content;
  return content.map((part) => part.text).join("");
}
