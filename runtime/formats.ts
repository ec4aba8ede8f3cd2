import type { FinishReason, Usage } from "../common/api.js";
import { sseEvent } from "../common/sse.js";
import type { GenerationResult } from "./engine.js";

/**
 * How a finished or streamed generation is written for one API flavour: a JSON body when not
 * streamed, SSE events when streamed (the caller adds `data: [DONE]` after `end`).
 */
export interface OutputFormat {
  /** SSE bytes for one text chunk. */
  chunk(text: string): string;
  /** SSE bytes after the last chunk, before `[DONE]`. */
  end(result: GenerationResult): string;
  /** The JSON body of a non-streamed answer. */
  body(result: GenerationResult): unknown;
  /** SSE bytes written right after the headers, if any. */
  start?(): string;
}

export function usageOf(result: { promptTokens: number; completionTokens: number }): Usage {
  return {
    prompt_tokens: result.promptTokens,
    completion_tokens: result.completionTokens,
    total_tokens: result.promptTokens + result.completionTokens,
  };
}

/* ----- the seed API: each chunk is its text as one `data:` event ----- */

/** `/generate`. */
export const generateFormat: OutputFormat = {
  chunk: (text) => sseEvent(text),
  end: () => "",
  body: (result) => ({
    response: result.text,
    finish_reason: result.finishReason,
    usage: usageOf(result),
  }),
};

/** `/chat`. */
export const chatFormat: OutputFormat = {
  chunk: (text) => sseEvent(text),
  end: () => "",
  body: (result) => ({
    choices: [{ message: { role: "assistant", content: result.text }, finish_reason: result.finishReason }],
    usage: usageOf(result),
  }),
};

/* ----- the OpenAI-compatible API: each chunk is a JSON object ----- */

/** What every object of one OpenAI answer repeats. */
export interface OpenAiAnswer {
  id: string;
  /** Unix seconds. */
  created: number;
  model: string;
  /** `stream_options.include_usage`: a last chunk carries the usage. */
  includeUsage: boolean;
}

/** `/v1/completions`: `text_completion` objects, streamed or not. */
export function openAiCompletionFormat(answer: OpenAiAnswer): OutputFormat {
  const { id, created, model, includeUsage } = answer;
  const frame = (choices: Record<string, unknown>[], usage: Usage | null) =>
    `data: ${JSON.stringify({ id, object: "text_completion", created, model, choices, usage })}\n\n`;
  return {
    chunk: (text) => frame([{ index: 0, text, logprobs: null, finish_reason: null }], null),
    end: (result) =>
      frame([{ index: 0, text: "", logprobs: null, finish_reason: result.finishReason }], null) + (includeUsage ? frame([], usageOf(result)) : ""),
    body: (result) => ({
      id,
      object: "text_completion",
      created,
      model,
      choices: [{ index: 0, text: result.text, logprobs: null, finish_reason: result.finishReason }],
      usage: usageOf(result),
    }),
  };
}

/** `/v1/chat/completions`: a `chat.completion`, or `chat.completion.chunk` objects when streamed. */
export function openAiChatFormat(answer: OpenAiAnswer): OutputFormat {
  const { id, created, model, includeUsage } = answer;
  const chunk = (delta: Record<string, unknown>, finish: FinishReason | null, usage?: Usage) =>
    `data: ${JSON.stringify({
      id,
      object: "chat.completion.chunk",
      created,
      model,
      system_fingerprint: null,
      choices: usage ? [] : [{ index: 0, delta, logprobs: null, finish_reason: finish }],
      ...(includeUsage ? { usage: usage ?? null } : {}),
    })}\n\n`;
  return {
    start: () => chunk({ role: "assistant", content: "" }, null),
    chunk: (text) => chunk({ content: text }, null),
    end: (result) => chunk({}, result.finishReason) + (includeUsage ? chunk({}, null, usageOf(result)) : ""),
    body: (result) => ({
      id,
      object: "chat.completion",
      created,
      model,
      system_fingerprint: null,
      choices: [{ index: 0, message: { role: "assistant", content: result.text, refusal: null }, logprobs: null, finish_reason: result.finishReason }],
      usage: usageOf(result),
    }),
  };
}
