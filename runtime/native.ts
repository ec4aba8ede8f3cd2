import type { Llama, LlamaContext, LlamaContextSequence, LlamaModel, Token } from "node-llama-cpp";

/**
 * The parts of node-llama-cpp's native addon that Corral's own batch loop drives directly.
 *
 * Why not the public API: node-llama-cpp decodes each sequence through its own per-request
 * generator (`LlamaCompletion` over `sequence.evaluate`), which takes the context lock to clear a
 * sequence, re-applies the whole sampler config on every token and queues each sequence's token
 * separately. Under load that costs time to first token and throughput against llama.cpp's own
 * server, whose single loop builds one batch per step. These are the same native calls the
 * library makes itself (pinned node-llama-cpp version); `nativeHandles` checks they exist, so an
 * upgrade that changes them fails at start-up with a clear message rather than mid-request.
 */
export interface NativeContext {
  initBatch(size: number): void;
  addToBatch(sequenceId: number, firstTokenSequenceIndex: number, tokens: Uint32Array, logitIndexes: Uint32Array): Uint32Array;
  decodeBatch(): Promise<void>;
  sampleToken(batchLogitIndex: number, sampler: NativeSampler): Promise<Token | -1>;
  removeTokenCellsFromSequence(sequenceId: number, startPos: number, endPos: number): boolean;
}

/** A llama.cpp sampler chain; tokens it samples are accepted into its penalty history natively. */
export interface NativeSampler {
  applyConfig(config: NativeSamplerConfig): void;
  dispose(): void;
}

export interface NativeSamplerConfig {
  /** Absent: greedy. */
  temperature?: number;
  topK?: number;
  topP?: number;
  seed: number;
  /** The history the penalty starts from (the prompt's tail); absent: no penalty. */
  repeatPenaltyTokens?: Uint32Array;
  repeatPenalty?: number;
  repeatPenaltyMaxTokens?: number;
  repeatPenaltyPresencePenalty?: number;
  repeatPenaltyFrequencyPenalty?: number;
  /** A grammar's native evaluation state (LlamaGrammarEvaluationState's); absent: none. */
  grammarEvaluationState?: object;
}

export interface NativeHandles {
  context: NativeContext;
  createSampler(): NativeSampler;
}

const CONTEXT_METHODS = ["initBatch", "addToBatch", "decodeBatch", "sampleToken", "removeTokenCellsFromSequence"] as const;

export function nativeHandles(llama: Llama, model: LlamaModel, context: LlamaContext): NativeHandles {
  const nativeContext = (context as unknown as { _ctx?: Record<string, unknown> })._ctx;
  const nativeModel = (model as unknown as { _model?: object })._model;
  const Sampler = (llama as unknown as { _bindings?: { AddonSampler?: new (model: object) => NativeSampler } })._bindings?.AddonSampler;
  const missing = CONTEXT_METHODS.filter((name) => typeof nativeContext?.[name] !== "function");
  if (nativeContext === undefined || nativeModel === undefined || Sampler === undefined || missing.length > 0) {
    throw new Error(
      `this node-llama-cpp build lacks the native calls Corral's batch loop uses (${missing.join(", ") || "addon handles"}); ` +
        "install the node-llama-cpp version pinned in package.json",
    );
  }
  return {
    context: nativeContext as unknown as NativeContext,
    createSampler: () => new Sampler(nativeModel),
  };
}

/** The native sequence id node-llama-cpp gave a sequence (its KV cells are tagged with it). */
export function sequenceIdOf(sequence: LlamaContextSequence): number {
  const id = (sequence as unknown as { _sequenceId?: unknown })._sequenceId;
  if (typeof id !== "number") throw new Error("this node-llama-cpp build does not expose sequence ids; install the version pinned in package.json");
  return id;
}
