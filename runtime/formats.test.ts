import { describe, expect, it } from "vitest";
import type { GenerationResult } from "./engine.js";
import { chatFormat, generateFormat, openAiChatFormat, openAiCompletionFormat } from "./formats.js";

const result: GenerationResult = {
  text: "hello",
  finishReason: "length",
  promptTokens: 3,
  completionTokens: 2,
  decodeSeconds: 0.1,
  reusedPromptTokens: 0,
  aborted: false,
};
const usage = { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 };
const data = (value: unknown) => `data: ${JSON.stringify(value)}\n\n`;

describe("seed formats", () => {
  it("stream each chunk as its text, a line break splitting it into data lines of one event", () => {
    expect(generateFormat.chunk("a\nb")).toBe("data: a\ndata: b\n\n");
    expect(chatFormat.chunk("a")).toBe("data: a\n\n");
    expect(generateFormat.end(result) + chatFormat.end(result)).toBe("");
    expect(generateFormat.start).toBeUndefined();
  });

  it("answer with the seed's bodies", () => {
    expect(generateFormat.body(result)).toEqual({ response: "hello", finish_reason: "length", usage });
    expect(chatFormat.body(result)).toEqual({ choices: [{ message: { role: "assistant", content: "hello" }, finish_reason: "length" }], usage });
  });
});

describe("OpenAI formats", () => {
  const answer = { id: "x-1", created: 7, model: "acme/m", includeUsage: false };
  const completion = { id: "x-1", object: "text_completion", created: 7, model: "acme/m" };
  const chunk = { id: "x-1", object: "chat.completion.chunk", created: 7, model: "acme/m", system_fingerprint: null };

  it("stream text_completion objects, with a last usage object when asked", () => {
    const format = openAiCompletionFormat(answer);
    expect(format.start).toBeUndefined();
    expect(format.chunk("hi")).toBe(data({ ...completion, choices: [{ index: 0, text: "hi", logprobs: null, finish_reason: null }], usage: null }));
    expect(format.end(result)).toBe(data({ ...completion, choices: [{ index: 0, text: "", logprobs: null, finish_reason: "length" }], usage: null }));
    expect(openAiCompletionFormat({ ...answer, includeUsage: true }).end(result)).toBe(
      data({ ...completion, choices: [{ index: 0, text: "", logprobs: null, finish_reason: "length" }], usage: null }) + data({ ...completion, choices: [], usage }),
    );
    expect(format.body(result)).toEqual({ ...completion, choices: [{ index: 0, text: "hello", logprobs: null, finish_reason: "length" }], usage });
  });

  it("stream chat.completion.chunk objects: a role first, usage only when asked", () => {
    const format = openAiChatFormat(answer);
    expect(format.start?.()).toBe(data({ ...chunk, choices: [{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }] }));
    expect(format.chunk("hi")).toBe(data({ ...chunk, choices: [{ index: 0, delta: { content: "hi" }, logprobs: null, finish_reason: null }] }));
    expect(format.end(result)).toBe(data({ ...chunk, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: "length" }] }));
    const withUsage = openAiChatFormat({ ...answer, includeUsage: true });
    expect(withUsage.chunk("hi")).toBe(data({ ...chunk, choices: [{ index: 0, delta: { content: "hi" }, logprobs: null, finish_reason: null }], usage: null }));
    expect(withUsage.end(result)).toBe(
      data({ ...chunk, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: "length" }], usage: null }) + data({ ...chunk, choices: [], usage }),
    );
    expect(format.body(result)).toEqual({
      id: "x-1",
      object: "chat.completion",
      created: 7,
      model: "acme/m",
      system_fingerprint: null,
      choices: [{ index: 0, message: { role: "assistant", content: "hello", refusal: null }, logprobs: null, finish_reason: "length" }],
      usage,
    });
  });
});
