// Loads the generated test models through node-llama-cpp for real (CPU build, one thread).

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getLlama, LlamaChatSession, LlamaCompletion, LlamaLogLevel, type Llama, type LlamaContext, type LlamaModel } from "node-llama-cpp";
import { successorCompletion } from "../common/testmodels/make.js";
import { ensureTestModel } from "./helpers/test-models.js";

let llama: Llama;
beforeAll(async () => {
  llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error });
});
afterAll(async () => {
  await llama?.dispose();
});

/** Loads a model and a context; threads: 1, since the default of 4 collapses on 2 cores. */
async function load(kind: "tiny" | "successor", sequences = 1): Promise<{ model: LlamaModel; context: LlamaContext }> {
  const model = await llama.loadModel({ modelPath: await ensureTestModel(kind) });
  const context = await model.createContext({ threads: 1, contextSize: 1024, sequences });
  return { model, context };
}

describe("the successor model", () => {
  let model: LlamaModel;
  let context: LlamaContext;
  beforeAll(async () => {
    ({ model, context } = await load("successor", 3));
  });
  afterAll(async () => {
    await context?.dispose();
    await model?.dispose();
  });

  it("tokenizes ASCII text to one token per byte", () => {
    const text = "Hello, world!\n\t0123 ~";
    expect(model.tokenize(text)).toHaveLength(text.length);
    expect(model.detokenize(model.tokenize(text))).toBe(text);
  });

  it.each([
    ["greedy", {}],
    ["temperature 0.7", { temperature: 0.7, seed: 42 }],
  ])('continues "Hello wor" with exactly "stuvwxyz" then end-of-generation (%s)', async (_name, sampling) => {
    const sequence = context.getSequence();
    try {
      const completion = new LlamaCompletion({ contextSequence: sequence });
      const result = await completion.generateCompletionWithMeta("Hello wor", { maxTokens: 50, ...sampling });
      expect(result.response).toBe("stuvwxyz");
      expect(result.response).toBe(successorCompletion("Hello wor"));
      expect(result.metadata.stopReason).toBe("eogToken");
    } finally {
      sequence.dispose();
    }
  });

  it("answers a chat prompt through its ChatML template with the whole alphabet", async () => {
    const sequence = context.getSequence();
    try {
      const session = new LlamaChatSession({ contextSequence: sequence });
      expect(session.chatWrapper.wrapperName).toBe("ChatML");
      const answer = await session.prompt("Hi there", { maxTokens: 50 });
      // The rendered prompt ends "<|im_start|>assistant\n"; after "\n" comes "a", then the rest.
      expect(answer).toBe("abcdefghijklmnopqrstuvwxyz");
      expect(answer).toBe(successorCompletion("<|im_start|>assistant\n"));
      // A second turn continues the same conversation.
      expect(await session.prompt("More", { maxTokens: 50 })).toBe("abcdefghijklmnopqrstuvwxyz");
    } finally {
      sequence.dispose();
    }
  });
});

it.each(["f16", "q8_0"] as const)("the %s successor model continues \"Hello wor\" the same way", async (type) => {
  const model = await llama.loadModel({ modelPath: await ensureTestModel("successor", type) });
  try {
    const context = await model.createContext({ threads: 1, contextSize: 512 });
    const completion = new LlamaCompletion({ contextSequence: context.getSequence() });
    expect(await completion.generateCompletion("Hello wor", { maxTokens: 50 })).toBe("stuvwxyz");
    await context.dispose();
  } finally {
    await model.dispose();
  }
});

describe("the tiny model", () => {
  let model: LlamaModel;
  let context: LlamaContext;
  beforeAll(async () => {
    ({ model, context } = await load("tiny"));
  });
  afterAll(async () => {
    await context?.dispose();
    await model?.dispose();
  });

  it("generates exactly as many tokens as it is bounded to, the same ones each time when greedy", async () => {
    const run = async (n: number): Promise<number[]> => {
      const sequence = context.getSequence();
      try {
        const tokens: number[] = [];
        for await (const token of sequence.evaluate(model.tokenize("Hello"), { temperature: 0 })) {
          tokens.push(token);
          if (tokens.length >= n) break;
        }
        return tokens;
      } finally {
        sequence.dispose();
      }
    };
    const first = await run(64);
    expect(first).toHaveLength(64);
    expect(await run(64)).toEqual(first);
  });

  it("stops a completion at maxTokens", async () => {
    const sequence = context.getSequence();
    try {
      const completion = new LlamaCompletion({ contextSequence: sequence });
      const result = await completion.generateCompletionWithMeta("Hello", { maxTokens: 32 });
      expect(result.metadata.stopReason).toBe("maxTokens");
      // Random weights rarely emit EOS, so the bound is what stops it: 32 tokens were evaluated
      // after the BOS and the prompt's 5 (the last generated token is sampled, not evaluated).
      // (onToken is no use for counting: node-llama-cpp holds back tokens that end in a partial
      // UTF-8 character and drops them at the bound, and lets one more through when it is waiting
      // to finish such a character.)
      expect(sequence.contextTokens.length).toBeGreaterThanOrEqual(1 + 5 + 32 - 1);
      expect(sequence.contextTokens.length).toBeLessThanOrEqual(1 + 5 + 32);
    } finally {
      sequence.dispose();
    }
  });
});
