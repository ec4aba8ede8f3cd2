// GGUF models the project makes itself (no machine here can download weights): recipes in
// /work/shared/notes/test-models.md.
//
// - "tiny": random weights (seeded, so files are byte-for-byte reproducible), 2 layers. Output is
//   gibberish; bound generation and count tokens.
// - "successor": hand-set weights whose output is exactly predictable: after a lowercase letter
//   it emits the rest of the alphabet and then end-of-generation; after anything else it emits
//   "a" first. So "Hello wor" -> "stuvwxyz", and a ChatML chat turn (the prompt ends with
//   "<|im_start|>assistant\n") -> "abcdefghijklmnopqrstuvwxyz". See successorCompletion().
// - "bench": the shape of SmolLM2-135M with random weights, for realistic speed.
//
// All three share one SentencePiece-style vocabulary in which every ASCII byte is exactly one
// token (printable characters as ordinary tokens, space as "▁", others as byte tokens), with
// ChatML control tokens and a ChatML chat template. "bench" pads it to 49152 tokens with filler
// tokens that no text ever tokenizes to.

import { mkdir } from "node:fs/promises";
import path from "node:path";
import { FILE_TYPE_FOR_GGML_TYPE } from "../gguf/format.js";
import {
  GGML_TYPE_OF,
  meta,
  writeGguf,
  type GgufMetadataValue,
  type GgufTensorSpec,
  type GgufTensorType,
} from "../gguf/writer.js";

export const TEST_MODEL_KINDS = ["tiny", "successor", "bench"] as const;
export type TestModelKind = (typeof TEST_MODEL_KINDS)[number];
export type TestModelType = "f32" | "f16" | "q8_0";
export const TEST_MODEL_TYPES: readonly TestModelType[] = ["f32", "f16", "q8_0"];

/** Bump when the files' contents change, so cached copies are regenerated. */
export const TEST_MODEL_VERSION = 1;
/** Metadata keys that identify a generated test model. */
export const TEST_MODEL_KIND_KEY = "corral.test_model.kind";
export const TEST_MODEL_VERSION_KEY = "corral.test_model.version";

export interface MakeTestModelOptions {
  kind: TestModelKind;
  /** Default: f32 for tiny and successor, q8_0 for bench. */
  type?: TestModelType;
  out: string;
}

export function defaultTestModelType(kind: TestModelKind): TestModelType {
  return kind === "bench" ? "q8_0" : "f32";
}

export interface TestModelShape {
  contextLength: number;
  embeddingLength: number;
  blockCount: number;
  headCount: number;
  headCountKv: number;
  feedForwardLength: number;
  vocabSize: number;
  /** No output.weight: the output projection reuses token_embd. */
  tiedEmbeddings: boolean;
}

const SMALL_SHAPE: TestModelShape = {
  contextLength: 4096,
  embeddingLength: 64,
  blockCount: 2,
  headCount: 4,
  headCountKv: 2,
  feedForwardLength: 128,
  vocabSize: 356,
  tiedEmbeddings: false,
};

export const TEST_MODEL_SHAPES: Readonly<Record<TestModelKind, TestModelShape>> = {
  tiny: SMALL_SHAPE,
  successor: SMALL_SHAPE,
  // SmolLM2-135M.
  bench: {
    contextLength: 8192,
    embeddingLength: 576,
    blockCount: 30,
    headCount: 9,
    headCountKv: 3,
    feedForwardLength: 1536,
    vocabSize: 49152,
    tiedEmbeddings: true,
  },
};

// ---------------------------------------------------------------------------------------------
// Vocabulary

/** llama.cpp token types (tokenizer.ggml.token_type). */
const TokenType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, BYTE: 6 } as const;

export const TEST_TOKENS = {
  unk: 0,
  bos: 1,
  endOfText: 2,
  imStart: 3,
  imEnd: 4,
  /** `<|im_end|>`: what ends a chat turn and what the successor model emits after "z". */
  eos: 4,
  /** `<0x00>` .. `<0xFF>` are firstByte + byte. */
  firstByte: 5,
  /** "▁" (SentencePiece's space). */
  space: 261,
  /** "!" .. "~" are firstPrintable + (code - 0x21). */
  firstPrintable: 262,
} as const;

const BASE_VOCAB_SIZE = 356;

export interface TestVocabulary {
  tokens: string[];
  types: number[];
}

export function testVocabulary(size: number): TestVocabulary {
  if (size < BASE_VOCAB_SIZE) throw new RangeError(`the test vocabulary needs at least ${BASE_VOCAB_SIZE} tokens`);
  const tokens = ["<unk>", "<s>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"];
  const types: number[] = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL, TokenType.CONTROL, TokenType.CONTROL];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    types.push(TokenType.BYTE);
  }
  tokens.push("\u2581");
  types.push(TokenType.NORMAL);
  for (let c = 0x21; c <= 0x7e; c++) {
    tokens.push(String.fromCharCode(c));
    types.push(TokenType.NORMAL);
  }
  // Fillers: "▁w<n>". SentencePiece only merges two symbols whose concatenation is a token, and
  // no two-character token starts with "▁", so no text tokenizes to these; they detokenize to
  // " w<n>", which keeps a random model's output word-like.
  for (let i = 0; tokens.length < size; i++) {
    tokens.push(`\u2581w${i}`);
    types.push(TokenType.NORMAL);
  }
  return { tokens, types };
}

/** The token a single ASCII character tokenizes to. */
export function testTokenForChar(char: string): number {
  const code = char.charCodeAt(0);
  if (char.length !== 1 || code > 0x7f) throw new RangeError(`not one ASCII character: ${JSON.stringify(char)}`);
  if (code === 0x20) return TEST_TOKENS.space;
  if (code >= 0x21 && code <= 0x7e) return TEST_TOKENS.firstPrintable + code - 0x21;
  return TEST_TOKENS.firstByte + code;
}

export const CHATML_TEMPLATE =
  "{% for message in messages %}" +
  "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}" +
  "{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/**
 * What the successor model generates after `prompt` (the text it has seen, templates included):
 * the letters after a final lowercase letter up to "z", else the whole alphabet.
 */
export function successorCompletion(prompt: string): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz";
  const last = prompt.at(-1) ?? "";
  const index = alphabet.indexOf(last);
  return last !== "" && index >= 0 ? alphabet.slice(index + 1) : alphabet;
}

// ---------------------------------------------------------------------------------------------
// Weights

/** sfc32 seeded from a string: fast, and the same stream on every machine. */
function seededRandom(seed: string): () => number {
  let h = 1779033703 ^ seed.length;
  for (let i = 0; i < seed.length; i++) {
    h = Math.imul(h ^ seed.charCodeAt(i), 3432918353);
    h = (h << 13) | (h >>> 19);
  }
  const next = (): number => {
    h = Math.imul(h ^ (h >>> 16), 2246822507);
    h = Math.imul(h ^ (h >>> 13), 3266489909);
    return (h ^= h >>> 16) >>> 0;
  };
  let a = next(), b = next(), c = next(), d = next();
  return () => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
}

const CHUNK = 1 << 18;
const WEIGHT_STD = 0.02;

/** Uniform random values with standard deviation WEIGHT_STD, seeded by the tensor's name. */
function randomData(seed: string, count: number): () => Iterable<Float32Array> {
  return function* () {
    const random = seededRandom(seed);
    const halfWidth = WEIGHT_STD * Math.sqrt(3);
    for (let done = 0; done < count; done += CHUNK) {
      const chunk = new Float32Array(Math.min(CHUNK, count - done));
      for (let i = 0; i < chunk.length; i++) chunk[i] = (random() * 2 - 1) * halfWidth;
      yield chunk;
    }
  };
}

function constantData(value: number, count: number): () => Iterable<Float32Array> {
  return function* () {
    for (let done = 0; done < count; done += CHUNK) yield new Float32Array(Math.min(CHUNK, count - done)).fill(value);
  };
}

/** The successor model's dimension for a token: a..z on 0..25, every other token on 26. */
function successorDim(token: number): number {
  const a = TEST_TOKENS.firstPrintable + 0x61 - 0x21;
  return token >= a && token < a + 26 ? token - a : 26;
}

/** One-hot embeddings: row t (E values) has a 1 on successorDim(t). */
function successorEmbeddings(shape: TestModelShape): Float32Array {
  const e = shape.embeddingLength;
  const data = new Float32Array(e * shape.vocabSize);
  for (let t = 0; t < shape.vocabSize; t++) data[t * e + successorDim(t)] = 1;
  return data;
}

/** Large enough that no temperature a test uses lets any other token through. */
const SUCCESSOR_LOGIT_SCALE = 16;

/** Output rows: the row of token `next` picks out the dimension of the token that precedes it. */
function successorOutput(shape: TestModelShape): Float32Array {
  const e = shape.embeddingLength;
  const data = new Float32Array(e * shape.vocabSize);
  const letter = (i: number): number => testTokenForChar(String.fromCharCode(0x61 + i));
  data[letter(0) * e + 26] = SUCCESSOR_LOGIT_SCALE; // anything else -> "a"
  for (let i = 1; i < 26; i++) data[letter(i) * e + (i - 1)] = SUCCESSOR_LOGIT_SCALE; // x -> x+1
  data[TEST_TOKENS.eos * e + 25] = SUCCESSOR_LOGIT_SCALE; // "z" -> end of generation
  return data;
}

function modelTensors(kind: TestModelKind, type: GgufTensorType): GgufTensorSpec[] {
  const s = TEST_MODEL_SHAPES[kind];
  const e = s.embeddingLength;
  const headDim = e / s.headCount;
  const qDim = headDim * s.headCount;
  const kvDim = headDim * s.headCountKv;
  const successor = kind === "successor";
  const matrix = (name: string, dims: [number, number], hand?: () => Float32Array): GgufTensorSpec => ({
    name,
    dims,
    type,
    data: hand ? hand() : successor ? constantData(0, dims[0] * dims[1]) : randomData(`${kind}/${name}`, dims[0] * dims[1]),
  });
  const norm = (name: string): GgufTensorSpec => ({ name, dims: [e], type: "f32", data: constantData(1, e) });

  const tensors: GgufTensorSpec[] = [matrix("token_embd.weight", [e, s.vocabSize], successor ? () => successorEmbeddings(s) : undefined)];
  for (let layer = 0; layer < s.blockCount; layer++) {
    const p = `blk.${layer}.`;
    tensors.push(
      norm(`${p}attn_norm.weight`),
      matrix(`${p}attn_q.weight`, [e, qDim]),
      matrix(`${p}attn_k.weight`, [e, kvDim]),
      matrix(`${p}attn_v.weight`, [e, kvDim]),
      matrix(`${p}attn_output.weight`, [qDim, e]),
      norm(`${p}ffn_norm.weight`),
      matrix(`${p}ffn_gate.weight`, [e, s.feedForwardLength]),
      matrix(`${p}ffn_up.weight`, [e, s.feedForwardLength]),
      matrix(`${p}ffn_down.weight`, [s.feedForwardLength, e]),
    );
  }
  tensors.push(norm("output_norm.weight"));
  if (!s.tiedEmbeddings) tensors.push(matrix("output.weight", [e, s.vocabSize], successor ? () => successorOutput(s) : undefined));
  return tensors;
}

function modelMetadata(kind: TestModelKind, type: TestModelType): Record<string, GgufMetadataValue> {
  const s = TEST_MODEL_SHAPES[kind];
  const vocab = testVocabulary(s.vocabSize);
  return {
    "general.architecture": meta.string("llama"),
    "general.name": meta.string(`corral-${kind}-${type}`),
    "general.file_type": meta.u32(FILE_TYPE_FOR_GGML_TYPE[GGML_TYPE_OF[type]]!),
    "general.quantization_version": meta.u32(2),
    "llama.context_length": meta.u32(s.contextLength),
    "llama.embedding_length": meta.u32(s.embeddingLength),
    "llama.block_count": meta.u32(s.blockCount),
    "llama.feed_forward_length": meta.u32(s.feedForwardLength),
    "llama.attention.head_count": meta.u32(s.headCount),
    "llama.attention.head_count_kv": meta.u32(s.headCountKv),
    "llama.attention.layer_norm_rms_epsilon": meta.f32(1e-5),
    "llama.rope.freq_base": meta.f32(10000),
    "llama.rope.dimension_count": meta.u32(s.embeddingLength / s.headCount),
    "llama.vocab_size": meta.u32(s.vocabSize),
    "tokenizer.ggml.model": meta.string("llama"),
    "tokenizer.ggml.tokens": meta.array("string", vocab.tokens),
    "tokenizer.ggml.scores": meta.array("f32", new Float32Array(s.vocabSize)),
    "tokenizer.ggml.token_type": meta.array("i32", vocab.types),
    "tokenizer.ggml.bos_token_id": meta.u32(TEST_TOKENS.bos),
    "tokenizer.ggml.eos_token_id": meta.u32(TEST_TOKENS.eos),
    "tokenizer.ggml.unknown_token_id": meta.u32(TEST_TOKENS.unk),
    "tokenizer.ggml.add_bos_token": meta.bool(true),
    "tokenizer.ggml.add_eos_token": meta.bool(false),
    "tokenizer.ggml.add_space_prefix": meta.bool(false),
    "tokenizer.chat_template": meta.string(CHATML_TEMPLATE),
    [TEST_MODEL_KIND_KEY]: meta.string(kind),
    [TEST_MODEL_VERSION_KEY]: meta.u32(TEST_MODEL_VERSION),
  };
}

/**
 * Writes a test model to `out` (via `out + ".tmp"` and a rename), creating its folder. The same
 * kind and type always give the same bytes.
 */
export async function makeTestModel(options: MakeTestModelOptions): Promise<{ path: string; bytes: number }> {
  const { kind, out } = options;
  if (!TEST_MODEL_KINDS.includes(kind)) throw new RangeError(`unknown test model kind ${JSON.stringify(kind)}`);
  const type = options.type ?? defaultTestModelType(kind);
  if (!TEST_MODEL_TYPES.includes(type)) throw new RangeError(`unknown test model type ${JSON.stringify(type)}`);
  await mkdir(path.dirname(out), { recursive: true });
  return writeGguf(out, { metadata: modelMetadata(kind, type), tensors: modelTensors(kind, type) });
}
