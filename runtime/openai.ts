import { openAiContentText, type OpenAiChatRequest } from "../common/api.js";
import { HttpError } from "../common/errors.js";
import type { ChatTurn } from "./engine.js";
import type { SamplingRequest } from "./sampling.js";

/**
 * OpenAI request parameters Corral does not implement. Each is accepted only at the value that
 * means "off" (what clients send by default); anything else is a 400 naming it, rather than an
 * answer that silently ignores what was asked.
 */
const OFF_ONLY: Record<string, (value: unknown) => boolean> = {
  logprobs: (v) => v === false || v === 0,
  top_logprobs: (v) => v === 0,
  tools: (v) => Array.isArray(v) && v.length === 0,
  tool_choice: (v) => v === "none",
  parallel_tool_calls: (v) => typeof v === "boolean",
  functions: (v) => Array.isArray(v) && v.length === 0,
  function_call: (v) => v === "none",
  logit_bias: (v) => typeof v === "object" && Object.keys(v as object).length === 0,
  best_of: (v) => v === 1,
  suffix: (v) => v === "",
  echo: (v) => v === false,
  n: (v) => v === 1,
  audio: () => false,
  modalities: (v) => Array.isArray(v) && v.every((m) => m === "text"),
  prediction: () => false,
};

/** The response format a request asked for: free text, any JSON value, or JSON matching a schema. */
export type ResponseFormat = { type: "text" } | { type: "json_object" } | { type: "json_schema"; schema: JsonSchema };

export type JsonSchema = { readonly [key: string]: unknown };

function refuse(message: string): never {
  throw new HttpError(400, message);
}

/** Refuses (400) a body that asks for an OpenAI feature Corral lacks, naming every such parameter. */
export function checkOpenAiParameters(body: Record<string, unknown>): void {
  const unsupported = Object.keys(OFF_ONLY).filter((name) => body[name] != null && !OFF_ONLY[name]!(body[name]));
  if (unsupported.length > 0) {
    refuse(`unsupported parameter${unsupported.length > 1 ? "s" : ""}: ${unsupported.join(", ")} (Corral generates one plain text choice; send them unset or at their defaults)`);
  }
}

/** Reads `response_format`; a malformed one, or a schema using features the grammar cannot express, is a 400. */
export function parseResponseFormat(value: unknown): ResponseFormat {
  if (value == null) return { type: "text" };
  if (typeof value !== "object" || Array.isArray(value)) refuse("response_format must be an object");
  const format = value as Record<string, unknown>;
  switch (format.type) {
    case "text":
      return { type: "text" };
    case "json_object":
      return { type: "json_object" };
    case "json_schema": {
      const spec = format.json_schema;
      if (spec === null || typeof spec !== "object" || Array.isArray(spec)) refuse("response_format.json_schema must be an object");
      const schema = (spec as Record<string, unknown>).schema;
      if (schema === undefined) return { type: "json_object" };
      return { type: "json_schema", schema: supportedSchema(schema, "response_format.json_schema.schema") };
    }
    default:
      return refuse(`response_format.type must be "text", "json_object" or "json_schema", not ${JSON.stringify(format.type)}`);
  }
}

interface OpenAiSamplingBody {
  max_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number;
  repetition_penalty?: number;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
}

/**
 * OpenAI names onto the seed's. Left-out values take the model's defaults, except that OpenAI
 * clients expect no repetition penalty unless they ask (they send presence/frequency instead),
 * and /v1/completions keeps OpenAI's 16-token default.
 */
export function openAiSampling(body: OpenAiSamplingBody, defaultMaxTokens?: number): SamplingRequest {
  return {
    max_length: body.max_tokens ?? defaultMaxTokens ?? null,
    temperature: body.temperature ?? null,
    top_p: body.top_p ?? null,
    top_k: body.top_k ?? null,
    repetition_penalty: body.repetition_penalty ?? 1,
    presence_penalty: body.presence_penalty ?? null,
    frequency_penalty: body.frequency_penalty ?? null,
    seed: body.seed ?? null,
    stop: body.stop == null ? [] : typeof body.stop === "string" ? [body.stop] : body.stop,
  };
}

/** OpenAI chat messages as the engine's turns: "developer" is a system message, content parts are joined. */
export function openAiChatTurns(messages: OpenAiChatRequest["messages"]): ChatTurn[] {
  return messages.map((message) => ({
    role: message.role === "developer" ? ("system" as const) : message.role,
    content: openAiContentText(message.content),
  }));
}

/* ----- the JSON Schema subset node-llama-cpp turns into a grammar ----- */

const TYPES = new Set(["string", "number", "integer", "boolean", "null", "object", "array"]);
const FORMATS = new Set(["date-time", "date", "time"]);
/** Keywords that describe rather than constrain: accepted and left out of the grammar. */
const ANNOTATIONS = new Set(["title", "description", "$schema", "$comment", "$id", "examples", "default", "deprecated", "readOnly", "writeOnly"]);
const KEYWORDS = new Set([
  "type", "const", "enum", "oneOf", "anyOf", "$defs", "$ref",
  "minLength", "maxLength", "format",
  "properties", "additionalProperties", "required", "minProperties", "maxProperties",
  "items", "prefixItems", "minItems", "maxItems",
]);

/**
 * Checks a JSON Schema against what node-llama-cpp's JSON-schema grammar supports and returns
 * it in that dialect (`anyOf` becomes `oneOf`, which generates the same way; annotations are
 * dropped). Anything else is a 400 naming the keywords and where they are, so a client never
 * gets output that looks constrained but is not.
 */
export function supportedSchema(schema: unknown, where: string): JsonSchema {
  const problems: string[] = [];
  const converted = convert(schema, where, problems);
  if (problems.length > 0) refuse(`${where} uses JSON Schema features Corral cannot enforce: ${problems.slice(0, 5).join("; ")}${problems.length > 5 ? "; ..." : ""}`);
  return converted as JsonSchema;
}

function convert(schema: unknown, path: string, problems: string[]): unknown {
  if (schema === true || schema === undefined) return {};
  if (schema === null || typeof schema !== "object" || Array.isArray(schema)) {
    problems.push(`${path} is not a schema object`);
    return {};
  }
  const input = schema as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(input)) {
    if (ANNOTATIONS.has(key)) {
      if (key === "description" && typeof value === "string") out.description = value;
      continue;
    }
    if (!KEYWORDS.has(key)) {
      problems.push(`${path}: ${key}`);
      continue;
    }
    switch (key) {
      case "type": {
        const types = Array.isArray(value) ? value : [value];
        const bad = types.filter((t) => typeof t !== "string" || !TYPES.has(t));
        if (bad.length > 0) problems.push(`${path}: type ${JSON.stringify(value)}`);
        else if (Array.isArray(value) && types.some((t) => t === "object" || t === "array")) problems.push(`${path}: type ${JSON.stringify(value)} (a list may only hold simple types)`);
        out.type = value;
        break;
      }
      case "oneOf":
      case "anyOf":
        if (!Array.isArray(value) || value.length === 0) problems.push(`${path}: ${key} must be a non-empty array`);
        else out.oneOf = value.map((item, i) => convert(item, `${path}/${key}/${i}`, problems));
        break;
      case "$defs":
      case "properties":
        if (value === null || typeof value !== "object" || Array.isArray(value)) problems.push(`${path}: ${key} must be an object`);
        else out[key] = Object.fromEntries(Object.entries(value).map(([name, item]) => [name, convert(item, `${path}/${key}/${name}`, problems)]));
        break;
      case "items":
      case "additionalProperties":
        out[key] = typeof value === "boolean" && key === "additionalProperties" ? value : convert(value, `${path}/${key}`, problems);
        break;
      case "prefixItems":
        if (!Array.isArray(value)) problems.push(`${path}: prefixItems must be an array`);
        else out.prefixItems = value.map((item, i) => convert(item, `${path}/prefixItems/${i}`, problems));
        break;
      case "$ref":
        if (typeof value !== "string" || !/^#\/\$defs\/[^/]+$/.test(value)) problems.push(`${path}: $ref ${JSON.stringify(value)} (only "#/$defs/<name>")`);
        out.$ref = value;
        break;
      case "format":
        if (typeof value !== "string" || !FORMATS.has(value)) problems.push(`${path}: format ${JSON.stringify(value)} (only date-time, date, time)`);
        out.format = value;
        break;
      default:
        out[key] = value;
    }
  }
  if (out.format !== undefined && (out.minLength !== undefined || out.maxLength !== undefined)) problems.push(`${path}: format with minLength/maxLength`);
  return out;
}
