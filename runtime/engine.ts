import {
  getLlama,
  LlamaLogLevel,
  LlamaGrammarEvaluationState,
  LlamaText,
  resolveChatWrapper,
  type LlamaGrammar,
  type ChatHistoryItem,
  type ChatWrapper,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaModel,
  type Token,
} from "node-llama-cpp";
import type { Logger } from "../common/logger.js";
import { HttpError, payloadTooLarge } from "../common/errors.js";
import type { FinishReason } from "../common/api.js";
import { SlotPool } from "./slots.js";
import type { SamplingPlan } from "./sampling.js";
import { BatchDecoder, reusablePrefix, type DecoderSlot, type PromptAdmission } from "./decoder.js";
import { nativeHandles, sequenceIdOf } from "./native.js";
import { hasSingleThreadPool } from "../common/runtime-env.js";
import type { ResponseFormat } from "./openai.js";

export type GpuChoice = "auto" | "cuda" | "vulkan" | "off";

export interface EngineOptions {
  modelPath: string;
  parallel: number;
  /** Context tokens per sequence; undefined = min(model's, 4096). */
  contextSize?: number;
  batchSize?: number;
  threads: number;
  gpu: GpuChoice;
  gpuLayers: "auto" | "max" | number;
  maxQueue: number;
  /** Which waiting prompts join a step (see BatchDecoderOptions.promptAdmission). */
  promptAdmission: PromptAdmission;
  logger: Logger;
  onLoadProgress?: (fraction: number) => void;
  /** Called after every batched decode: tokens and sequences in the batch, and seconds it took. */
  onDecodeStep?: (tokens: number, sequences: number, seconds: number) => void;
  /** Requests the server has received and not yet handed over (see BatchDecoderOptions.arriving). */
  arriving: () => number;
}

export interface ChatTurn {
  role: "system" | "user" | "assistant";
  content: string;
}

/** A prompt ready to run: its tokens (without the BOS the completion adds) and any stop triggers. */
export interface PreparedPrompt {
  tokens: Token[];
  /** Tokens the model will see, BOS included: what `usage.prompt_tokens` reports. */
  promptTokens: number;
  /** Template stop triggers with text: watched for in the output. */
  stopStrings: readonly string[];
  /** Template stop triggers made of special tokens (no text to match): matched as token sequences. */
  stopTokenSequences: readonly (readonly Token[])[];
}

export interface GenerationResult {
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
  /** Seconds from the start of the call to the first generated token. */
  timeToFirstTokenSeconds?: number;
  /** Seconds spent generating after the first token. */
  decodeSeconds: number;
  /** Prompt tokens reused from the sequence's previous request rather than decoded again. */
  reusedPromptTokens: number;
  aborted: boolean;
}

export interface GenerationOptions {
  signal?: AbortSignal;
  onText?: (text: string) => void;
  /** Called once a sequence is assigned (the request left the queue). */
  onStart?: () => void;
  /** Constrains sampling to this grammar (see Engine.grammarFor). */
  grammar?: LlamaGrammar;
  /**
   * The caller already checked that the queue can take this request with the others of its group
   * (Engine.canAdmit for a batch), so it waits for a sequence rather than being refused with 429.
   */
  admitted?: boolean;
}

interface Slot extends DecoderSlot {
  /** Held so node-llama-cpp never hands this sequence id to anything else. */
  sequence: LlamaContextSequence;
}

const DEFAULT_CONTEXT = 4096;

/**
 * One model, one context with N parallel sequences: concurrent requests are decoded together in
 * the same batch. Requests beyond N wait in the slot pool's bounded queue.
 */
export class Engine {
  private constructor(
    readonly llama: Llama,
    readonly model: LlamaModel,
    readonly context: LlamaContext,
    private readonly pool: SlotPool<Slot>,
    private readonly slots: readonly Slot[],
    private readonly chatWrapper: ChatWrapper,
    readonly threads: number,
    private readonly bosToken: Token | null,
    private readonly decoder: BatchDecoder,
  ) {}

  /** Sequences serving a request now (acquired from the pool, not yet released). */
  private readonly running = new Set<Slot>();

  /** node-llama-cpp's built-in JSON grammar, made on first use. */
  private jsonGrammar: Promise<LlamaGrammar> | undefined;

  static async load(options: EngineOptions): Promise<Engine> {
    const log = options.logger;
    const llama = await getLlama({
      gpu: options.gpu === "off" ? false : options.gpu,
      build: "never",
      maxThreads: options.threads,
      logLevel: LlamaLogLevel.warn,
      logger: (level, message) => {
        const text = message.trim();
        if (!text) return;
        if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) log.error({ source: "llama.cpp" }, text);
        else if (level === LlamaLogLevel.warn) log.warn({ source: "llama.cpp" }, text);
        else log.debug({ source: "llama.cpp" }, text);
      },
    });
    const sampleBehindDecode = hasSingleThreadPool();
    // A local build (`npm run build:llama`) is compiled for this CPU; the prebuilt one picks the
    // closest of its generic CPU variants, which costs F16 models ~7% per step (bench/README.md).
    log.info({ llamaBuild: llama.buildType, sampleBehindDecode, promptAdmission: options.promptAdmission }, llama.buildType === "localBuild" ? "llama.cpp: local build" : "llama.cpp: prebuilt binaries");
    const model = await llama.loadModel({
      modelPath: options.modelPath,
      gpuLayers: options.gpu === "off" ? 0 : options.gpuLayers,
      onLoadProgress: options.onLoadProgress,
    });
    const trained = model.trainContextSize;
    const contextSize = Math.min(options.contextSize ?? DEFAULT_CONTEXT, trained > 0 ? trained : Number.MAX_SAFE_INTEGER);
    const context = await model.createContext({
      sequences: options.parallel,
      contextSize,
      batchSize: options.batchSize ?? Math.min(512, contextSize * options.parallel),
      threads: options.threads,
      flashAttention: "auto",
      failedCreationRemedy: false,
    });
    const native = nativeHandles(llama, model, context);
    const slots: Slot[] = [];
    for (let index = 0; index < options.parallel; index++) {
      const sequence = context.getSequence();
      slots.push({ sequence, sequenceId: sequenceIdOf(sequence), sampler: native.createSampler(), cached: [] });
    }
    const decoder = new BatchDecoder(
      native.context,
      { isEogToken: memoized((token: Token) => model.isEogToken(token)), detokenize: (tokens, lastTokens) => model.detokenize(tokens, false, lastTokens) },
      {
        batchSize: context.batchSize,
        contextSize: context.contextSize,
        sampleBehindDecode,
        promptAdmission: options.promptAdmission,
        onStep: options.onDecodeStep,
        arriving: options.arriving,
      },
    );
    const chatWrapper = resolveChatWrapper(model);
    const bos = model.tokens.shouldPrependBosToken ? model.tokens.bos : null;
    return new Engine(llama, model, context, new SlotPool(slots, options.maxQueue), slots, chatWrapper, options.threads, bos, decoder);
  }

  get contextSize(): number {
    return this.context.contextSize;
  }

  get parallel(): number {
    return this.slots.length;
  }

  get slotsBusy(): number {
    return this.pool.busy;
  }

  get queueDepth(): number {
    return this.pool.queued;
  }

  /**
   * KV cells in use and in all: `used` counts the cells of the sequences serving a request now
   * (prompt and output so far, a reused prefix included); `total` is what the context was created
   * with for them, `contextSize` per sequence, which no sequence can outgrow. The prefix an idle
   * sequence keeps for reuse is not counted: the next request on it overwrites it, as vLLM counts
   * a finished request's prefix-cached blocks as free. Read on a metrics scrape, never per token.
   */
  get kvCacheCells(): { used: number; total: number } {
    let used = 0;
    for (const slot of this.running) used += slot.cached.length;
    return { used, total: this.contextSize * this.slots.length };
  }

  /** The batch loop's estimate of a decode step's cost (see StepCost); undefined until known. */
  get stepCost(): { fixedSeconds: number; secondsPerToken: number } | undefined {
    return this.decoder.cost.estimate();
  }

  get chatTemplateName(): string {
    return this.chatWrapper.wrapperName;
  }

  canAdmit(count: number): boolean {
    return this.pool.canAdmit(count);
  }

  /** Tokenizes a plain prompt and checks that it leaves room to generate. */
  preparePrompt(prompt: string): PreparedPrompt {
    const tokens = this.model.tokenize(prompt, false, this.bosToken === null ? undefined : "trimLeadingSpace");
    return this.checkFits({ tokens, promptTokens: tokens.length + (this.bosToken === null ? 0 : 1), stopStrings: [], stopTokenSequences: [] });
  }

  /** Renders messages with the model's own chat template. */
  prepareChat(messages: readonly ChatTurn[]): PreparedPrompt {
    const history: ChatHistoryItem[] = messages.map((message) => {
      if (message.role === "system") return { type: "system", text: message.content };
      if (message.role === "user") return { type: "user", text: message.content };
      return { type: "model", response: [message.content] };
    });
    history.push({ type: "model", response: [] });
    const state = this.chatWrapper.generateContextState({ chatHistory: history });
    let tokens = state.contextText.tokenize(this.model.tokenizer);
    // The completion prepends BOS itself; a template that renders one would double it.
    if (this.bosToken !== null && tokens[0] === this.bosToken) tokens = tokens.slice(1);
    return this.checkFits({
      tokens,
      promptTokens: tokens.length + (this.bosToken === null ? 0 : 1),
      ...this.splitStopTriggers(state.stopGenerationTriggers.map((trigger) => LlamaText(trigger))),
    });
  }

  private checkFits(prepared: PreparedPrompt): PreparedPrompt {
    if (prepared.promptTokens >= this.contextSize) {
      throw payloadTooLarge(
        `prompt is ${prepared.promptTokens} tokens; the context holds ${this.contextSize} per sequence, so nothing is left to generate`,
      );
    }
    return prepared;
  }

  tokensLeft(prepared: PreparedPrompt): number {
    return this.contextSize - prepared.promptTokens;
  }

  /**
   * The grammar that enforces an OpenAI `response_format`, or undefined for free text. A schema
   * node-llama-cpp cannot turn into a grammar is a 400 (runtime/openai.ts refuses the features
   * it knows are missing first).
   */
  async grammarFor(format: ResponseFormat): Promise<LlamaGrammar | undefined> {
    if (format.type === "text") return undefined;
    if (format.type === "json_object") {
      this.jsonGrammar ??= this.llama.getGrammarFor("json");
      return this.jsonGrammar;
    }
    let grammar: LlamaGrammar;
    try {
      // eslint-disable-next-line @typescript-eslint/no-explicit-any -- checked by supportedSchema
      grammar = await this.llama.createGrammarForJsonSchema(format.schema as any);
    } catch (error) {
      throw new HttpError(400, `response_format.json_schema.schema cannot be enforced: ${(error as Error).message}`);
    }
    const text = boundedNumbers(grammar.grammar);
    if (text === grammar.grammar) return grammar;
    return this.llama.createGrammar({ grammar: text, stopGenerationTriggers: grammar.stopGenerationTriggers, trimWhitespaceSuffix: grammar.trimWhitespaceSuffix });
  }

  /** Runs one generation on a free sequence (waiting in the queue if needed). */
  async generate(prepared: PreparedPrompt, plan: SamplingPlan, options: GenerationOptions = {}): Promise<GenerationResult> {
    const started = performance.now();
    const prompt = this.bosToken === null ? prepared.tokens : [this.bosToken, ...prepared.tokens];
    // A free sequence that already holds the longest start of this prompt decodes the least; on a
    // tie the lowest sequence id, which keeps busy ids contiguous so a decode step stays one
    // micro-batch (see BatchDecoder).
    const parallel = this.slots.length;
    const prefer = (slot: Slot) => reusablePrefix(slot.cached, prompt) * parallel + (parallel - 1 - slot.sequenceId);
    const slot = options.admitted ? await this.pool.acquireAdmitted(options.signal, prefer) : await this.pool.acquire(options.signal, prefer);
    this.running.add(slot);
    try {
      options.onStart?.();
      const requested = plan.stop.filter((stop) => stop.length > 0);
      // node-llama-cpp's JSON grammars allow endless trailing whitespace; like LlamaChat, Corral
      // stops at the grammar's own trigger (blank lines) and trims what the value is followed by.
      const grammar = options.grammar;
      const grammarStops = grammar ? grammar.stopGenerationTriggers.map((trigger) => LlamaText(trigger).toString()).filter((text) => text.length > 0) : [];
      const stops = [...requested, ...grammarStops];
      const result = await this.decoder.generate(slot, {
        prompt,
        plan,
        grammar: grammar ? new LlamaGrammarEvaluationState({ model: this.model, grammar }) : undefined,
        stopStrings: stops.length > 0 ? [...prepared.stopStrings, ...stops] : prepared.stopStrings,
        stopTokenSequences: prepared.stopTokenSequences,
        signal: options.signal,
        onText: options.onText,
      });
      const ended = performance.now();
      return {
        text: grammar?.trimWhitespaceSuffix ? result.text.trimEnd() : result.text,
        finishReason: result.finishReason,
        promptTokens: prepared.promptTokens,
        completionTokens: result.completionTokens,
        timeToFirstTokenSeconds: result.firstTokenAt === undefined ? undefined : (result.firstTokenAt - started) / 1000,
        decodeSeconds: result.firstTokenAt === undefined ? 0 : (ended - result.firstTokenAt) / 1000,
        reusedPromptTokens: result.reusedPromptTokens,
        aborted: result.aborted,
      };
    } finally {
      this.running.delete(slot);
      this.pool.release(slot);
    }
  }

  /**
   * Splits a template's stop triggers into text to watch the output for and token sequences
   * (triggers made of special tokens, which have no text to match).
   */
  private splitStopTriggers(triggers: readonly LlamaText[]): Pick<PreparedPrompt, "stopStrings" | "stopTokenSequences"> {
    const stopStrings: string[] = [];
    const stopTokenSequences: Token[][] = [];
    for (const trigger of triggers) {
      if (trigger.values.every((value) => typeof value === "string")) {
        const text = trigger.toString();
        if (text.length > 0) stopStrings.push(text);
      } else {
        const tokens = trigger.tokenize(this.model.tokenizer);
        if (tokens.length > 0) stopTokenSequences.push(tokens);
      }
    }
    return { stopStrings, stopTokenSequences };
  }

  /** Stops admitting work; requests still waiting get 503. */
  stopAdmitting(reason: string): void {
    this.pool.close(reason);
  }

  async dispose(): Promise<void> {
    await this.decoder.idle();
    for (const slot of this.slots) {
      slot.sampler.dispose();
      slot.sequence.dispose();
    }
    await this.context.dispose();
    await this.model.dispose();
    await this.llama.dispose();
  }
}

/** The exponent node-llama-cpp's JSON-schema grammar allows on integers and numbers. */
const SCHEMA_EXPONENT = ' ([eE] [-+]? ("0" | [1-9] [0-9]{0,15}))?';

/**
 * node-llama-cpp lets a schema's integers and numbers carry exponents of up to 16 digits, so a
 * model may write `{"a": 5E2795}`: valid JSON that every JSON parser reads as Infinity (a float,
 * for an "integer"). Integers get no exponent here, and other numbers one of at most two digits.
 */
export function boundedNumbers(grammar: string): string {
  return grammar
    .split("\n")
    .map((rule) => (rule.startsWith("integer-number-rule ::=") ? rule.replace(SCHEMA_EXPONENT, "") : rule.replace(SCHEMA_EXPONENT, ' ([eE] [-+]? [0-9]{1,2})?')))
    .join("\n");
}

/**
 * `lookup` with its answers kept: the batch loop asks once per sampled token, and node-llama-cpp
 * answers isEogToken with a native call each time. Bounded by the vocabulary.
 */
function memoized(lookup: (token: Token) => boolean): (token: Token) => boolean {
  const known = new Map<Token, boolean>();
  return (token) => {
    let answer = known.get(token);
    if (answer === undefined) {
      answer = lookup(token);
      known.set(token, answer);
    }
    return answer;
  };
}
