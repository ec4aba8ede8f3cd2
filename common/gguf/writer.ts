// A streaming GGUF v3 writer: the header, metadata and tensor infos are built in memory (they
// are small), then the tensors are encoded and written one at a time, chunk by chunk, so a model
// never has to be in memory at once. It writes `out + ".tmp"` and renames it to `out`, so a
// half-written file never appears under the final name.

import { open, rename, rm } from "node:fs/promises";
import { endianness } from "node:os";
import {
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC_BYTES,
  GGUF_WRITE_VERSION,
  GgmlType,
  GgufValueType,
  ggmlTensorBytes,
  ggmlTypeName,
} from "./format.js";

// ---------------------------------------------------------------------------------------------
// Metadata values

export type GgufScalarTypeName =
  | "u8"
  | "i8"
  | "u16"
  | "i16"
  | "u32"
  | "i32"
  | "f32"
  | "bool"
  | "string"
  | "u64"
  | "i64"
  | "f64";

export type GgufMetadataValue =
  | { type: "u8" | "i8" | "u16" | "i16" | "u32" | "i32" | "f32" | "f64"; value: number }
  | { type: "u64" | "i64"; value: number | bigint }
  | { type: "bool"; value: boolean }
  | { type: "string"; value: string }
  | { type: "array"; itemType: GgufScalarTypeName; items: ArrayLike<number | bigint | boolean | string> };

/** Constructors for metadata values: `meta.u32(4096)`, `meta.array("string", tokens)`. */
export const meta = {
  u8: (value: number): GgufMetadataValue => ({ type: "u8", value }),
  i8: (value: number): GgufMetadataValue => ({ type: "i8", value }),
  u16: (value: number): GgufMetadataValue => ({ type: "u16", value }),
  i16: (value: number): GgufMetadataValue => ({ type: "i16", value }),
  u32: (value: number): GgufMetadataValue => ({ type: "u32", value }),
  i32: (value: number): GgufMetadataValue => ({ type: "i32", value }),
  f32: (value: number): GgufMetadataValue => ({ type: "f32", value }),
  f64: (value: number): GgufMetadataValue => ({ type: "f64", value }),
  u64: (value: number | bigint): GgufMetadataValue => ({ type: "u64", value }),
  i64: (value: number | bigint): GgufMetadataValue => ({ type: "i64", value }),
  bool: (value: boolean): GgufMetadataValue => ({ type: "bool", value }),
  string: (value: string): GgufMetadataValue => ({ type: "string", value }),
  array: (itemType: GgufScalarTypeName, items: ArrayLike<number | bigint | boolean | string>): GgufMetadataValue => ({
    type: "array",
    itemType,
    items,
  }),
};

const VALUE_TYPE_CODES: Record<GgufScalarTypeName | "array", number> = {
  u8: GgufValueType.UINT8,
  i8: GgufValueType.INT8,
  u16: GgufValueType.UINT16,
  i16: GgufValueType.INT16,
  u32: GgufValueType.UINT32,
  i32: GgufValueType.INT32,
  f32: GgufValueType.FLOAT32,
  bool: GgufValueType.BOOL,
  string: GgufValueType.STRING,
  array: GgufValueType.ARRAY,
  u64: GgufValueType.UINT64,
  i64: GgufValueType.INT64,
  f64: GgufValueType.FLOAT64,
};

/** A growable little-endian byte buffer for the header. */
class ByteWriter {
  private buf = Buffer.alloc(64 * 1024);
  length = 0;

  /**
   * Makes room for n more bytes and returns the buffer and the offset to write them at. Callers
   * must take the returned buffer, not `this.buf` read before the call: growing replaces it.
   */
  private room(n: number): [Buffer, number] {
    if (this.length + n > this.buf.length) {
      const next = Buffer.alloc(Math.max(this.buf.length * 2, this.length + n));
      this.buf.copy(next, 0, 0, this.length);
      this.buf = next;
    }
    const at = this.length;
    this.length += n;
    return [this.buf, at];
  }

  bytes(b: Uint8Array): void {
    const [buf, at] = this.room(b.length);
    buf.set(b, at);
  }
  u32(v: number): void {
    const [buf, at] = this.room(4);
    buf.writeUInt32LE(v, at);
  }
  u64(v: number | bigint): void {
    const [buf, at] = this.room(8);
    buf.writeBigUInt64LE(BigInt(v), at);
  }
  string(s: string): void {
    const b = Buffer.from(s, "utf8");
    this.u64(b.length);
    this.bytes(b);
  }
  scalar(type: GgufScalarTypeName, v: number | bigint | boolean | string, key: string): void {
    const bad = (): never => {
      throw new TypeError(`GGUF metadata ${key}: ${String(v)} is not a valid ${type}`);
    };
    if (type === "string") {
      if (typeof v !== "string") bad();
      this.string(v as string);
      return;
    }
    if (type === "bool") {
      if (typeof v !== "boolean") bad();
      const [buf, at] = this.room(1);
      buf.writeUInt8(v ? 1 : 0, at);
      return;
    }
    if (type === "u64" || type === "i64") {
      if (typeof v !== "number" && typeof v !== "bigint") bad();
      const big = BigInt(v as number | bigint);
      const [buf, at] = this.room(8);
      if (type === "u64") buf.writeBigUInt64LE(big, at);
      else buf.writeBigInt64LE(big, at);
      return;
    }
    if (typeof v !== "number") bad();
    const n = v as number;
    // Buffer's integer writers throw RangeError for out-of-range values.
    const [buf, at] = this.room(SCALAR_SIZES[type]);
    switch (type) {
      case "u8":
        buf.writeUInt8(n, at);
        break;
      case "i8":
        buf.writeInt8(n, at);
        break;
      case "u16":
        buf.writeUInt16LE(n, at);
        break;
      case "i16":
        buf.writeInt16LE(n, at);
        break;
      case "u32":
        buf.writeUInt32LE(n, at);
        break;
      case "i32":
        buf.writeInt32LE(n, at);
        break;
      case "f32":
        buf.writeFloatLE(n, at);
        break;
      case "f64":
        buf.writeDoubleLE(n, at);
        break;
    }
  }
  value(key: string, v: GgufMetadataValue): void {
    this.u32(VALUE_TYPE_CODES[v.type]);
    if (v.type !== "array") {
      this.scalar(v.type, v.value, key);
      return;
    }
    this.u32(VALUE_TYPE_CODES[v.itemType]);
    this.u64(v.items.length);
    for (let i = 0; i < v.items.length; i++) this.scalar(v.itemType, v.items[i]!, key);
  }
  padTo(alignment: number): void {
    this.room((alignment - (this.length % alignment)) % alignment); // new room is zero-filled
  }
  result(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

const SCALAR_SIZES: Record<"u8" | "i8" | "u16" | "i16" | "u32" | "i32" | "f32" | "f64", number> = {
  u8: 1,
  i8: 1,
  u16: 2,
  i16: 2,
  u32: 4,
  i32: 4,
  f32: 4,
  f64: 8,
};

// ---------------------------------------------------------------------------------------------
// Tensor encodings

const LITTLE_ENDIAN = endianness() === "LE";
const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE half-precision bits for a number, rounding to nearest, ties to even (like ggml). */
export function f32ToF16(value: number): number {
  f32Scratch[0] = value;
  return f32BitsToF16(u32Scratch[0]!);
}

/** f32ToF16 for the bits of an f32. */
function f32BitsToF16(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0); // Inf, NaN
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 0x1f) return sign | 0x7c00; // overflow -> Inf
  if (e <= 0) {
    // A half subnormal (or zero): value = m * 2^-24.
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let half = m >>> shift;
    const rest = m & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rest > halfway || (rest === halfway && (half & 1) === 1)) half++;
    return sign | half;
  }
  // Round to nearest, ties to even, without branches: adding 0xfff plus the kept lowest bit carries
  // into bit 13 exactly when the dropped bits are over half, or half with an odd result. A carry
  // out of the mantissa moves into the exponent (and from the largest finite value to Inf).
  const rounded = mant + 0xfff + ((mant >>> 13) & 1);
  return sign | ((e << 10) + (rounded >>> 13));
}

/** The number a half-precision bit pattern stands for. */
export function f16ToF32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

export function encodeF16(values: ArrayLike<number>): Buffer {
  if (!LITTLE_ENDIAN) {
    const out = Buffer.allocUnsafe(values.length * 2);
    for (let i = 0; i < values.length; i++) out.writeUInt16LE(f32ToF16(values[i]!), i * 2);
    return out;
  }
  const halves = new Uint16Array(values.length);
  if (values instanceof Float32Array) {
    const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
    for (let i = 0; i < bits.length; i++) halves[i] = f32BitsToF16(bits[i]!);
  } else {
    for (let i = 0; i < values.length; i++) halves[i] = f32ToF16(values[i]!);
  }
  return Buffer.from(halves.buffer, 0, halves.byteLength);
}

export function decodeF16(bytes: Uint8Array): Float32Array {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(b.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = f16ToF32(b.readUInt16LE(i * 2));
  return out;
}

export const Q8_0_BLOCK = 32;
export const Q8_0_BLOCK_BYTES = 34;

/**
 * ggml's quantize_row_q8_0_ref: per block of 32, d = max|x| / 127 (stored as f16) and
 * q = roundf(x / d) as int8 (computed with the unrounded d, in f32 precision, like ggml).
 */
export function quantizeQ8_0(values: ArrayLike<number>): Buffer {
  if (values.length % Q8_0_BLOCK !== 0) {
    throw new RangeError(`Q8_0 needs a multiple of ${Q8_0_BLOCK} values, got ${values.length}`);
  }
  const blocks = values.length / Q8_0_BLOCK;
  const out = Buffer.allocUnsafe(blocks * Q8_0_BLOCK_BYTES);
  for (let b = 0; b < blocks; b++) {
    const base = b * Q8_0_BLOCK;
    let amax = 0;
    for (let j = 0; j < Q8_0_BLOCK; j++) {
      const a = Math.abs(values[base + j]!);
      if (a > amax) amax = a;
    }
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    const o = b * Q8_0_BLOCK_BYTES;
    const scale = f32ToF16(d);
    out[o] = scale & 0xff;
    out[o + 1] = scale >>> 8;
    for (let j = 0; j < Q8_0_BLOCK; j++) {
      const x = Math.fround(values[base + j]! * id);
      // roundf (halves away from zero), stored as the byte of a two's-complement int8.
      out[o + 2 + j] = (Math.sign(x) * Math.floor(Math.abs(x) + 0.5)) & 0xff;
    }
  }
  return out;
}

export function dequantizeQ8_0(bytes: Uint8Array): Float32Array {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const blocks = Math.floor(b.length / Q8_0_BLOCK_BYTES);
  const out = new Float32Array(blocks * Q8_0_BLOCK);
  for (let i = 0; i < blocks; i++) {
    const o = i * Q8_0_BLOCK_BYTES;
    const d = f16ToF32(b.readUInt16LE(o));
    for (let j = 0; j < Q8_0_BLOCK; j++) out[i * Q8_0_BLOCK + j] = d * b.readInt8(o + 2 + j);
  }
  return out;
}

function encodeF32(values: Float32Array): Buffer {
  if (LITTLE_ENDIAN) return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
  const out = Buffer.allocUnsafe(values.length * 4);
  for (let i = 0; i < values.length; i++) out.writeFloatLE(values[i]!, i * 4);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Files

export type GgufTensorType = "f32" | "f16" | "q8_0";

export const GGML_TYPE_OF: Readonly<Record<GgufTensorType, number>> = {
  f32: GgmlType.F32,
  f16: GgmlType.F16,
  q8_0: GgmlType.Q8_0,
};

/** Values in ggml order (ne0 fastest): all at once, or chunk by chunk as the tensor is written. */
export type GgufTensorData = Float32Array | (() => Iterable<Float32Array> | AsyncIterable<Float32Array>);

export interface GgufTensorSpec {
  name: string;
  /** ne0 (the contiguous, input dimension) first. */
  dims: readonly number[];
  type: GgufTensorType;
  data: GgufTensorData;
}

/** A tensor already encoded, of any ggml type (the writer checks its size when it knows the type). */
export interface GgufRawTensorSpec {
  name: string;
  dims: readonly number[];
  ggmlType: number;
  bytes: Uint8Array;
}

export interface GgufWriteInput {
  /** Written in this order. `general.alignment`, if present, sets the alignment. */
  metadata: Record<string, GgufMetadataValue> | Iterable<readonly [string, GgufMetadataValue]>;
  tensors: readonly (GgufTensorSpec | GgufRawTensorSpec)[];
}

export interface GgufWriteResult {
  path: string;
  bytes: number;
}

function isRaw(t: GgufTensorSpec | GgufRawTensorSpec): t is GgufRawTensorSpec {
  return "bytes" in t;
}

/** Encodes a stream of values of one tensor, carrying partial Q8_0 blocks across chunks. */
class TensorEncoder {
  private pending = new Float32Array(Q8_0_BLOCK);
  private pendingLength = 0;
  values = 0;

  constructor(private readonly type: GgufTensorType) {}

  encode(chunk: Float32Array): Buffer[] {
    this.values += chunk.length;
    if (this.type === "f32") return [encodeF32(chunk)];
    if (this.type === "f16") return [encodeF16(chunk)];
    const parts: Buffer[] = [];
    let start = 0;
    if (this.pendingLength > 0) {
      const take = Math.min(Q8_0_BLOCK - this.pendingLength, chunk.length);
      this.pending.set(chunk.subarray(0, take), this.pendingLength);
      this.pendingLength += take;
      start = take;
      if (this.pendingLength === Q8_0_BLOCK) {
        parts.push(quantizeQ8_0(this.pending));
        this.pendingLength = 0;
      }
    }
    const whole = Math.floor((chunk.length - start) / Q8_0_BLOCK) * Q8_0_BLOCK;
    if (whole > 0) parts.push(quantizeQ8_0(chunk.subarray(start, start + whole)));
    const rest = chunk.length - start - whole;
    if (rest > 0) {
      this.pending.set(chunk.subarray(start + whole), 0);
      this.pendingLength = rest;
    }
    return parts;
  }

  /** True when no partial block is left over. */
  get complete(): boolean {
    return this.pendingLength === 0;
  }
}

/**
 * Writes a GGUF v3 file tensor by tensor to `out + ".tmp"`, then renames it to `out`. Two
 * writers must not share an `out` (give each a unique name and rename it yourself).
 */
export async function writeGguf(out: string, input: GgufWriteInput): Promise<GgufWriteResult> {
  const entries: (readonly [string, GgufMetadataValue])[] =
    Symbol.iterator in input.metadata
      ? [...(input.metadata as Iterable<readonly [string, GgufMetadataValue]>)]
      : Object.entries(input.metadata as Record<string, GgufMetadataValue>);

  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const alignEntry = entries.find(([k]) => k === "general.alignment");
  if (alignEntry !== undefined) {
    const v = alignEntry[1];
    if (v.type === "array" || typeof v.value !== "number" || v.value <= 0 || (v.value & (v.value - 1)) !== 0) {
      throw new RangeError("general.alignment must be a power of two");
    }
    alignment = v.value;
  }

  // Sizes and offsets of every tensor, before any data is written.
  const layout = input.tensors.map((t) => {
    const ggmlType = isRaw(t) ? t.ggmlType : GGML_TYPE_OF[t.type];
    if (ggmlType === undefined) throw new TypeError(`tensor ${t.name}: unknown type ${(t as GgufTensorSpec).type}`);
    if (t.dims.length < 1 || t.dims.length > 4 || t.dims.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      throw new RangeError(`tensor ${t.name}: bad dims [${t.dims.join(", ")}]`);
    }
    const elements = t.dims.reduce((a, b) => a * b, 1);
    const known = ggmlTensorBytes(ggmlType, t.dims);
    if (isRaw(t)) {
      if (known !== undefined && known !== t.bytes.length) {
        const shape = `${ggmlTypeName(ggmlType)} [${t.dims.join(", ")}]`;
        throw new RangeError(`tensor ${t.name}: ${t.bytes.length} bytes given, ${shape} needs ${known}`);
      }
      return { ggmlType, elements, bytes: t.bytes.length };
    }
    if (known === undefined) {
      throw new RangeError(`tensor ${t.name}: ne0 = ${t.dims[0]} is not a multiple of the ${ggmlTypeName(ggmlType)} block size`);
    }
    return { ggmlType, elements, bytes: known };
  });

  const header = new ByteWriter();
  header.bytes(GGUF_MAGIC_BYTES);
  header.u32(GGUF_WRITE_VERSION);
  header.u64(input.tensors.length);
  header.u64(entries.length);
  for (const [key, value] of entries) {
    header.string(key);
    header.value(key, value);
  }
  let offset = 0;
  input.tensors.forEach((t, i) => {
    header.string(t.name);
    header.u32(t.dims.length);
    for (const d of t.dims) header.u64(d);
    header.u32(layout[i]!.ggmlType);
    header.u64(offset);
    offset += Math.ceil(layout[i]!.bytes / alignment) * alignment;
  });
  header.padTo(alignment);

  const tmp = `${out}.tmp`;
  const fh = await open(tmp, "w");
  let position = 0;
  const write = async (buf: Uint8Array): Promise<void> => {
    let done = 0;
    while (done < buf.length) {
      const { bytesWritten } = await fh.write(buf, done, buf.length - done, position);
      done += bytesWritten;
      position += bytesWritten;
    }
  };
  const zeros = Buffer.alloc(alignment);
  try {
    await write(header.result());
    for (let i = 0; i < input.tensors.length; i++) {
      const t = input.tensors[i]!;
      const { elements, bytes } = layout[i]!;
      const start = position;
      if (isRaw(t)) {
        await write(t.bytes);
      } else {
        const encoder = new TensorEncoder(t.type);
        const chunks = t.data instanceof Float32Array ? [t.data] : t.data();
        for await (const chunk of chunks) {
          for (const part of encoder.encode(chunk)) await write(part);
        }
        if (encoder.values !== elements || !encoder.complete) {
          throw new RangeError(`tensor ${t.name}: got ${encoder.values} values, [${t.dims.join(", ")}] needs ${elements}`);
        }
      }
      if (position - start !== bytes) throw new Error(`tensor ${t.name}: wrote ${position - start} bytes, expected ${bytes}`);
      const pad = (alignment - (bytes % alignment)) % alignment;
      if (pad > 0) await write(zeros.subarray(0, pad)); // the last one too, as llama.cpp writes
    }
    await fh.close();
  } catch (err) {
    await fh.close().catch(() => {});
    await rm(tmp, { force: true });
    throw err;
  }
  await rename(tmp, out);
  return { path: out, bytes: position };
}
