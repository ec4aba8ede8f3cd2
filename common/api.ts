import Type, { type Static } from "typebox";

/**
 * The public API's request and response shapes (the seed specification), shared by the runtime
 * (which serves them) and the router (which validates before proxying).
 */

/** The seed's defaults, used whenever a request leaves a parameter out. */
export const SEED_DEFAULTS = {
  max_length: 8192,
  temperature: 0.7,
  top_p: 0.9,
  top_k: 80,
  repetition_penalty: 1.15,
  do_sample: true,
} as const;

export const MAX_LENGTH_LIMIT = 16384;
/** Upper bounds of the sampling knobs (OpenAI's for temperature); beyond them output is noise. */
export const MAX_TEMPERATURE = 2;
export const MAX_REPETITION_PENALTY = 2;

export type SamplingDefaults = { -readonly [K in keyof typeof SEED_DEFAULTS]: (typeof SEED_DEFAULTS)[K] extends boolean ? boolean : number };

const ModelId = Type.Union([Type.String({ minLength: 1, maxLength: 256 }), Type.Null()], {
  description: "Model to use; null or absent means the current model.",
});

export const SamplingFields = {
  model_id: Type.Optional(ModelId),
  max_length: Type.Optional(
    Type.Union([Type.Integer({ minimum: 1, maximum: MAX_LENGTH_LIMIT }), Type.Null()], {
      description: "Maximum number of tokens to generate (default 8192, at most 16384; clamped to what the context leaves).",
    }),
  ),
  temperature: Type.Optional(Type.Number({ minimum: 0, maximum: MAX_TEMPERATURE, description: "Randomness, in [0, 2]; 0 is greedy (default 0.7)." })),
  top_p: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1, description: "Nucleus sampling mass, in (0, 1] (default 0.9)." })),
  top_k: Type.Optional(Type.Integer({ minimum: 0, description: "Sample from the K most likely tokens; 0 disables (default 80)." })),
  repetition_penalty: Type.Optional(
    Type.Number({ exclusiveMinimum: 0, maximum: MAX_REPETITION_PENALTY, description: "Penalty for repeated tokens, in (0, 2]; 1 is none (default 1.15)." }),
  ),
  do_sample: Type.Optional(Type.Boolean({ description: "false means greedy decoding (default true)." })),
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
  max_tokens: Type.Optional(Type.Union([Type.Integer({ minimum: 1, maximum: MAX_LENGTH_LIMIT }), Type.Null()])),
  temperature: Type.Optional(Type.Union([Type.Number({ minimum: 0, maximum: MAX_TEMPERATURE }), Type.Null()])),
  top_p: Type.Optional(Type.Union([Type.Number({ exclusiveMinimum: 0, maximum: 1 }), Type.Null()])),
  top_k: Type.Optional(Type.Integer({ minimum: 0 })),
  repetition_penalty: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: MAX_REPETITION_PENALTY })),
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
    max_completion_tokens: Type.Optional(Type.Union([Type.Integer({ minimum: 1, maximum: MAX_LENGTH_LIMIT }), Type.Null()])),
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
