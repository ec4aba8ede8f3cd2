import { describe, expect, it } from "vitest";
import { hashKey } from "./prefix-ring.js";
import { CONVERSATION_PART_CHARS, PROMPT_KEY_CHARS, routingKey } from "./routing-key.js";

describe("routingKey", () => {
  it("a conversation keeps one key turn after turn: its system messages and first question", () => {
    const opening = [
      { role: "system", content: "You are terse." },
      { role: "user", content: "What is a pod?" },
    ];
    const first = routingKey({ messages: opening });
    const third = routingKey({
      messages: [...opening, { role: "assistant", content: "A group of containers." }, { role: "user", content: "And a node?" }, { role: "assistant", content: "A machine." }, { role: "user", content: "Thanks" }],
    });
    expect(first).toBe(third);
    expect(routingKey({ messages: [opening[0], { role: "user", content: "What is a node?" }] })).not.toBe(first);
  });

  it("reads OpenAI content parts and developer messages, and cuts each part", () => {
    const long = "x".repeat(CONVERSATION_PART_CHARS * 3);
    const key = routingKey({ messages: [{ role: "developer", content: long }, { role: "user", content: [{ type: "text", text: "hi" }, { type: "text", text: " there" }] }] })!;
    expect(key).toBe(hashKey(`${"x".repeat(CONVERSATION_PART_CHARS)}\u0000hi there`));
    expect(key).toBe(routingKey({ messages: [{ role: "system", content: "x".repeat(CONVERSATION_PART_CHARS + 1) }, { role: "user", content: "hi there" }] }));
    expect(routingKey({ messages: [{ role: "assistant", content: "only an answer" }] })).toBeUndefined();
  });

  it("a prompt's key is its start; a batch keys on its first prompt; OpenAI's one-element array too", () => {
    const prompt = "p".repeat(PROMPT_KEY_CHARS + 10);
    expect(routingKey({ prompt })).toBe(hashKey("p".repeat(PROMPT_KEY_CHARS)));
    expect(routingKey({ prompts: ["first", "second"] })).toBe(hashKey("first"));
    expect(routingKey({ prompt: ["array prompt"] })).toBe(hashKey("array prompt"));
    expect(routingKey({})).toBeUndefined();
  });
});
