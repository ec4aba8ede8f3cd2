import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { GgmlType, GgufValueType } from "./format.js";
import { GgufError, inspectGguf, readGguf, requiredMetadataKeys, type GgufErrorCode } from "./reader.js";
import {
  decodeF16,
  dequantizeQ8_0,
  encodeF16,
  f16ToF32,
  f32ToF16,
  meta,
  quantizeQ8_0,
  writeGguf,
  type GgufMetadataValue,
  type GgufRawTensorSpec,
  type GgufTensorSpec,
} from "./writer.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "corral-gguf-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let fileCounter = 0;
const tmpFile = (name: string): string => path.join(dir, `${fileCounter++}-${name}`);

/** The metadata inspectGguf requires, for a small llama model. */
function requiredMetadata(): [string, GgufMetadataValue][] {
  return [
    ["general.architecture", meta.string("llama")],
    ["llama.context_length", meta.u32(256)],
    ["llama.embedding_length", meta.u32(32)],
    ["llama.block_count", meta.u32(1)],
    ["llama.feed_forward_length", meta.u32(64)],
    ["llama.attention.head_count", meta.u32(4)],
    ["tokenizer.ggml.model", meta.string("llama")],
    ["tokenizer.ggml.tokens", meta.array("string", ["<unk>", "<s>", "</s>", "a", "b"])],
  ];
}

function smallTensors(): GgufTensorSpec[] {
  return [
    { name: "token_embd.weight", dims: [32, 5], type: "q8_0", data: ramp(160) },
    { name: "output_norm.weight", dims: [32], type: "f32", data: new Float32Array(32).fill(1) },
  ];
}

function ramp(n: number, scale = 0.01): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.sin(i) * scale * (1 + (i % 7)));
}

async function writeSmall(
  name: string,
  metadata: Iterable<readonly [string, GgufMetadataValue]> = requiredMetadata(),
  tensors: (GgufTensorSpec | GgufRawTensorSpec)[] = smallTensors(),
): Promise<string> {
  const file = tmpFile(name);
  await writeGguf(file, { metadata, tensors });
  return file;
}

/** Writes a copy of `file` changed by `patch` (in place, or returning a new buffer). */
async function patched(file: string, name: string, patch: (b: Buffer) => unknown): Promise<string> {
  const bytes = await readFile(file);
  const out = tmpFile(name);
  const result = patch(bytes);
  await writeFile(out, Buffer.isBuffer(result) ? result : bytes);
  return out;
}

/** The offset just past the length-prefixed string `text` (its first occurrence). */
function afterString(b: Buffer, text: string): number {
  const at = b.indexOf(Buffer.from(text));
  if (at < 8) throw new Error(`${text} not found`);
  return at + Buffer.byteLength(text);
}

async function expectGgufError(file: string, code: GgufErrorCode, message: RegExp | string): Promise<GgufError> {
  const err = await inspectGguf(file).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(GgufError);
  const e = err as GgufError;
  expect(e.code).toBe(code);
  expect(e.path).toBe(file);
  expect(e.message.startsWith(`${file}: `)).toBe(true);
  expect(e.message).not.toContain("\n");
  if (typeof message === "string") expect(e.message).toContain(message);
  else expect(e.message).toMatch(message);
  return e;
}

describe("f16 conversion", () => {
  it("round-trips every finite and infinite half exactly", () => {
    const wrong: number[] = [];
    for (let h = 0; h <= 0xffff; h++) {
      const exp = (h >>> 10) & 0x1f;
      if (exp === 0x1f && (h & 0x3ff) !== 0) continue; // NaN
      if (f32ToF16(f16ToF32(h)) !== h) wrong.push(h);
    }
    expect(wrong).toEqual([]);
  });

  it("converts known values, rounding to nearest with ties to even", () => {
    expect(f32ToF16(1)).toBe(0x3c00);
    expect(f32ToF16(-2)).toBe(0xc000);
    expect(f32ToF16(0.1)).toBe(0x2e66);
    expect(f32ToF16(1 / 3)).toBe(0x3555);
    expect(f32ToF16(-0)).toBe(0x8000);
    expect(f32ToF16(65504)).toBe(0x7bff);
    expect(f32ToF16(65519)).toBe(0x7bff);
    expect(f32ToF16(65520)).toBe(0x7c00); // a tie with 65536, which is Inf
    expect(f32ToF16(1e9)).toBe(0x7c00);
    expect(f32ToF16(-Infinity)).toBe(0xfc00);
    expect(f32ToF16(NaN) & 0x7c00).toBe(0x7c00);
    expect(f32ToF16(NaN) & 0x3ff).not.toBe(0);
    expect(f32ToF16(1 + 2 ** -11)).toBe(0x3c00); // tie: even mantissa stays
    expect(f32ToF16(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie: odd mantissa rounds up
    expect(f32ToF16(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01); // just over half
    expect(f32ToF16(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(f32ToF16(2 ** -25)).toBe(0x0000); // tie with 0
    expect(f32ToF16(1.5 * 2 ** -25)).toBe(0x0001);
    expect(f32ToF16(1023.5 * 2 ** -24)).toBe(0x0400); // subnormal rounding up into the normals
    expect(f32ToF16(2 ** -30)).toBe(0x0000);
  });

  it("rounds random floats to the nearest half", () => {
    const values = ramp(2000, 3);
    const halves = decodeF16(encodeF16(values));
    for (let i = 0; i < values.length; i++) {
      const x = values[i]!;
      const r = halves[i]!;
      // The neighbours of r are at most one ulp away; x must be no nearer to them than to r.
      const ulp = 2 ** (Math.max(Math.floor(Math.log2(Math.abs(r))), -14) - 10);
      expect(Math.abs(x - r)).toBeLessThanOrEqual(ulp / 2);
    }
  });
});

describe("Q8_0 quantisation", () => {
  it("stores an f16 scale max|x|/127 and int8 values rounded half away from zero", () => {
    // amax = 127 gives d = 1, so q = roundf(x).
    const x = new Float32Array(32);
    x.set([127, -127, 2.5, -2.5, 0.5, -0.5, 1.49, -1.51, 0]);
    const q = quantizeQ8_0(x);
    expect(q.length).toBe(34);
    expect(q.readUInt16LE(0)).toBe(0x3c00); // 1.0
    expect([...new Int8Array(q.buffer, q.byteOffset + 2, 9)]).toEqual([127, -127, 3, -3, 1, -1, 1, -2, 0]);
  });

  it("quantises an all-zero block to a zero scale", () => {
    const q = quantizeQ8_0(new Float32Array(32));
    expect([...q]).toEqual(new Array(34).fill(0));
  });

  it("dequantises to within half a step of the input", () => {
    const x = ramp(32 * 40, 0.05);
    const y = dequantizeQ8_0(quantizeQ8_0(x));
    for (let b = 0; b < 40; b++) {
      const block = x.subarray(b * 32, b * 32 + 32);
      const d = Math.max(...block.map(Math.abs)) / 127;
      for (let j = 0; j < 32; j++) expect(Math.abs(y[b * 32 + j]! - block[j]!)).toBeLessThanOrEqual(d * 0.5 + 127 * d * 2 ** -11 + 1e-9);
    }
  });

  it("needs whole blocks", () => {
    expect(() => quantizeQ8_0(new Float32Array(33))).toThrow(/multiple of 32/);
  });
});

describe("writeGguf and readGguf", () => {
  it("round-trips metadata of every value type", async () => {
    const tokens = Array.from({ length: 20_000 }, (_, i) => `token-${i}`); // a header over 64 KiB
    const longString = "x".repeat((1 << 20) + 1);
    const metadata: [string, GgufMetadataValue][] = [
      ...requiredMetadata(),
      ["t.u8", meta.u8(255)],
      ["t.i8", meta.i8(-128)],
      ["t.u16", meta.u16(65535)],
      ["t.i16", meta.i16(-32768)],
      ["t.u32", meta.u32(4294967295)],
      ["t.i32", meta.i32(-2147483648)],
      ["t.f32", meta.f32(0.5)],
      ["t.f64", meta.f64(Math.PI)],
      ["t.u64", meta.u64(2n ** 64n - 1n)],
      ["t.i64", meta.i64(-(2n ** 63n))],
      ["t.bool", meta.bool(true)],
      ["t.string", meta.string("héllo ✓")],
      ["t.empty", meta.string("")],
      ["t.long", meta.string(longString)],
      ["t.strings", meta.array("string", ["a", "", "ünïcode"])],
      ["t.ints", meta.array("i32", [1, -2, 3])],
      ["t.floats", meta.array("f32", new Float32Array([0.25, -1.5]))],
      ["t.bools", meta.array("bool", [true, false])],
      ["t.u64s", meta.array("u64", [1n, 2n ** 40n])],
      ["t.empty_array", meta.array("u8", [])],
      ["t.big_strings", meta.array("string", tokens)],
      ["t.big_floats", meta.array("f32", new Float32Array(5000))],
    ];
    const file = await writeSmall("all-types.gguf", metadata);
    const gguf = await readGguf(file);
    const get = (key: string) => gguf.metadata.get(key);

    expect(gguf.version).toBe(3);
    expect([...gguf.metadata.keys()]).toEqual(metadata.map(([k]) => k));
    expect(get("t.u8")).toEqual({ type: GgufValueType.UINT8, value: 255 });
    expect(get("t.i8")).toEqual({ type: GgufValueType.INT8, value: -128 });
    expect(get("t.u16")).toEqual({ type: GgufValueType.UINT16, value: 65535 });
    expect(get("t.i16")).toEqual({ type: GgufValueType.INT16, value: -32768 });
    expect(get("t.u32")).toEqual({ type: GgufValueType.UINT32, value: 4294967295 });
    expect(get("t.i32")).toEqual({ type: GgufValueType.INT32, value: -2147483648 });
    expect(get("t.f32")).toEqual({ type: GgufValueType.FLOAT32, value: 0.5 });
    expect(get("t.f64")).toEqual({ type: GgufValueType.FLOAT64, value: Math.PI });
    expect(get("t.u64")).toEqual({ type: GgufValueType.UINT64, value: 2n ** 64n - 1n });
    expect(get("t.i64")).toEqual({ type: GgufValueType.INT64, value: -(2n ** 63n) });
    expect(get("t.bool")).toEqual({ type: GgufValueType.BOOL, value: true });
    expect(get("t.string")).toEqual({ type: GgufValueType.STRING, value: "héllo ✓" });
    expect(get("t.empty")).toEqual({ type: GgufValueType.STRING, value: "" });
    expect(get("t.long")).toEqual({ type: GgufValueType.STRING, value: { kind: "long-string", length: longString.length } });
    const arr = (itemType: number, items: unknown[]) => ({ type: GgufValueType.ARRAY, value: { kind: "array", itemType, length: items.length, items } });
    expect(get("t.strings")).toEqual(arr(GgufValueType.STRING, ["a", "", "ünïcode"]));
    expect(get("t.ints")).toEqual(arr(GgufValueType.INT32, [1, -2, 3]));
    expect(get("t.floats")).toEqual(arr(GgufValueType.FLOAT32, [0.25, -1.5]));
    expect(get("t.bools")).toEqual(arr(GgufValueType.BOOL, [true, false]));
    expect(get("t.u64s")).toEqual(arr(GgufValueType.UINT64, [1n, 2n ** 40n]));
    expect(get("t.empty_array")).toEqual(arr(GgufValueType.UINT8, []));
    // Large arrays are counted, not kept.
    expect(get("t.big_strings")).toEqual({ type: GgufValueType.ARRAY, value: { kind: "array", itemType: GgufValueType.STRING, length: 20_000 } });
    expect(get("t.big_floats")).toEqual({ type: GgufValueType.ARRAY, value: { kind: "array", itemType: GgufValueType.FLOAT32, length: 5000 } });
  });

  it("round-trips F32, F16, Q8_0 and raw tensors, streamed in uneven chunks", async () => {
    const a = ramp(64 * 3);
    const b = ramp(32 * 7, 0.2);
    const c = ramp(96 * 2, 3);
    const raw = new Uint8Array([1, 2, 3, 4, 5, 6, 7]);
    const chunks = (values: Float32Array, size: number) =>
      function* () {
        for (let i = 0; i < values.length; i += size) yield values.subarray(i, i + size);
      };
    const file = tmpFile("tensors.gguf");
    const result = await writeGguf(file, {
      metadata: [...requiredMetadata(), ["general.alignment", meta.u32(64)]],
      tensors: [
        { name: "a", dims: [64, 3], type: "f32", data: chunks(a, 50) },
        { name: "b", dims: [32, 7], type: "q8_0", data: chunks(b, 13) },
        { name: "c", dims: [96, 2], type: "f16", data: async function* () { yield c; } },
        { name: "raw", dims: [7], ggmlType: 99, bytes: raw },
        { name: "d", dims: [32], type: "q8_0", data: b.subarray(0, 32) },
      ],
    });
    const bytes = await readFile(file);
    expect(result).toEqual({ path: file, bytes: bytes.length });
    expect(await readdir(path.dirname(file))).not.toContain(`${path.basename(file)}.tmp`);

    const gguf = await readGguf(file);
    expect(gguf.alignment).toBe(64);
    expect(gguf.dataOffset % 64).toBe(0);
    const info = Object.fromEntries(gguf.tensors.map((t) => [t.name, t]));
    expect(info.a).toMatchObject({ dims: [64, 3], type: GgmlType.F32, elements: 192, bytes: 768, offset: 0 });
    expect(info.b).toMatchObject({ dims: [32, 7], type: GgmlType.Q8_0, elements: 224, bytes: 7 * 34 });
    expect(info.c).toMatchObject({ dims: [96, 2], type: GgmlType.F16, bytes: 384 });
    expect(info.raw).toEqual({ name: "raw", dims: [7], type: 99, offset: expect.any(Number), elements: 7 });
    for (const t of gguf.tensors) expect(t.offset % 64).toBe(0);

    const data = (name: string, length: number) => bytes.subarray(gguf.dataOffset + info[name]!.offset, gguf.dataOffset + info[name]!.offset + length);
    expect(new Float32Array(Uint8Array.from(data("a", 768)).buffer)).toEqual(a);
    expect(Buffer.compare(data("b", 238), quantizeQ8_0(b))).toBe(0);
    expect(Buffer.compare(data("c", 384), encodeF16(c))).toBe(0);
    expect([...data("raw", 7)]).toEqual([...raw]);
    expect(Buffer.compare(data("d", 34), quantizeQ8_0(b.subarray(0, 32)))).toBe(0);
    // Every tensor, the last included, is padded to the alignment.
    expect(bytes.length).toBe(gguf.dataOffset + info.d!.offset + 64);
  });

  it("leaves no file behind when a tensor's data is wrong", async () => {
    const file = tmpFile("bad-data.gguf");
    await expect(
      writeGguf(file, { metadata: requiredMetadata(), tensors: [{ name: "a", dims: [32, 2], type: "f32", data: new Float32Array(63) }] }),
    ).rejects.toThrow(/got 63 values/);
    const failing = function* (): Iterable<Float32Array> {
      yield new Float32Array(32);
      throw new Error("producer failed");
    };
    await expect(
      writeGguf(file, { metadata: requiredMetadata(), tensors: [{ name: "a", dims: [32, 2], type: "q8_0", data: failing }] }),
    ).rejects.toThrow("producer failed");
    const names = await readdir(path.dirname(file));
    expect(names.filter((n) => n.startsWith(path.basename(file)))).toEqual([]);
  });

  it("rejects a Q8_0 tensor whose rows are not whole blocks", async () => {
    await expect(
      writeGguf(tmpFile("x.gguf"), { metadata: [], tensors: [{ name: "a", dims: [16, 2], type: "q8_0", data: new Float32Array(32) }] }),
    ).rejects.toThrow(/not a multiple of the Q8_0 block size/);
  });
});

describe("inspectGguf", () => {
  let valid: string;
  beforeAll(async () => {
    valid = await writeSmall("valid.gguf", [
      ...requiredMetadata(),
      ["general.name", meta.string("small")],
      ["general.file_type", meta.u32(7)],
      ["llama.attention.head_count_kv", meta.u32(2)],
      ["tokenizer.ggml.bos_token_id", meta.u32(1)],
      ["tokenizer.ggml.eos_token_id", meta.u32(2)],
      ["tokenizer.chat_template", meta.string("{{ messages }}")],
    ]);
  });

  it("summarises a valid file", async () => {
    const bytes = (await readFile(valid)).length;
    expect(await inspectGguf(valid)).toEqual({
      path: valid,
      fileSize: bytes,
      version: 3,
      architecture: "llama",
      name: "small",
      fileType: 7,
      quantization: "Q8_0",
      contextLength: 256,
      embeddingLength: 32,
      blockCount: 1,
      headCount: 4,
      headCountKv: 2,
      feedForwardLength: 64,
      vocabSize: 5,
      hasChatTemplate: true,
      chatTemplate: "{{ messages }}",
      bosTokenId: 1,
      eosTokenId: 2,
      tensorCount: 2,
      parameterCount: 192,
    });
  });

  it("defaults head_count_kv to head_count and infers the quantisation without general.file_type", async () => {
    const s = await inspectGguf(await writeSmall("no-ftype.gguf"));
    expect(s.headCountKv).toBe(4);
    expect(s.fileType).toBeUndefined();
    expect(s.quantization).toBe("Q8_0");
    expect(s.hasChatTemplate).toBe(false);
    expect(s.name).toBeUndefined();
  });

  it("leaves out a chat template of 64 KiB or more but reports that there is one", async () => {
    const file = await writeSmall("big-template.gguf", [...requiredMetadata(), ["tokenizer.chat_template", meta.string("x".repeat(64 * 1024))]]);
    const s = await inspectGguf(file);
    expect(s.hasChatTemplate).toBe(true);
    expect(s.chatTemplate).toBeUndefined();
  });

  it("skips the size check for tensor types it does not know", async () => {
    const file = await writeSmall("unknown-type.gguf", requiredMetadata(), [{ name: "x", dims: [3], ggmlType: 250, bytes: new Uint8Array(1) }]);
    const s = await inspectGguf(file);
    expect(s.tensorCount).toBe(1);
    expect(s.quantization).toBe("unknown");
  });

  it("ENOENT: a missing file", async () => {
    await expectGgufError(path.join(dir, "nope.gguf"), "ENOENT", "no such file");
  });

  it("NOT_A_FILE: a directory", async () => {
    const d = tmpFile("a-dir.gguf");
    await mkdir(d);
    await expectGgufError(d, "NOT_A_FILE", "not a regular file");
  });

  it("TRUNCATED: an empty file", async () => {
    const file = tmpFile("empty.gguf");
    await writeFile(file, "");
    await expectGgufError(file, "TRUNCATED", "the file is empty (0 bytes)");
  });

  it("TRUNCATED: a file cut in the header", async () => {
    const file = await patched(valid, "cut-header.gguf", (b) => b.subarray(0, 10));
    await expectGgufError(file, "TRUNCATED", "truncated file: the 24-byte header needs bytes up to offset 24 but the file is only 10 bytes");
  });

  it("TRUNCATED: a file cut in the metadata", async () => {
    const file = await patched(valid, "cut-metadata.gguf", (b) => b.subarray(0, afterString(b, "tokenizer.ggml.tokens") + 20));
    await expectGgufError(file, "TRUNCATED", /truncated file: metadata "tokenizer\.ggml\.tokens" needs bytes up to offset \d+ but the file is only \d+ bytes/);
  });

  it("TRUNCATED: a file cut in the tensor infos", async () => {
    const file = await patched(valid, "cut-infos.gguf", (b) => b.subarray(0, afterString(b, "output_norm.weight") + 6));
    await expectGgufError(file, "TRUNCATED", 'truncated file: tensor info "output_norm.weight" needs bytes up to offset');
  });

  it("TRUNCATED: a file cut in the tensor data", async () => {
    const gguf = await readGguf(valid);
    const last = gguf.tensors.at(-1)!;
    const file = await patched(valid, "cut-data.gguf", (b) => b.subarray(0, gguf.dataOffset + last.offset + last.bytes! - 1));
    await expectGgufError(file, "TRUNCATED", 'truncated file: the data of tensor "output_norm.weight" (F32 [32], 128 bytes) needs bytes up to offset');
  });

  it("TRUNCATED: a large array claimed past the end of the file", async () => {
    const file = await patched(valid, "long-array.gguf", (b) => {
      b.writeBigUInt64LE(100_000_000n, afterString(b, "tokenizer.ggml.tokens") + 8);
    });
    await expectGgufError(file, "TRUNCATED", 'truncated file: metadata "tokenizer.ggml.tokens" needs bytes up to offset 8000');
  });

  it("BAD_MAGIC: a file that is not GGUF", async () => {
    const file = tmpFile("text.gguf");
    await writeFile(file, "<!DOCTYPE html><html>404 Not Found</html>");
    await expectGgufError(file, "BAD_MAGIC", 'not a GGUF file: it starts with "<!DO", not "GGUF"');
  });

  it("BAD_VERSION: versions other than 2 and 3", async () => {
    for (const version of [1, 4]) {
      const file = await patched(valid, `v${version}.gguf`, (b) => {
        b.writeUInt32LE(version, 4);
      });
      await expectGgufError(file, "BAD_VERSION", `unsupported GGUF version ${version}; llama.cpp loads versions 2 and 3`);
    }
    const bigEndian = await patched(valid, "be.gguf", (b) => {
      b.writeUInt32BE(3, 4);
    });
    await expectGgufError(bigEndian, "BAD_VERSION", "unsupported GGUF version 50331648 (a big-endian GGUF file)");
  });

  it("reads version 2 files", async () => {
    const file = await patched(valid, "v2.gguf", (b) => {
      b.writeUInt32LE(2, 4);
    });
    expect((await inspectGguf(file)).version).toBe(2);
  });

  it("BAD_COUNT: absurd tensor and metadata counts, array and key lengths", async () => {
    const cases: [string, (b: Buffer) => unknown, string][] = [
      ["tensors", (b) => b.writeBigUInt64LE(2n ** 40n, 8), "absurd tensor count 1099511627776 (limit 1048576)"],
      ["kvs", (b) => b.writeBigUInt64LE(2n ** 62n, 16), "absurd metadata entry count >= 2^53 (limit 1048576)"],
      ["array", (b) => b.writeBigUInt64LE(2n ** 40n, afterString(b, "tokenizer.ggml.tokens") + 8), 'absurd array length 1099511627776 in metadata "tokenizer.ggml.tokens"'],
      ["key", (b) => b.writeBigUInt64LE(2n ** 63n, 24), "absurd key length >= 2^53 in metadata entry 0"],
      ["string", (b) => b.writeBigUInt64LE(2n ** 50n, afterString(b, "general.architecture") + 4), 'absurd string length 1125899906842624 in metadata "general.architecture"'],
    ];
    for (const [name, patch, message] of cases) {
      await expectGgufError(await patched(valid, `count-${name}.gguf`, patch), "BAD_COUNT", message);
    }
  });

  it("BAD_METADATA: unknown value types, duplicate keys, nested arrays", async () => {
    const unknownType = await patched(valid, "unknown-value-type.gguf", (b) => {
      b.writeUInt32LE(99, afterString(b, "llama.block_count"));
    });
    await expectGgufError(unknownType, "BAD_METADATA", 'metadata "llama.block_count" has unknown value type 99');

    const duplicate = await writeSmall("duplicate.gguf", [...requiredMetadata(), ["llama.block_count", meta.u32(2)]]);
    await expectGgufError(duplicate, "BAD_METADATA", 'duplicate metadata key "llama.block_count"');

    const nested = await patched(valid, "nested.gguf", (b) => {
      b.writeUInt32LE(GgufValueType.ARRAY, afterString(b, "tokenizer.ggml.tokens") + 4);
    });
    await expectGgufError(nested, "BAD_METADATA", 'metadata "tokenizer.ggml.tokens" is an array of arrays');
  });

  it("BAD_METADATA: required keys of the wrong type or value", async () => {
    const replace = (key: string, value: GgufMetadataValue) =>
      requiredMetadata().map(([k, v]): [string, GgufMetadataValue] => [k, k === key ? value : v]);
    const cases: [string, GgufMetadataValue, string][] = [
      ["general.architecture", meta.u32(1), "general.architecture is not a non-empty string"],
      ["llama.context_length", meta.string("4096"), "llama.context_length has type string, expected an integer"],
      ["llama.attention.head_count", meta.u32(0), "llama.attention.head_count is 0, expected a positive integer"],
      ["tokenizer.ggml.tokens", meta.array("i32", [1, 2]), "tokenizer.ggml.tokens has type array of i32, expected an array of strings"],
      ["tokenizer.ggml.model", meta.bool(true), "tokenizer.ggml.model has type bool, expected a string"],
    ];
    for (const [key, value, message] of cases) {
      await expectGgufError(await writeSmall(`wrong-${key}.gguf`, replace(key, value)), "BAD_METADATA", message);
    }
  });

  it("accepts per-layer arrays for counts and reports their largest value", async () => {
    const metadata = requiredMetadata().map(([k, v]): [string, GgufMetadataValue] =>
      k === "llama.attention.head_count" ? [k, meta.array("u32", [2, 8, 4])] : [k, v],
    );
    expect((await inspectGguf(await writeSmall("per-layer.gguf", metadata))).headCount).toBe(8);
  });

  it("MISSING_METADATA: each required key", async () => {
    for (const key of requiredMetadataKeys("llama")) {
      const file = await writeSmall(`missing-${key}.gguf`, requiredMetadata().filter(([k]) => k !== key));
      const err = await expectGgufError(file, "MISSING_METADATA", `missing required metadata ${key}`);
      const aborts = key === "llama.feed_forward_length" || key === "llama.attention.head_count";
      expect(err.message.includes("llama.cpp aborts the whole process")).toBe(aborts);
    }
    const noArch = await writeSmall("missing-arch.gguf", requiredMetadata().filter(([k]) => k !== "general.architecture"));
    await expectGgufError(noArch, "MISSING_METADATA", "missing required metadata general.architecture");
  });

  it("MISSING_METADATA: lists every missing key for the file's architecture", async () => {
    const file = await writeSmall("missing-many.gguf", [
      ["general.architecture", meta.string("qwen2")],
      ...requiredMetadata().filter(([k]) => k.startsWith("tokenizer.")),
    ]);
    await expectGgufError(
      file,
      "MISSING_METADATA",
      "missing required metadata qwen2.context_length, qwen2.embedding_length, qwen2.block_count, " +
        "qwen2.feed_forward_length, qwen2.attention.head_count " +
        "(llama.cpp aborts the whole process without qwen2.feed_forward_length or qwen2.attention.head_count)",
    );
  });

  it("BAD_TENSOR: partial blocks, too many dims, misaligned offsets, duplicate and long names", async () => {
    const partialBlock = await writeSmall("partial-block.gguf", requiredMetadata(), [
      { name: "q", dims: [16, 2], ggmlType: GgmlType.Q8_0, bytes: new Uint8Array(34) },
    ]);
    await expectGgufError(partialBlock, "BAD_TENSOR", 'tensor "q" of type Q8_0 has ne0 = 16, not a multiple of its block size 32');

    const fiveDims = await patched(valid, "five-dims.gguf", (b) => {
      b.writeUInt32LE(5, afterString(b, "output_norm.weight"));
    });
    await expectGgufError(fiveDims, "BAD_TENSOR", 'tensor "output_norm.weight" has 5 dimensions; ggml allows 1 to 4');

    const misaligned = await patched(valid, "misaligned.gguf", (b) => {
      const at = afterString(b, "output_norm.weight") + 4 + 8 + 4; // n_dims, one dim, type
      b.writeBigUInt64LE(b.readBigUInt64LE(at) + 4n, at);
    });
    await expectGgufError(misaligned, "BAD_TENSOR", /tensor "output_norm\.weight" has data offset \d+, not a multiple of the alignment 32/);

    const hugeDims = await patched(valid, "huge-dims.gguf", (b) => {
      b.writeBigUInt64LE(2n ** 60n, afterString(b, "output_norm.weight") + 4);
    });
    await expectGgufError(hugeDims, "BAD_TENSOR", 'tensor "output_norm.weight" has absurd dimensions [>= 2^53]');

    const duplicate = await writeSmall("duplicate-tensor.gguf", requiredMetadata(), [...smallTensors(), ...smallTensors().slice(1)]);
    await expectGgufError(duplicate, "BAD_TENSOR", 'duplicate tensor name "output_norm.weight"');

    const longName = await writeSmall("long-name.gguf", requiredMetadata(), [{ name: "n".repeat(64), dims: [1], type: "f32", data: new Float32Array(1) }]);
    await expectGgufError(longName, "BAD_TENSOR", "tensor 0 has a name of 64 bytes; ggml allows at most 63");
  });
});
