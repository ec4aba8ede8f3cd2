import { getLlama, LlamaCompletion } from "node-llama-cpp";
import { ensureTestModel } from "../test/helpers/test-models.js";
const modelPath = await ensureTestModel("bench", "q8_0");
const llama = await getLlama({ gpu: false, build: "never", maxThreads: 1 });
const model = await llama.loadModel({ modelPath });
const context = await model.createContext({ sequences: 1, contextSize: 2048, batchSize: 512, threads: 1, performanceTracking: false });
const seq = context.getSequence();
const c = new LlamaCompletion({ contextSequence: seq });
for (let i = 0; i < 6; i++) {
  const prompt = `Once upon a time, in a village number ${i}, there lived`;
  const t0 = performance.now();
  let first = -1;
  const tokens = model.tokenize(prompt);
  await c.generateCompletion(prompt, { maxTokens: 8, temperature: 0.7, topK: 80, topP: 0.9, seed: i, repeatPenalty: { penalty: 1.15, lastTokens: 64 }, onToken: () => { if (first < 0) first = performance.now() - t0; } });
  const t1 = performance.now();
  // raw evaluate: prompt only
  const t2 = performance.now();
  console.log({ i, promptTokens: tokens.length, ttft: first.toFixed(1), total: (t1 - t0).toFixed(1) });
}
// raw decode cost of N tokens
for (const n of [1, 5, 14]) {
  await seq.clearHistory();
  const toks = model.tokenize("Once upon a time, in a village number 1, there lived").slice(0, n);
  const t = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens(toks);
  console.log({ decodeTokens: n, ms: (performance.now() - t).toFixed(1) });
}
await llama.dispose();
