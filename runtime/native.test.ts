// Corral's batch loop drives node-llama-cpp's private native handles (runtime/native.ts). This
// test fails loudly, naming what moved, when an upgrade changes their shape: package.json pins the
// exact version, and a new version is taken only when this passes.

import { readFileSync } from "node:fs";
import { getLlama, LlamaLogLevel, type Token } from "node-llama-cpp";
import { describe, expect, it } from "vitest";
import { packagePath } from "../common/package-root.js";
import { ensureTestModel } from "../test/helpers/test-models.js";
import { nativeHandles, sequenceIdOf } from "./native.js";

describe("node-llama-cpp's internals that the batch loop uses", () => {
  it("is pinned to one exact version", () => {
    const manifest = JSON.parse(readFileSync(packagePath("package.json"), "utf8")) as { dependencies: Record<string, string> };
    const installed = JSON.parse(readFileSync(packagePath("node_modules/node-llama-cpp/package.json"), "utf8")) as { version: string };
    expect(manifest.dependencies["node-llama-cpp"]).toMatch(/^\d+\.\d+\.\d+$/);
    expect(installed.version).toBe(manifest.dependencies["node-llama-cpp"]);
  });

  it("still has the native context calls, the sampler class and the sequence ids, with the shapes Corral calls", async () => {
    const llama = await getLlama({ gpu: false, build: "never", maxThreads: 1, logLevel: LlamaLogLevel.error });
    const model = await llama.loadModel({ modelPath: await ensureTestModel("successor"), gpuLayers: 0 });
    const context = await model.createContext({ sequences: 2, contextSize: 256, threads: 1 });
    try {
      const native = nativeHandles(llama, model, context);
      const sampler = native.createSampler();
      expect(typeof sampler.applyConfig).toBe("function");
      expect(typeof sampler.dispose).toBe("function");
      sampler.applyConfig({ seed: 1 });

      const sequence = context.getSequence();
      const id = sequenceIdOf(sequence);
      expect(Number.isInteger(id)).toBe(true);
      // One step as the batch loop makes it: a prompt into the batch, decode, sample greedily.
      const tokens = Uint32Array.from(model.tokenize("Hello wor"));
      native.context.initBatch(tokens.length);
      const logitIndexes = native.context.addToBatch(id, 0, tokens, Uint32Array.of(tokens.length - 1));
      expect(logitIndexes).toBeInstanceOf(Uint32Array);
      await native.context.decodeBatch();
      const next = await native.context.sampleToken(logitIndexes[0]!, sampler);
      expect(model.detokenize([next as Token])).toBe("s");
      expect(native.context.removeTokenCellsFromSequence(id, 0, tokens.length)).toBe(true);
      sampler.dispose();
      sequence.dispose();
    } finally {
      await context.dispose();
      await model.dispose();
      await llama.dispose();
    }
  });
});
