/**
 * `node dist/bench/engine.js`: what one decode step costs inside node-llama-cpp's native context,
 * without HTTP or Corral's loop: B sequences each with a short prompt, then 64 steps of one token
 * per sequence. Prints the median time of the decode alone and of sampling every sequence, per
 * model type and B. `--order descending` adds the sequences to each batch in descending id
 * order, which llama.cpp splits into one micro-batch per sequence (see bench/README.md).
 * Compare with llama.cpp's `llama-batched-bench -npp 16 -ntg 64 -npl B` built
 * from the same source to tell engine time from everything around it.
 */
import { getLlama, type Token } from "node-llama-cpp";
import { ensureTestModel } from "../test/helpers/test-models.js";
import { nativeHandles } from "../runtime/native.js";
import { argValue, fixed, median, table } from "./lib.js";

const KIND = argValue("model", "bench") as "bench" | "tiny";
const TYPES = (KIND === "tiny" ? ["f32"] : argValue("types", "q8_0,f16").split(",")) as ("q8_0" | "f16" | "f32")[];
const BATCHES = argValue("batch", "1,4,8").split(",").map(Number);
const THREADS = Number(argValue("threads", "1"));
const STEPS = 64;
const PROMPT = 16;
const CONTEXT_PER_SEQUENCE = 2048;
const FLASH = argValue("flash-attention", "auto");
const ORDER = argValue("order", "ascending");
const MMAP = argValue("mmap", "on") === "on";
/** The API's default repetition penalty over the runtime's 64-token window, as the server arms it. */
const PENALTY = argValue("penalty", "on") === "on"
  ? { repeatPenalty: 1.15, repeatPenaltyMaxTokens: 64, repeatPenaltyTokens: new Uint32Array(0), repeatPenaltyPresencePenalty: 0, repeatPenaltyFrequencyPenalty: 0 }
  : {};

const rows: string[][] = [];
const llama = await getLlama({ gpu: false, build: "never", maxThreads: THREADS });
for (const type of TYPES) {
  const model = await llama.loadModel({ modelPath: await ensureTestModel(KIND, type), useMmap: MMAP });
  for (const sequences of BATCHES) {
    const context = await model.createContext({ sequences, contextSize: CONTEXT_PER_SEQUENCE, batchSize: 512, threads: THREADS,
      flashAttention: FLASH === "auto" ? "auto" : FLASH === "on" } as Parameters<typeof model.createContext>[0]);
    const handles = nativeHandles(llama, model, context);
    const native = handles.context;
    const samplers = Array.from({ length: sequences }, () => handles.createSampler());
    samplers.forEach((sampler, i) => (sampler.applyConfig({ temperature: 0.7, topK: 80, topP: 0.9, seed: i, ...PENALTY })));
    // Prompts: PROMPT arbitrary tokens per sequence, all in one batch.
    native.initBatch(PROMPT * sequences);
    const logitIndexes: number[] = [];
    for (let s = 0; s < sequences; s++) {
      const tokens = Uint32Array.from({ length: PROMPT }, (_, i) => 100 + ((s * 31 + i * 7) % 150));
      logitIndexes.push(native.addToBatch(s, 0, tokens, Uint32Array.of(PROMPT - 1))[0]!);
    }
    await native.decodeBatch();
    let next = await Promise.all(logitIndexes.map((index, s) => native.sampleToken(index, samplers[s]!)));
    const decodeMs: number[] = [];
    const sampleMs: number[] = [];
    for (let step = 0; step < STEPS; step++) {
      native.initBatch(sequences);
      const indexes: number[] = [];
      for (let i = 0; i < sequences; i++) {
        const s = ORDER === "descending" ? sequences - 1 - i : i;
        const token = next[s]!;
        indexes[s] = native.addToBatch(s, PROMPT + step, Uint32Array.of(token === -1 ? 0 : token), Uint32Array.of(0))[0]!;
      }
      const t0 = performance.now();
      await native.decodeBatch();
      const t1 = performance.now();
      next = await Promise.all(indexes.map((index, s) => native.sampleToken(index, samplers[s]!))) as (Token | -1)[];
      sampleMs.push(performance.now() - t1);
      decodeMs.push(t1 - t0);
    }
    const decode = median(decodeMs);
    rows.push([`${KIND} ${type.toUpperCase()}`, String(sequences), fixed(decode, 2), fixed(median(sampleMs), 2), fixed((sequences * 1000) / (decode + median(sampleMs)), 1)]);
    for (const sampler of samplers) sampler.dispose();
    await context.dispose();
  }
  await model.dispose();
}
await llama.dispose();
console.log(`batch order: ${ORDER} sequence ids, flash attention ${FLASH}, ${THREADS} thread(s)\n`);
console.log(table(["model", "sequences", "decode ms p50", "sample all ms p50", "tok/s"], rows));
