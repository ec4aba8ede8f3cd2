import { describe, expect, it } from "vitest";
import type { Token } from "node-llama-cpp";
import { BatchDecoder, type BatchDecoderOptions, type DecoderModel, type DecoderSlot, type PromptAdmission } from "./decoder.js";
import type { NativeContext, NativeSampler } from "./native.js";
import type { SamplingPlan } from "./sampling.js";

/**
 * A native context that "decodes" instantly and samples from a script per sequence, logging every
 * call, so the order of the loop's work against what it hands to callers can be checked.
 */
class ScriptedContext implements NativeContext {
  readonly log: string[] = [];
  private decodes = 0;
  constructor(private readonly scripts: Map<number, Token[]>) {}
  private readonly batch: { sequenceId: number; logitIndex: number }[] = [];
  initBatch(): void {
    this.batch.length = 0;
  }
  addToBatch(sequenceId: number, _first: number, tokens: Uint32Array, logitIndexes: Uint32Array): Uint32Array {
    if (tokens.length > 1) this.log.push(`prompt ${sequenceId}`);
    const indexes = Uint32Array.from(logitIndexes, () => this.batch.length + tokens.length - 1);
    if (logitIndexes.length > 0) this.batch.push({ sequenceId, logitIndex: indexes[0]! });
    return indexes;
  }
  async decodeBatch(): Promise<void> {
    this.log.push(`decode ${++this.decodes}`);
  }
  async sampleToken(batchLogitIndex: number, sampler: NativeSampler): Promise<Token | -1> {
    const sequenceId = (sampler as unknown as { sequenceId: number }).sequenceId;
    const script = this.scripts.get(sequenceId)!;
    if (!this.batch.some((item) => item.logitIndex === batchLogitIndex && item.sequenceId === sequenceId)) throw new Error("sampled a position without logits");
    return script.shift() ?? -1;
  }
  removeTokenCellsFromSequence(): boolean {
    return true;
  }
}

const plan = (maxTokens: number): SamplingPlan => ({
  maxTokens,
  temperature: 0,
  topP: 1,
  topK: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
  stop: [],
});

function slot(sequenceId: number): DecoderSlot {
  const sampler = { sequenceId, applyConfig() {}, dispose() {} } as unknown as NativeSampler;
  return { sequenceId, sampler, cached: [] };
}

// Token t reads as the letter at index t - 10 (a = 10).
const model = {
  isEogToken: (token: Token) => token === 2,
  detokenize: (tokens: readonly Token[]) => tokens.map((token) => String.fromCharCode(87 + token)).join(""),
};

/** A decoder over `native` with a roomy batch and context; `options` overrides the rest. */
function decoderOf(native: NativeContext, options: Partial<BatchDecoderOptions> = {}, decoderModel: DecoderModel = model): BatchDecoder {
  return new BatchDecoder(native, decoderModel, { batchSize: 64, contextSize: 64, sampleBehindDecode: true, promptAdmission: "cost", arriving: () => 0, ...options });
}

describe("BatchDecoder", () => {
  for (const sampleBehindDecode of [false, true]) {
    it(`hands over a step's text and results only once the next decode is queued (sampleBehindDecode ${sampleBehindDecode})`, async () => {
      const native = new ScriptedContext(
        new Map([
          [0, [10, 11, 12] as Token[]],
          [1, [13, 14, 15, 16, 2] as Token[]],
        ]),
      );
      const decoder = decoderOf(native, { sampleBehindDecode });
      const request = (name: string, maxTokens: number) => ({
        prompt: [1, 5, 6] as Token[],
        plan: plan(maxTokens),
        stopStrings: [],
        stopTokenSequences: [],
        onText: (text: string) => native.log.push(`${name} text ${text}`),
      });
      const short = decoder.generate(slot(0), request("short", 2)).then((result) => {
        native.log.push(`short done ${result.finishReason}`);
        return result;
      });
      const long = decoder.generate(slot(1), request("long", 10)).then((result) => {
        native.log.push(`long done ${result.finishReason}`);
        return result;
      });
      const [shortResult, longResult] = await Promise.all([short, long]);

      expect(shortResult).toMatchObject({ text: "ab", finishReason: "length", completionTokens: 2, aborted: false });
      expect(longResult).toMatchObject({ text: "defg", finishReason: "stop", completionTokens: 5, aborted: false });
      // Step n's tokens reach their callers after decode n + 1 is queued; the last step's
      // results once the loop has nothing left to decode.
      expect(native.log.filter((entry) => !entry.startsWith("prompt"))).toEqual([
        "decode 1",
        "decode 2",
        "short text a",
        "long text d",
        "decode 3",
        "short text b",
        "long text e",
        "short done length",
        "decode 4",
        "long text f",
        "decode 5",
        "long text g",
        "long done stop",
      ]);
    });
  }

  /** Three requests at once on sequences 0-2; the log of their prompt reads and decodes. */
  async function burst(native: ScriptedContext, scripts: Map<number, Token[]>, decoder: BatchDecoder): Promise<string[]> {
    native.log.length = 0;
    for (const id of [0, 1, 2]) scripts.set(id, [10, 11, 12] as Token[]);
    const request = { prompt: [1, 5, 6, 7] as Token[], plan: plan(3), stopStrings: [], stopTokenSequences: [] };
    await Promise.all([0, 1, 2].map((id) => decoder.generate(slot(id), request)));
    return native.log.filter((entry) => entry.startsWith("prompt") || entry.startsWith("decode"));
  }

  function burstDecoder(promptAdmission: PromptAdmission) {
    const scripts = new Map<number, Token[]>();
    const native = new ScriptedContext(scripts);
    const decoder = decoderOf(native, { promptAdmission });
    return { decoder, run: () => burst(native, scripts, decoder) };
  }

  /** A CPU-like cost: 6 ms a step plus 5 ms a token. */
  function teachCpuCost(decoder: BatchDecoder): void {
    for (let i = 0; i < 40; i++) decoder.cost.observe(1 + (i % 8), 0.006 + 0.005 * (1 + (i % 8)));
  }

  it("reads a burst of prompts one per step once a token costs about as much as a step's fixed part", async () => {
    const { decoder, run } = burstDecoder("cost");
    // Unknown cost: a burst shares one step, as before.
    expect((await run()).slice(0, 4)).toEqual(["prompt 0", "prompt 1", "prompt 2", "decode 1"]);

    teachCpuCost(decoder);
    expect((await run()).slice(0, 6)).toEqual([
      "prompt 0",
      "decode 4",
      "prompt 1",
      "decode 5",
      "prompt 2",
      "decode 6",
    ]);
  });

  it("reads every waiting prompt in one step with promptAdmission all, whatever the cost", async () => {
    const { decoder, run } = burstDecoder("all");
    teachCpuCost(decoder);
    expect((await run()).slice(0, 4)).toEqual(["prompt 0", "prompt 1", "prompt 2", "decode 1"]);
  });

  it("makes a step's text while the next step decodes; a stop string found then ends the job after that step", async () => {
    // Sequence 0 reads "abcde..."; the stop string "bc" is complete once token 12 (c) is text.
    const native = new ScriptedContext(new Map([[0, [10, 11, 12, 13, 14, 15] as Token[]]]));
    const logged = {
      isEogToken: model.isEogToken,
      detokenize: (tokens: readonly Token[]) => {
        const text = model.detokenize(tokens);
        native.log.push(`detokenize ${text}`);
        return text;
      },
    };
    const decoder = decoderOf(native, {}, logged);
    const slot0 = slot(0);
    const result = await decoder.generate(slot0, { prompt: [1, 5] as Token[], plan: plan(10), stopStrings: ["bc"], stopTokenSequences: [] });
    await decoder.idle();

    expect(result).toMatchObject({ text: "a", finishReason: "stop", completionTokens: 3, aborted: false });
    // Token n's text is made after decode n + 1 is queued (decode 1 reads the prompt).
    expect(native.log.filter((entry) => !entry.startsWith("prompt"))).toEqual([
      "decode 1",
      "decode 2",
      "detokenize a",
      "decode 3",
      "detokenize b",
      "decode 4",
      "detokenize c",
    ]);
    // Decode 4 still fed token c into the sequence; the slot records it, so the next request
    // on this slot reuses exactly the cells that hold.
    expect(slot0.cached).toEqual([1, 5, 10, 11, 12]);
  });

  it("ends with finish reason stop when the last allowed token completes a stop string", async () => {
    const native = new ScriptedContext(new Map([[0, [10, 11, 12] as Token[]]]));
    const decoder = decoderOf(native);
    const result = await decoder.generate(slot(0), { prompt: [1, 5] as Token[], plan: plan(2), stopStrings: ["ab"], stopTokenSequences: [] });
    expect(result).toMatchObject({ text: "", finishReason: "stop", completionTokens: 2 });
  });

  it("hands over text produced before an abort, then the aborted result", async () => {
    const native = new ScriptedContext(new Map([[0, [10, 11, 12, 13, 14, 15] as Token[]]]));
    const decoder = decoderOf(native);
    const controller = new AbortController();
    const texts: string[] = [];
    const result = await decoder.generate(slot(0), {
      prompt: [1, 5] as Token[],
      plan: plan(10),
      stopStrings: [],
      stopTokenSequences: [],
      signal: controller.signal,
      onText: (text) => {
        texts.push(text);
        if (texts.length === 2) controller.abort();
      },
    });
    expect(result.aborted).toBe(true);
    expect(result.text).toBe(texts.join(""));
    expect(texts.join("")).toMatch(/^ab/);
  });
});
