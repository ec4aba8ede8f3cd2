/**
 * `node dist/bench/loop.js`: what Corral's batch loop (`BatchDecoder`) costs on top of the native
 * calls it makes, without HTTP. In one process, on one native context, it alternates two ways of
 * doing the same work, S sequences each answering R requests of T sampled tokens:
 *
 * - `loop`: S clients calling `BatchDecoder.generate`, with text assembly, stop checks and the
 *   hand-over to callers, as the runtime runs it;
 * - `native`: the least JS that drives the same native calls: one batch per step with every
 *   sequence's next token, sampling queued behind the decode, a sequence's next prompt added as
 *   soon as its request ends (no text, no promises per request).
 *
 * Prints tokens/s of each (median of the rounds) and their ratio. Unpinned (the default), the
 * loop's JS runs beside the decode thread, and what it does between two decodes shows; `--pin`
 * runs everything on CPU 0, where all of its CPU shows.
 *
 * The native way reads every new prompt in the next step, as `--prompt-admission all` does; with
 * the default `cost` the loop reads them one per step on a CPU (see BatchDecoder.step).
 *
 *   --model tiny|bench  --type f32|q8_0|f16  --sequences S  --requests R  --tokens T  --rounds N
 *   --prompt-admission cost|all  --pin
 */
import { getLlama, type Token } from "node-llama-cpp";
import { ensureTestModel } from "../test/helpers/test-models.js";
import { nativeHandles, type NativeContext } from "../runtime/native.js";
import { armSampler, BatchDecoder, type DecoderSlot, type PromptAdmission } from "../runtime/decoder.js";
import type { SamplingPlan } from "../runtime/sampling.js";
import { hasSingleThreadPool } from "../common/runtime-env.js";
import { argValue, fixed, median, PIN, pinSelf, table } from "./lib.js";

const KIND = argValue("model", "tiny") as "tiny" | "bench";
const TYPE = argValue("type", KIND === "tiny" ? "f32" : "q8_0") as "f32" | "q8_0" | "f16";
const SEQUENCES = Number(argValue("sequences", "16"));
const REQUESTS = Number(argValue("requests", "3"));
const TOKENS = Number(argValue("tokens", "32"));
const ROUNDS = Number(argValue("rounds", "10"));
const PROMPT_ADMISSION = argValue("prompt-admission", "cost") as PromptAdmission;
const CONTEXT_PER_SEQUENCE = 256;

const PLAN: SamplingPlan = { maxTokens: TOKENS, temperature: 0.7, topP: 0.9, topK: 80, repetitionPenalty: 1.15, presencePenalty: 0, frequencyPenalty: 0, stop: [] };

if (!hasSingleThreadPool()) {
  console.error("run with UV_THREADPOOL_SIZE=1, as the runtime runs (see common/runtime-env.ts)");
  process.exit(2);
}
if (PIN) pinSelf(0);

const llama = await getLlama({ gpu: false, build: "never", maxThreads: 1 });
const model = await llama.loadModel({ modelPath: await ensureTestModel(KIND, TYPE) });
const context = await model.createContext({ sequences: SEQUENCES, contextSize: CONTEXT_PER_SEQUENCE, batchSize: 512, threads: 1 });
const handles = nativeHandles(llama, model, context);
const native = handles.context;
const slots: DecoderSlot[] = Array.from({ length: SEQUENCES }, (_, sequenceId) => ({ sequenceId, sampler: handles.createSampler(), cached: [] }));
const decoder = new BatchDecoder(
  native,
  { isEogToken: (token) => model.isEogToken(token), detokenize: (tokens, lastTokens) => model.detokenize(tokens, false, lastTokens) },
  { batchSize: 512, contextSize: CONTEXT_PER_SEQUENCE, sampleBehindDecode: true, promptAdmission: PROMPT_ADMISSION, arriving: () => 0 },
);

let promptId = 0;
/** A new 4-token prompt (BOS, three varying tokens) within any vocabulary of 256+ tokens. */
function nextPrompt(): Token[] {
  const id = promptId++;
  return [model.tokens.bos ?? 1, 20 + (id % 50), 80 + (id % 70), 160 + (id % 90)] as Token[];
}

function emptySlots(): void {
  for (const slot of slots) {
    native.removeTokenCellsFromSequence(slot.sequenceId, 0, -1);
    slot.cached = [];
  }
}

/** Corral's loop: S clients, R requests each. Returns sampled tokens/s. */
async function throughLoop(): Promise<number> {
  emptySlots();
  let tokens = 0;
  const started = performance.now();
  await Promise.all(slots.map(async (slot) => {
    for (let r = 0; r < REQUESTS; r++) {
      const result = await decoder.generate(slot, { prompt: nextPrompt(), plan: PLAN, stopStrings: [], stopTokenSequences: [], onText: () => {} });
      tokens += result.completionTokens;
    }
  }));
  return tokens / ((performance.now() - started) / 1000);
}

/** The same work with the least JS around the native calls. Returns sampled tokens/s. */
async function throughNative(ctx: NativeContext): Promise<number> {
  emptySlots();
  const state = slots.map(() => ({ requestsLeft: REQUESTS, prompt: [] as Token[], next: -1, sampled: 0, position: 0 }));
  const start = (i: number) => {
    const s = state[i]!;
    s.requestsLeft--;
    s.prompt = nextPrompt();
    s.sampled = 0;
    s.position = 0;
    ctx.removeTokenCellsFromSequence(i, 0, -1);
    armSampler(slots[i]!.sampler, PLAN, s.prompt);
  };
  state.forEach((_, i) => start(i));
  let tokens = 0;
  const started = performance.now();
  for (;;) {
    const live = state.map((s, i) => i).filter((i) => state[i]!.requestsLeft >= 0);
    if (live.length === 0) break;
    ctx.initBatch(live.reduce((sum, i) => sum + (state[i]!.next === -1 ? state[i]!.prompt.length : 1), 0));
    const logitIndexes = live.map((i) => {
      const s = state[i]!;
      const batchTokens = s.next === -1 ? Uint32Array.from(s.prompt) : Uint32Array.of(s.next);
      const index = ctx.addToBatch(i, s.position, batchTokens, Uint32Array.of(batchTokens.length - 1))[0]!;
      s.position += batchTokens.length;
      return index;
    });
    const decoding = ctx.decodeBatch();
    const samples = live.map((i, k) => ctx.sampleToken(logitIndexes[k]!, slots[i]!.sampler));
    await decoding;
    const sampled = await Promise.all(samples);
    live.forEach((i, k) => {
      const s = state[i]!;
      const token = sampled[k]!;
      tokens++;
      s.sampled++;
      if (token === -1 || model.isEogToken(token) || s.sampled >= TOKENS) {
        s.next = -1;
        if (s.requestsLeft > 0) start(i);
        else s.requestsLeft = -1;
      } else {
        s.next = token;
      }
    });
  }
  return tokens / ((performance.now() - started) / 1000);
}

const results = { loop: [] as number[], native: [] as number[] };
await throughLoop(); // warm-up
await throughNative(native);
for (let round = 0; round < ROUNDS; round++) {
  for (const kind of round % 2 === 0 ? (["loop", "native"] as const) : (["native", "loop"] as const)) {
    results[kind].push(kind === "loop" ? await throughLoop() : await throughNative(native));
  }
}
const ratios = results.loop.map((value, i) => value / results.native[i]!);
console.log(`${KIND} ${TYPE.toUpperCase()}, ${SEQUENCES} sequences x ${REQUESTS} requests x ${TOKENS} tokens, ${ROUNDS} alternating rounds, loop with --prompt-admission ${PROMPT_ADMISSION}, ${PIN ? "pinned to CPU 0" : "unpinned"}\n`);
console.log(table(["way", "sampled tok/s p50"], [["Corral's loop (BatchDecoder)", fixed(median(results.loop))], ["native calls only", fixed(median(results.native))]]));
console.log(`\nloop / native: ${fixed(median(ratios), 3)} (median of per-round ratios; loop faster in ${ratios.filter((r) => r > 1).length} of ${ROUNDS})`);
for (const slot of slots) slot.sampler.dispose();
await context.dispose();
await model.dispose();
await llama.dispose();
