import { createHash } from "node:crypto";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GgmlType } from "../gguf/format.js";
import { inspectGguf, readGguf } from "../gguf/reader.js";
import {
  CHATML_TEMPLATE,
  TEST_MODEL_SHAPES,
  TEST_MODEL_VERSION,
  TEST_MODEL_VERSION_KEY,
  TEST_TOKENS,
  makeTestModel,
  successorCompletion,
  testTokenForChar,
  testVocabulary,
  type TestModelKind,
  type TestModelType,
} from "./make.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "corral-testmodels-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const sha256 = async (file: string) => createHash("sha256").update(await readFile(file)).digest("hex");

describe("makeTestModel", () => {
  const cases: [TestModelKind, TestModelType, string, number][] = [
    ["tiny", "f32", "F32", 0],
    ["tiny", "f16", "F16", 1],
    ["tiny", "q8_0", "Q8_0", 7],
    ["successor", "f32", "F32", 0],
    ["successor", "q8_0", "Q8_0", 7],
  ];
  it.each(cases)("writes a valid %s %s model", async (kind, type, quantization, fileType) => {
    const out = path.join(dir, "models", `${kind}-${type}.gguf`); // the folder is created
    const result = await makeTestModel({ kind, type, out });
    expect(result.path).toBe(out);
    const summary = await inspectGguf(out);
    expect(result.bytes).toBe(summary.fileSize);
    expect(summary).toMatchObject({
      architecture: "llama",
      name: `corral-${kind}-${type}`,
      fileType,
      quantization,
      contextLength: 4096,
      embeddingLength: 64,
      blockCount: 2,
      headCount: 4,
      headCountKv: 2,
      feedForwardLength: 128,
      vocabSize: 356,
      hasChatTemplate: true,
      chatTemplate: CHATML_TEMPLATE,
      bosTokenId: TEST_TOKENS.bos,
      eosTokenId: TEST_TOKENS.eos,
      tensorCount: 2 + 2 * 9 + 1,
    });
    const gguf = await readGguf(out);
    expect(gguf.metadata.get(TEST_MODEL_VERSION_KEY)?.value).toBe(TEST_MODEL_VERSION);
    // Norms stay F32; the weight matrices take the requested type.
    const types = Object.fromEntries(gguf.tensors.map((t) => [t.name, t.type]));
    expect(types["blk.0.attn_norm.weight"]).toBe(GgmlType.F32);
    expect(types["blk.1.ffn_down.weight"]).toBe({ f32: GgmlType.F32, f16: GgmlType.F16, q8_0: GgmlType.Q8_0 }[type]);
    expect(await readdir(path.dirname(out))).not.toContain(`${kind}-${type}.gguf.tmp`);
  });

  it("defaults to f32 for tiny and successor", async () => {
    const out = path.join(dir, "default-tiny.gguf");
    await makeTestModel({ kind: "tiny", out });
    expect((await inspectGguf(out)).quantization).toBe("F32");
  });

  it("writes the same bytes every time", async () => {
    const a = path.join(dir, "repro-a.gguf");
    const b = path.join(dir, "repro-b.gguf");
    await makeTestModel({ kind: "tiny", type: "q8_0", out: a });
    await makeTestModel({ kind: "tiny", type: "q8_0", out: b });
    expect(await sha256(a)).toBe(await sha256(b));
  });

  it("gives the successor model one-hot embeddings and an output matrix that maps each letter to the next", async () => {
    const out = path.join(dir, "successor-weights.gguf");
    await makeTestModel({ kind: "successor", type: "f32", out });
    const gguf = await readGguf(out);
    const bytes = await readFile(out);
    const matrix = (name: string): Float32Array => {
      const t = gguf.tensors.find((x) => x.name === name)!;
      const start = gguf.dataOffset + t.offset;
      return new Float32Array(Uint8Array.from(bytes.subarray(start, start + t.bytes!)).buffer);
    };
    const e = 64;
    const row = (m: Float32Array, token: number) => [...m.subarray(token * e, token * e + e)];
    const hot = (dim: number, value = 1) => Array.from({ length: e }, (_, i) => (i === dim ? value : 0));
    const embd = matrix("token_embd.weight");
    const output = matrix("output.weight");
    const tok = testTokenForChar;
    expect(row(embd, tok("a"))).toEqual(hot(0));
    expect(row(embd, tok("z"))).toEqual(hot(25));
    for (const other of [tok("A"), tok(" "), tok("\n"), TEST_TOKENS.bos, TEST_TOKENS.imStart]) expect(row(embd, other)).toEqual(hot(26));
    const scale = Math.max(...output);
    expect(row(output, tok("a"))).toEqual(hot(26, scale)); // after anything else
    expect(row(output, tok("s"))).toEqual(hot(17, scale)); // after "r"
    expect(row(output, TEST_TOKENS.eos)).toEqual(hot(25, scale)); // after "z"
    expect(row(output, tok("A"))).toEqual(new Array(e).fill(0)); // never predicted
  });

  it("rejects unknown kinds and types", async () => {
    await expect(makeTestModel({ kind: "huge" as TestModelKind, out: path.join(dir, "x.gguf") })).rejects.toThrow(/unknown test model kind "huge"/);
    await expect(makeTestModel({ kind: "tiny", type: "q4" as TestModelType, out: path.join(dir, "x.gguf") })).rejects.toThrow(/unknown test model type "q4"/);
  });

  // About 5 s and 144 MB of disk: run with CORRAL_TEST_BENCH_MODEL=1.
  it.skipIf(!process.env.CORRAL_TEST_BENCH_MODEL)("writes the SmolLM2-135M-shaped bench model", { timeout: 120_000 }, async () => {
    const out = path.join(dir, "bench.gguf");
    const { bytes } = await makeTestModel({ kind: "bench", out });
    expect(await inspectGguf(out)).toMatchObject({
      quantization: "Q8_0",
      fileSize: bytes,
      blockCount: 30,
      embeddingLength: 576,
      headCount: 9,
      headCountKv: 3,
      feedForwardLength: 1536,
      vocabSize: 49152,
      tensorCount: 1 + 30 * 9 + 1, // tied embeddings: no output.weight
      parameterCount: 134_515_008,
    });
    await rm(out);
  });
});

describe("the test vocabulary", () => {
  it("has one distinct token per ASCII character, named as llama.cpp's SentencePiece tokenizer expects", () => {
    const { tokens, types } = testVocabulary(TEST_MODEL_SHAPES.tiny.vocabSize);
    expect(tokens).toHaveLength(356);
    const ids = new Set<number>();
    for (let c = 0; c < 128; c++) {
      const ch = String.fromCharCode(c);
      const id = testTokenForChar(ch);
      ids.add(id);
      const expected = c === 0x20 ? "\u2581" : c > 0x20 && c < 0x7f ? ch : `<0x${c.toString(16).toUpperCase().padStart(2, "0")}>`;
      expect(tokens[id]).toBe(expected);
      expect(types[id]).toBe(c > 0x20 && c < 0x7f ? 1 : c === 0x20 ? 1 : 6);
    }
    expect(ids.size).toBe(128);
    expect(tokens.slice(0, 5)).toEqual(["<unk>", "<s>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]);
    expect(types.slice(0, 5)).toEqual([2, 3, 3, 3, 3]);
    expect(tokens[TEST_TOKENS.eos]).toBe("<|im_end|>");
  });

  it("pads the bench vocabulary with distinct filler tokens", () => {
    const { tokens } = testVocabulary(49152);
    expect(tokens).toHaveLength(49152);
    expect(new Set(tokens).size).toBe(49152);
    expect(tokens[356]).toBe("\u2581w0");
  });
});

describe("successorCompletion", () => {
  it("predicts the successor model's output", () => {
    expect(successorCompletion("Hello wor")).toBe("stuvwxyz");
    expect(successorCompletion("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")).toBe("abcdefghijklmnopqrstuvwxyz");
    expect(successorCompletion("")).toBe("abcdefghijklmnopqrstuvwxyz");
    expect(successorCompletion("Z")).toBe("abcdefghijklmnopqrstuvwxyz");
    expect(successorCompletion("xyz")).toBe("");
  });
});
