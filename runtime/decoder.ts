import type { LlamaGrammarEvaluationState, Token } from "node-llama-cpp";
import type { FinishReason } from "../common/api.js";
import type { NativeContext, NativeSampler } from "./native.js";
import type { SamplingPlan } from "./sampling.js";
import { StepCost } from "./step-cost.js";
import { TextAssembler, type Detokenize } from "./text-stream.js";

/** The penalty window: llama-server's `repeat_last_n` default, counted over prompt and output. */
const PENALTY_LAST_TOKENS = 64;
/** The longest an idle loop waits for arriving requests before its first step (see startLoop). */
const IDLE_JOIN_MS = 2;
const NO_LOGITS = new Uint32Array(0);
const LOGITS_AT_FIRST = Uint32Array.of(0);

/** One context sequence: its id, its sampler and the tokens whose KV cells it holds now. */
export interface DecoderSlot {
  readonly sequenceId: number;
  readonly sampler: NativeSampler;
  /** Tokens in the sequence's KV cache, in position order (kept between requests for prefix reuse). */
  cached: Token[];
}

export interface DecodeRequest {
  /** The whole prompt, BOS included. */
  prompt: readonly Token[];
  plan: SamplingPlan;
  /** A grammar's evaluation state for this request alone: sampling only picks tokens it allows. */
  grammar?: LlamaGrammarEvaluationState;
  stopStrings: readonly string[];
  /** Token sequences that end generation (a chat template's special end markers). */
  stopTokenSequences: readonly (readonly Token[])[];
  signal?: AbortSignal;
  onText?: (text: string) => void;
}

export interface DecodeResult {
  text: string;
  finishReason: FinishReason;
  /** Every sampled token, an end-of-generation one included. */
  completionTokens: number;
  /** Prompt tokens whose KV cells were reused from the slot's previous request. */
  reusedPromptTokens: number;
  /** performance.now() of the first sampled token. */
  firstTokenAt?: number;
  aborted: boolean;
}

export interface DecoderModel {
  isEogToken(token: Token): boolean;
  detokenize: Detokenize;
}

class Job {
  /** Prompt tokens already decoded into the slot. */
  fed = 0;
  /** The last sampled token, decoded in the next step. */
  next: Token | undefined;
  sampled = 0;
  firstTokenAt: number | undefined;
  /** This step's batch position whose logits are sampled, or -1. */
  logitIndex = -1;
  /** The last sampled tokens, as long as the longest stop token sequence. */
  readonly tail: Token[] = [];
  readonly assembler: TextAssembler;
  /** Sampled tokens not yet turned into text (see BatchDecoder.assemble). */
  readonly unassembled: Token[] = [];
  /** Text produced this step, handed to onText once the next step is under way. */
  pendingText = "";
  /** The job's result, handed over once the next step is under way. */
  outcome: DecodeResult | undefined;

  /** Prompt tokens whose KV cells the slot held already (set on admission). */
  reused = 0;

  constructor(
    readonly slot: DecoderSlot,
    readonly request: DecodeRequest,
    readonly resolve: (result: DecodeResult) => void,
    readonly reject: (error: unknown) => void,
    detokenize: Detokenize,
  ) {
    this.assembler = new TextAssembler(detokenize, request.prompt, request.stopStrings);
  }
}

/**
 * Which waiting prompts join a step. "cost": the first, and more while they cost no more than the
 * rest of the step (StepCost.promptBudget). "all": every one, up to the batch size.
 */
export type PromptAdmission = "cost" | "all";

export interface BatchDecoderOptions {
  batchSize: number;
  /** Context tokens per sequence. */
  contextSize: number;
  /**
   * Queue a step's sampling together with its decode. Only safe when libuv runs one worker
   * (`hasSingleThreadPool()`): the work items then run in order, so sampling reads the new
   * logits, and the worker goes from decode to sampling without waiting for the JS thread to
   * pick up the decode's result (one round trip less per step; ~6% more requests/s on the tiny
   * model at 16 sequences). With more workers a sample could run before or during its decode.
   */
  sampleBehindDecode: boolean;
  promptAdmission: PromptAdmission;
  /** Called after every decode step: tokens in its batch, sequences in it, seconds it took. */
  onStep?: (tokens: number, sequences: number, seconds: number) => void;
  /** Requests received by the server and not yet handed to the engine (see waitForArrivals). */
  arriving: () => number;
}

/**
 * Corral's decode loop over one llama.cpp context, shaped like llama-server's: each step builds
 * one batch with the next token of every generating sequence first and prompt chunks after them
 * up to the batch size, decodes it, and samples every sequence whose logits it produced. New
 * requests join, and finished or aborted ones leave, between two steps, so joining never waits
 * for a lock behind queued decodes. A slot keeps its KV cells after a request, and the next
 * request on it decodes only the part of its prompt that differs.
 */
export class BatchDecoder {
  private readonly incoming: Job[] = [];
  private readonly active: Job[] = [];
  /**
   * Jobs with text or a result to hand over. They are handed over only after the next step's
   * decode is queued, so writing responses (and the handlers they resume) runs while the engine
   * decodes instead of between two steps, where it would hold up the decode.
   */
  private readonly outbox: Job[] = [];
  private loop: Promise<void> | undefined;
  /** The most sequences decoded together in the last run of the loop. */
  private lastPeak = 0;
  /** What a step costs here, learned from the steps (see the prompt admission in step()). */
  readonly cost = new StepCost();
  /** The token of a one-token batch item (see step()). */
  private readonly oneToken = new Uint32Array(1);

  constructor(
    private readonly native: NativeContext,
    private readonly model: DecoderModel,
    private readonly options: BatchDecoderOptions,
  ) {}

  /** Generates on `slot` (which the caller owns until this settles). */
  generate(slot: DecoderSlot, request: DecodeRequest): Promise<DecodeResult> {
    return new Promise<DecodeResult>((resolve, reject) => {
      this.incoming.push(new Job(slot, request, resolve, reject, this.model.detokenize));
      this.startLoop();
    });
  }

  private startLoop(): void {
    if (this.loop) return;
    this.loop = (async () => {
      // The loop was idle: requests that arrive together (clients answered in the same step
      // send their next ones at once) join the same first step, one pass over the weights for
      // all their prompts instead of one for the first and another for the rest. A lone
      // request (nothing else arriving) starts at once.
      await this.waitForArrivals();
      await this.run();
    })().finally(() => {
      this.loop = undefined;
      // A request that arrived as the loop was ending starts a new one.
      if (this.incoming.length > 0) this.startLoop();
    });
  }

  /**
   * Before the first step of an idle loop: waits up to IDLE_JOIN_MS while requests are still
   * being read, or while fewer have joined than the last run had at its busiest (its clients tend
   * to come back together). A lone client, whose runs peak at one sequence, waits for nothing.
   */
  private async waitForArrivals(): Promise<void> {
    const deadline = performance.now() + IDLE_JOIN_MS;
    // Requests read in the same I/O round as this one register before this resolves.
    await new Promise((resolve) => setImmediate(resolve));
    const expected = Math.max(1, this.lastPeak);
    while ((this.options.arriving() > 0 || this.incoming.length < expected) && performance.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  }

  /** Resolves once no request is in flight. */
  async idle(): Promise<void> {
    while (this.loop) await this.loop;
  }

  private async run(): Promise<void> {
    let peak = 0;
    try {
      for (;;) {
        this.admit();
        this.dropAborted();
        if (this.active.length === 0) break;
        peak = Math.max(peak, this.active.length);
        await this.step();
      }
    } finally {
      this.deliver();
    }
    this.lastPeak = peak;
  }

  /** Hands every job in the outbox its text, then its result if it has ended. */
  private deliver(): void {
    for (const job of this.outbox.splice(0)) {
      if (job.pendingText.length > 0) {
        const text = job.pendingText;
        job.pendingText = "";
        job.request.onText?.(text);
      }
      if (job.outcome !== undefined) job.resolve(job.outcome);
    }
  }

  /** A job is in the outbox while it has text not yet handed over, or once it has a result (it gets nothing after that). */
  private waitsInOutbox(job: Job): boolean {
    return job.pendingText.length > 0 || job.outcome !== undefined;
  }

  private emit(job: Job, text: string): void {
    if (text.length === 0) return;
    if (!this.waitsInOutbox(job)) this.outbox.push(job);
    job.pendingText += text;
  }

  private settle(job: Job, result: DecodeResult): void {
    if (!this.waitsInOutbox(job)) this.outbox.push(job);
    job.outcome = result;
  }

  /** Between steps: trims each new job's slot to the prompt prefix it shares and arms its sampler. */
  private admit(): void {
    for (const job of this.incoming.splice(0)) {
      const { slot, request } = job;
      if (request.signal?.aborted) {
        this.settle(job, this.result(job, "stop", true));
        continue;
      }
      // Measured now, not when the request came: the slot's last step may have ended since.
      job.reused = reusablePrefix(slot.cached, request.prompt);
      job.fed = job.reused;
      try {
        if (slot.cached.length > job.reused) {
          // Partial removal is refused by recurrent models; then the slot starts empty.
          if (!this.native.removeTokenCellsFromSequence(slot.sequenceId, job.reused, -1)) {
            this.native.removeTokenCellsFromSequence(slot.sequenceId, 0, -1);
            job.fed = 0;
          }
          slot.cached.length = job.fed;
        }
        armSampler(slot.sampler, request.plan, request.prompt, request.grammar);
      } catch (error) {
        this.forget(slot);
        job.reject(error);
        continue;
      }
      if (request.plan.maxTokens <= 0) {
        this.settle(job, this.result(job, "length", false));
        continue;
      }
      this.active.push(job);
    }
  }

  private dropAborted(): void {
    for (let i = this.active.length - 1; i >= 0; i--) {
      const job = this.active[i]!;
      if (job.request.signal?.aborted) {
        this.active.splice(i, 1);
        this.assemble(job);
        this.settle(job, this.result(job, "stop", true));
      }
    }
  }

  private async step(): Promise<void> {
    // Generating sequences first (one token each), then prompt chunks in arrival order.
    let budget = this.options.batchSize;
    const plan: { job: Job; tokens: Token[]; logits: boolean }[] = [];
    for (const job of this.active) {
      if (job.next !== undefined && budget > 0) {
        plan.push({ job, tokens: [job.next], logits: true });
        budget--;
      }
    }
    // With "cost" admission the first waiting prompt always joins, and more only while the
    // step's prompt part costs no more than the rest of it (StepCost.promptBudget): where a token
    // costs little next to a pass over the weights (a GPU, a small model) every waiting prompt
    // joins; where each token costs about as much as a pass (a CPU thread) prompts join one per
    // step, so a burst gets its first tokens step by step instead of all after one long step, and
    // running streams slow down at most twofold while prompts are read. The price on a CPU: a
    // step that mixes a prompt with one-token decodes costs two passes, because llama.cpp takes
    // the same number of tokens from every sequence in a micro-batch of a per-sequence KV cache
    // (split_equal; see the id sort below). Where clients would otherwise come in lockstep, all
    // prompts in one decode-free step, that is ~1-2% of tokens/s.
    const promptBudget = this.options.promptAdmission === "all" ? Number.POSITIVE_INFINITY : this.cost.promptBudget(plan.length);
    let promptTokens = 0;
    for (const job of this.active) {
      if (job.next !== undefined || budget === 0) continue;
      const prompt = job.request.prompt;
      const count = Math.min(prompt.length - job.fed, budget);
      if (promptTokens > 0 && promptTokens + count > promptBudget) break;
      promptTokens += count;
      plan.push({ job, tokens: prompt.slice(job.fed, job.fed + count) as Token[], logits: job.fed + count === prompt.length });
      budget -= count;
    }
    // llama.cpp splits a batch for a per-sequence KV cache (node-llama-cpp always makes one) into
    // micro-batches of consecutive, ascending sequence ids; every micro-batch is a full pass
    // over the weights. In arrival order a step of N tokens could cost up to N passes; in id
    // order it costs one per run of consecutive ids (the engine hands out low ids first).
    plan.sort((a, b) => a.job.slot.sequenceId - b.job.slot.sequenceId);
    const size = this.options.batchSize - budget;
    this.native.initBatch(size);
    for (const item of plan) {
      const { job, tokens } = item;
      // addToBatch copies what it is given, so a one-token item (every generating sequence)
      // reuses the same two arrays: typed-array allocations are most of its cost.
      const single = tokens.length === 1;
      if (single) this.oneToken[0] = tokens[0]!;
      const batchTokens = single ? this.oneToken : Uint32Array.from(tokens);
      const logitAt = !item.logits ? NO_LOGITS : single ? LOGITS_AT_FIRST : Uint32Array.of(tokens.length - 1);
      const indexes = this.native.addToBatch(job.slot.sequenceId, job.slot.cached.length, batchTokens, logitAt);
      job.logitIndex = item.logits ? indexes[0]! : -1;
    }
    const sampling = plan.filter((item) => item.logits);
    const sample = () => sampling.map(({ job }) => this.native.sampleToken(job.logitIndex, job.slot.sampler));
    const decodeStarted = performance.now();
    const decoding = this.native.decodeBatch();
    const queuedSamples = this.options.sampleBehindDecode ? sample() : undefined;
    // They are awaited below, after the decode; until then a rejection is not unhandled.
    for (const queued of queuedSamples ?? []) queued.catch(() => {});
    // The engine is busy now: make the last step's text and hand it and the results over
    // meanwhile. A job whose text met a stop string ends here; its token in this step is wasted.
    this.assembleAll();
    this.deliver();
    try {
      await decoding;
    } catch (error) {
      // Samples queued behind a failed decode read no logits (or stale ones); wait them out
      // so none of them settles unobserved, then drop their results.
      if (queuedSamples) await Promise.allSettled(queuedSamples);
      for (const { job } of plan) this.fail(job, error);
      return;
    }
    const seconds = (performance.now() - decodeStarted) / 1000;
    this.cost.observe(size, seconds);
    this.options.onStep?.(size, plan.length, seconds);
    for (const { job, tokens } of plan) {
      for (const token of tokens) job.slot.cached.push(token);
      if (job.next === undefined) job.fed += tokens.length;
    }
    let tokens: (Token | -1)[];
    try {
      tokens = await Promise.all(queuedSamples ?? sample());
    } catch (error) {
      for (const { job } of sampling) this.fail(job, error);
      return;
    }
    const now = performance.now();
    for (let i = 0; i < sampling.length; i++) {
      const { job } = sampling[i]!;
      // Ended during this step (a stop string in its text, see assembleAll).
      if (job.outcome === undefined) this.accept(job, tokens[i]!, now);
    }
  }

  /**
   * Takes one sampled token: ends the job or queues the token for the next step. Its text is
   * made later (assemble), once the next step's decode is queued: detokenizing holds up nothing
   * then. Only a stop string needs the text, and a job that meets one leaves after that step.
   */
  private accept(job: Job, token: Token | -1, now: number): void {
    job.logitIndex = -1;
    job.next = undefined;
    if (token === -1) return this.finish(job, "stop");
    job.sampled++;
    job.firstTokenAt ??= now;
    if (this.model.isEogToken(token)) return this.finish(job, "stop");
    if (endsWithStopSequence(job, token)) return this.finish(job, "stop");
    job.unassembled.push(token);
    if (job.sampled >= job.request.plan.maxTokens || job.slot.cached.length + 1 > this.options.contextSize) return this.finish(job, "length");
    job.next = token;
  }

  /** Turns every generating job's new tokens into text; a job whose text meets a stop string ends. */
  private assembleAll(): void {
    for (let i = 0; i < this.active.length; i++) {
      const job = this.active[i]!;
      if (job.unassembled.length > 0 && this.assemble(job)) {
        this.finish(job, "stop");
        i--;
      }
    }
  }

  /** Turns the job's new tokens into text; true once its text has met a stop string. */
  private assemble(job: Job): boolean {
    for (const token of job.unassembled) this.emit(job, job.assembler.push(token));
    job.unassembled.length = 0;
    return job.assembler.stopped;
  }

  private finish(job: Job, reason: FinishReason): void {
    const index = this.active.indexOf(job);
    if (index >= 0) this.active.splice(index, 1);
    // Its last tokens may still hold a stop string (made into text only now).
    const stopped = this.assemble(job);
    this.emit(job, job.assembler.finish());
    this.settle(job, this.result(job, stopped ? "stop" : reason, false));
  }

  private fail(job: Job, error: unknown): void {
    const index = this.active.indexOf(job);
    if (index >= 0) this.active.splice(index, 1);
    // Text it produced before the failure is still handed over first (the outbox keeps order).
    this.forget(job.slot);
    this.deliver();
    job.reject(error);
  }

  /** After a failed decode the slot's cells are unknown: empty it. */
  private forget(slot: DecoderSlot): void {
    try {
      this.native.removeTokenCellsFromSequence(slot.sequenceId, 0, -1);
    } catch {
      // The context itself is broken; the next decode reports it.
    }
    slot.cached = [];
  }

  private result(job: Job, finishReason: FinishReason, aborted: boolean): DecodeResult {
    return {
      text: job.assembler.text,
      finishReason,
      completionTokens: job.sampled,
      reusedPromptTokens: job.reused,
      firstTokenAt: job.firstTokenAt,
      aborted,
    };
  }
}

/** How many leading prompt tokens a slot already holds; one is always left to decode for logits. */
export function reusablePrefix(cached: readonly Token[], prompt: readonly Token[]): number {
  const limit = Math.min(cached.length, prompt.length - 1);
  let i = 0;
  while (i < limit && cached[i] === prompt[i]) i++;
  return i;
}

function endsWithStopSequence(job: Job, token: Token): boolean {
  const sequences = job.request.stopTokenSequences;
  if (sequences.length === 0) return false;
  const { tail } = job;
  tail.push(token);
  let longest = 0;
  for (const sequence of sequences) {
    longest = Math.max(longest, sequence.length);
    if (sequence.length > 0 && sequence.length <= tail.length && sequence.every((t, i) => tail[tail.length - sequence.length + i] === t)) return true;
  }
  if (tail.length > longest) tail.splice(0, tail.length - longest);
  return false;
}

/** Sets a slot's sampler up for a request: its sampling settings, and the penalty history from the prompt's tail. */
export function armSampler(sampler: NativeSampler, plan: SamplingPlan, prompt: readonly Token[], grammar?: LlamaGrammarEvaluationState): void {
  // The native sampler applies the grammar before the rest of its chain and advances the state
  // with every token it samples; a config without one drops the previous request's.
  const grammarState = grammar === undefined ? undefined : (grammar as unknown as { _state?: object })._state;
  if (grammar !== undefined && grammarState === undefined) {
    throw new Error("this node-llama-cpp build does not expose grammar states; install the version pinned in package.json");
  }
  const penalize = plan.repetitionPenalty !== 1 || plan.presencePenalty !== 0 || plan.frequencyPenalty !== 0;
  sampler.applyConfig({
    ...(plan.temperature > 0 ? { temperature: plan.temperature, topK: plan.topK, topP: plan.topP } : {}),
    seed: plan.seed ?? Math.floor(Math.random() * 0xffffffff),
    ...(grammarState === undefined ? {} : { grammarEvaluationState: grammarState }),
    ...(penalize
      ? {
          repeatPenaltyTokens: Uint32Array.from(prompt.slice(-PENALTY_LAST_TOKENS)),
          repeatPenalty: plan.repetitionPenalty,
          repeatPenaltyMaxTokens: PENALTY_LAST_TOKENS,
          repeatPenaltyPresencePenalty: plan.presencePenalty,
          repeatPenaltyFrequencyPenalty: plan.frequencyPenalty,
        }
      : {}),
  });
}
