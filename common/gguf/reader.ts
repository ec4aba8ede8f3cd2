// Reads the header, metadata and tensor infos of a GGUF file with small, bounded reads, and checks
// a file before anyone hands it to llama.cpp (which aborts the whole process on some bad files).
// The file's size bounds every length and count, so a hostile file cannot make us allocate much:
// large arrays (tokenizer tokens, merges) are walked and counted, never materialised.

import { open, stat, type FileHandle } from "node:fs/promises";
import {
  GGML_MAX_DIMS,
  GGML_MAX_NAME,
  GGML_TYPE_TRAITS,
  GGUF_DEFAULT_ALIGNMENT,
  GGUF_MAGIC,
  GGUF_SUPPORTED_VERSIONS,
  GGUF_VALUE_TYPE_NAMES,
  GgufValueType,
  fileTypeQuantization,
  fixedValueSize,
  ggmlTensorBytes,
  ggmlTypeName,
  isIntegerValueType,
} from "./format.js";

export type GgufErrorCode =
  | "ENOENT" // no such file
  | "NOT_A_FILE" // a directory or something else that is not a regular file
  | "IO" // the file exists but could not be read (permissions, I/O error)
  | "TRUNCATED" // empty, or the header, metadata, tensor infos or tensor data run past the end
  | "BAD_MAGIC" // does not start with "GGUF"
  | "BAD_VERSION" // a GGUF version other than 2 or 3
  | "BAD_COUNT" // an absurd count or length (tensors, metadata entries, array or string length)
  | "BAD_METADATA" // an invalid value type, duplicate key, or a required key of the wrong type
  | "MISSING_METADATA" // a key llama.cpp needs is absent
  | "BAD_TENSOR"; // an invalid tensor info (dims, name, offset, block size)

/** A file that is not a GGUF file llama.cpp can load. The message is one line naming the file. */
export class GgufError extends Error {
  readonly code: GgufErrorCode;
  readonly path: string;

  constructor(code: GgufErrorCode, path: string, problem: string, options?: ErrorOptions) {
    super(`${path}: ${problem}`, options);
    this.name = "GgufError";
    this.code = code;
    this.path = path;
  }
}

/** An array value; `items` is present only for arrays of at most MAX_MATERIALISED_ARRAY items. */
export interface GgufArray {
  readonly kind: "array";
  readonly itemType: number;
  readonly length: number;
  readonly items?: readonly (number | bigint | boolean | string)[];
}

/** A string value too long to keep (over MAX_MATERIALISED_STRING bytes): only its length. */
export interface GgufLongString {
  readonly kind: "long-string";
  readonly length: number;
}

/** u64 and i64 values are bigints; every other number is a number. */
export type GgufValue = number | bigint | boolean | string | GgufArray | GgufLongString;

export interface GgufMetadataEntry {
  /** The GgufValueType written in the file. */
  readonly type: number;
  readonly value: GgufValue;
}

export interface GgufTensorInfo {
  readonly name: string;
  /** ne0 (the contiguous dimension) first. */
  readonly dims: readonly number[];
  readonly type: number;
  /** Offset from the start of the data section. */
  readonly offset: number;
  readonly elements: number;
  /** Undefined for a ggml type this reader does not know. */
  readonly bytes?: number;
}

export interface GgufFile {
  readonly path: string;
  readonly fileSize: number;
  readonly version: number;
  readonly alignment: number;
  readonly metadata: ReadonlyMap<string, GgufMetadataEntry>;
  readonly tensors: readonly GgufTensorInfo[];
  /** Absolute offset of the data section. */
  readonly dataOffset: number;
}

export interface GgufSummary {
  path: string;
  fileSize: number;
  version: number;
  architecture: string;
  name?: string;
  fileType?: number;
  /** "Q8_0", "F16", "Q4_K_M", ...: from general.file_type, else the most common weight type. */
  quantization: string;
  contextLength: number;
  embeddingLength: number;
  blockCount: number;
  headCount: number;
  headCountKv: number;
  feedForwardLength: number;
  /** The number of entries in tokenizer.ggml.tokens. */
  vocabSize: number;
  hasChatTemplate: boolean;
  /** Present only when the template is under 64 KiB. */
  chatTemplate?: string;
  bosTokenId?: number;
  eosTokenId?: number;
  tensorCount: number;
  /** Sum of the element counts of all tensors. */
  parameterCount: number;
}

// Limits. Every count is also checked against the bytes left in the file, which is what bounds
// allocation; these catch values no real model has before they are even compared.
export const MAX_TENSORS = 1 << 20;
export const MAX_METADATA_ENTRIES = 1 << 20;
export const MAX_ARRAY_LENGTH = 1 << 30;
export const MAX_STRING_LENGTH = 1 << 30;
export const MAX_KEY_LENGTH = 1 << 16;
/** Strings up to this size are kept; longer ones are skipped and reported as GgufLongString. */
export const MAX_MATERIALISED_STRING = 1 << 20;
/** Arrays up to this many items keep their items. */
export const MAX_MATERIALISED_ARRAY = 1024;
export const MAX_CHAT_TEMPLATE = 64 * 1024;

const READ_CHUNK = 64 * 1024;

/** A count read from the file, for messages (u64n gives Infinity for values of 2^53 and up). */
function count(n: number): string {
  return n === Infinity ? ">= 2^53" : String(n);
}

/** A quoted, shortened, single-line rendering of text from the file, for messages. */
function quote(text: string): string {
  const short = text.length > 80 ? `${text.slice(0, 77)}...` : text;
  return JSON.stringify(short);
}

class Cursor {
  pos = 0;
  private buf: Buffer = Buffer.alloc(0);
  private bufStart = 0;

  constructor(
    private readonly fh: FileHandle,
    readonly size: number,
    private readonly fail: (code: GgufErrorCode, problem: string) => never,
  ) {}

  get remaining(): number {
    return this.size - this.pos;
  }

  truncated(what: string, end: number): never {
    this.fail(
      "TRUNCATED",
      `truncated file: ${what} needs bytes up to offset ${end} but the file is only ${this.size} bytes`,
    );
  }

  /** Makes the next n bytes available to the synchronous readers below. */
  async need(n: number, what: string): Promise<void> {
    if (this.pos + n <= this.bufStart + this.buf.length) return;
    if (this.pos + n > this.size) this.truncated(what, this.pos + n);
    const len = Math.min(Math.max(n, READ_CHUNK), this.size - this.pos);
    const buf = Buffer.allocUnsafe(len);
    let got = 0;
    while (got < len) {
      const { bytesRead } = await this.fh.read(buf, got, len - got, this.pos + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    if (got < n) this.truncated(`${what} (the file shrank while being read)`, this.pos + n);
    this.buf = buf.subarray(0, got);
    this.bufStart = this.pos;
  }

  skip(n: number, what: string): void {
    if (this.pos + n > this.size) this.truncated(what, this.pos + n);
    this.pos += n;
  }

  private take(n: number): number {
    const at = this.pos - this.bufStart;
    this.pos += n;
    return at;
  }

  u8(): number {
    return this.buf.readUInt8(this.take(1));
  }
  i8(): number {
    return this.buf.readInt8(this.take(1));
  }
  u16(): number {
    return this.buf.readUInt16LE(this.take(2));
  }
  i16(): number {
    return this.buf.readInt16LE(this.take(2));
  }
  u32(): number {
    return this.buf.readUInt32LE(this.take(4));
  }
  i32(): number {
    return this.buf.readInt32LE(this.take(4));
  }
  f32(): number {
    return this.buf.readFloatLE(this.take(4));
  }
  f64(): number {
    return this.buf.readDoubleLE(this.take(8));
  }
  u64(): bigint {
    return this.buf.readBigUInt64LE(this.take(8));
  }
  i64(): bigint {
    return this.buf.readBigInt64LE(this.take(8));
  }
  /** A u64 as a number, or Infinity when it does not fit in 53 bits (always absurd here). */
  u64n(): number {
    const at = this.take(8);
    const lo = this.buf.readUInt32LE(at);
    const hi = this.buf.readUInt32LE(at + 4);
    return hi >= 0x200000 ? Infinity : hi * 0x1_0000_0000 + lo;
  }
  utf8(n: number): string {
    return this.buf.toString("utf8", this.take(n), this.pos - this.bufStart);
  }
}

/**
 * Reads and structurally checks a GGUF file's header, metadata and tensor infos: magic, version,
 * counts, lengths, value types, tensor shapes and offsets, and that every tensor's data lies
 * inside the file. It does not check which metadata keys are present (inspectGguf does).
 */
export async function readGguf(path: string): Promise<GgufFile> {
  const fail = (code: GgufErrorCode, problem: string, cause?: unknown): never => {
    throw new GgufError(code, path, problem, cause === undefined ? undefined : { cause });
  };

  let fileSize: number;
  try {
    const st = await stat(path);
    if (!st.isFile()) fail("NOT_A_FILE", "not a regular file");
    fileSize = st.size;
  } catch (err) {
    if (err instanceof GgufError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") fail("ENOENT", "no such file", err);
    return fail("IO", `cannot read the file (${code ?? String(err)})`, err);
  }

  let fh: FileHandle;
  try {
    fh = await open(path, "r");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") fail("ENOENT", "no such file", err);
    return fail("IO", `cannot open the file (${code ?? String(err)})`, err);
  }

  try {
    return await parse(path, fh, fileSize, fail);
  } catch (err) {
    if (err instanceof GgufError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    return fail("IO", `error while reading the file (${code ?? String(err)})`, err);
  } finally {
    await fh.close();
  }
}

async function parse(
  path: string,
  fh: FileHandle,
  fileSize: number,
  fail: (code: GgufErrorCode, problem: string) => never,
): Promise<GgufFile> {
  if (fileSize === 0) fail("TRUNCATED", "the file is empty (0 bytes), not a GGUF model");
  const cur = new Cursor(fh, fileSize, fail);

  // Header: magic, version, tensor count, metadata count.
  if (fileSize >= 4) {
    await cur.need(4, "the header");
    const magic = cur.u32();
    if (magic !== GGUF_MAGIC) {
      const bytes = Buffer.alloc(4);
      bytes.writeUInt32LE(magic);
      const shown = JSON.stringify(bytes.toString("latin1"));
      fail("BAD_MAGIC", `not a GGUF file: it starts with ${shown}, not "GGUF"`);
    }
  }
  await cur.need(24 - cur.pos, "the 24-byte header");
  const version = cur.u32();
  if (!GGUF_SUPPORTED_VERSIONS.includes(version)) {
    const bytes = Buffer.alloc(4);
    bytes.writeUInt32LE(version);
    const hint = GGUF_SUPPORTED_VERSIONS.includes(bytes.readUInt32BE()) ? " (a big-endian GGUF file)" : "";
    fail("BAD_VERSION", `unsupported GGUF version ${version}${hint}; llama.cpp loads versions 2 and 3`);
  }
  const tensorCount = cur.u64n();
  const kvCount = cur.u64n();
  if (tensorCount > MAX_TENSORS) {
    fail("BAD_COUNT", `absurd tensor count ${count(tensorCount)} (limit ${MAX_TENSORS})`);
  }
  if (kvCount > MAX_METADATA_ENTRIES) {
    fail("BAD_COUNT", `absurd metadata entry count ${count(kvCount)} (limit ${MAX_METADATA_ENTRIES})`);
  }
  // The smallest metadata entry is 13 bytes (key length, value type, one byte); a tensor info 24.
  if (kvCount * 13 + tensorCount * 24 > cur.remaining) {
    cur.truncated(`${kvCount} metadata entries and ${tensorCount} tensor infos`, cur.pos + kvCount * 13 + tensorCount * 24);
  }

  const readString = async (what: string, max: number): Promise<string | GgufLongString> => {
    await cur.need(8, what);
    const len = cur.u64n();
    if (len > MAX_STRING_LENGTH) fail("BAD_COUNT", `absurd string length ${count(len)} in ${what}`);
    if (len > max) {
      cur.skip(len, what);
      return { kind: "long-string", length: len };
    }
    await cur.need(len, what);
    return cur.utf8(len);
  };

  const readScalar = (type: number): number | bigint | boolean => {
    switch (type) {
      case GgufValueType.UINT8:
        return cur.u8();
      case GgufValueType.INT8:
        return cur.i8();
      case GgufValueType.UINT16:
        return cur.u16();
      case GgufValueType.INT16:
        return cur.i16();
      case GgufValueType.UINT32:
        return cur.u32();
      case GgufValueType.INT32:
        return cur.i32();
      case GgufValueType.FLOAT32:
        return cur.f32();
      case GgufValueType.BOOL:
        return cur.u8() !== 0;
      case GgufValueType.UINT64:
        return cur.u64();
      case GgufValueType.INT64:
        return cur.i64();
      case GgufValueType.FLOAT64:
        return cur.f64();
      default:
        throw new Error(`not a scalar type: ${type}`);
    }
  };

  // Metadata.
  const metadata = new Map<string, GgufMetadataEntry>();
  for (let i = 0; i < kvCount; i++) {
    const keyWhat = `the key of metadata entry ${i}`;
    await cur.need(8, keyWhat);
    const keyLen = cur.u64n();
    if (keyLen > MAX_KEY_LENGTH) fail("BAD_COUNT", `absurd key length ${count(keyLen)} in metadata entry ${i}`);
    await cur.need(keyLen, keyWhat);
    const key = cur.utf8(keyLen);
    const what = `metadata ${quote(key)}`;
    if (metadata.has(key)) fail("BAD_METADATA", `duplicate metadata key ${quote(key)}`);
    await cur.need(4, what);
    const type = cur.u32();
    let value: GgufValue;
    if (type === GgufValueType.STRING) {
      value = await readString(what, MAX_MATERIALISED_STRING);
    } else if (type === GgufValueType.ARRAY) {
      await cur.need(12, what);
      const itemType = cur.u32();
      const length = cur.u64n();
      if (length > MAX_ARRAY_LENGTH) {
        fail("BAD_COUNT", `absurd array length ${count(length)} in ${what} (limit ${MAX_ARRAY_LENGTH})`);
      }
      const keep = length <= MAX_MATERIALISED_ARRAY;
      const items: (number | bigint | boolean | string)[] = [];
      const size = fixedValueSize(itemType);
      if (size !== undefined) {
        if (length * size > cur.remaining) cur.truncated(what, cur.pos + length * size);
        if (keep) {
          await cur.need(length * size, what);
          for (let j = 0; j < length; j++) items.push(readScalar(itemType));
        } else {
          cur.skip(length * size, what);
        }
      } else if (itemType === GgufValueType.STRING) {
        if (length * 8 > cur.remaining) cur.truncated(what, cur.pos + length * 8);
        for (let j = 0; j < length; j++) {
          const item = await readString(what, keep ? MAX_MATERIALISED_STRING : 0);
          if (keep) items.push(typeof item === "string" ? item : "");
        }
      } else if (itemType === GgufValueType.ARRAY) {
        fail("BAD_METADATA", `${what} is an array of arrays, which llama.cpp does not load`);
      } else {
        fail("BAD_METADATA", `${what} is an array of unknown value type ${itemType}`);
      }
      value = keep ? { kind: "array", itemType, length, items } : { kind: "array", itemType, length };
    } else {
      const size = fixedValueSize(type);
      if (size === undefined) fail("BAD_METADATA", `${what} has unknown value type ${type}`);
      await cur.need(size!, what);
      value = readScalar(type);
    }
    metadata.set(key, { type, value });
  }

  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const alignEntry = metadata.get("general.alignment");
  if (alignEntry !== undefined) {
    const a = alignEntry.value;
    if (!isIntegerValueType(alignEntry.type) || (typeof a !== "number" && typeof a !== "bigint")) {
      const type = GGUF_VALUE_TYPE_NAMES[alignEntry.type] ?? alignEntry.type;
      fail("BAD_METADATA", `general.alignment has type ${type}, expected an integer`);
    }
    const n = Number(a);
    if (!(n > 0 && n <= 1 << 30 && (n & (n - 1)) === 0)) fail("BAD_METADATA", `general.alignment ${n} is not a power of two`);
    alignment = n;
  }

  // Tensor infos.
  const tensors: GgufTensorInfo[] = [];
  const names = new Set<string>();
  for (let i = 0; i < tensorCount; i++) {
    const infoWhat = `tensor info ${i}`;
    const nameValue = await readString(infoWhat, GGML_MAX_NAME - 1);
    if (typeof nameValue !== "string") {
      fail("BAD_TENSOR", `tensor ${i} has a name of ${nameValue.length} bytes; ggml allows at most ${GGML_MAX_NAME - 1}`);
    }
    const name = nameValue as string;
    const what = `tensor info ${quote(name)}`;
    if (names.has(name)) fail("BAD_TENSOR", `duplicate tensor name ${quote(name)}`);
    names.add(name);
    await cur.need(4, what);
    const nDims = cur.u32();
    if (nDims < 1 || nDims > GGML_MAX_DIMS) {
      fail("BAD_TENSOR", `tensor ${quote(name)} has ${nDims} dimensions; ggml allows 1 to ${GGML_MAX_DIMS}`);
    }
    await cur.need(nDims * 8 + 12, what);
    const dims: number[] = [];
    let elements = 1;
    for (let d = 0; d < nDims; d++) {
      const ne = cur.u64n();
      dims.push(ne);
      elements *= ne;
    }
    if (!Number.isSafeInteger(elements)) {
      fail("BAD_TENSOR", `tensor ${quote(name)} has absurd dimensions [${dims.map(count).join(", ")}]`);
    }
    const type = cur.u32();
    const offset = cur.u64n();
    const traits = GGML_TYPE_TRAITS[type];
    if (traits !== undefined && dims[0]! % traits.blockSize !== 0) {
      const problem = `has ne0 = ${dims[0]}, not a multiple of its block size ${traits.blockSize}`;
      fail("BAD_TENSOR", `tensor ${quote(name)} of type ${traits.name} ${problem}`);
    }
    if (!Number.isSafeInteger(offset) || offset % alignment !== 0) {
      const problem = `has data offset ${count(offset)}, not a multiple of the alignment ${alignment}`;
      fail("BAD_TENSOR", `tensor ${quote(name)} ${problem}`);
    }
    const bytes = ggmlTensorBytes(type, dims);
    tensors.push(bytes === undefined ? { name, dims, type, offset, elements } : { name, dims, type, offset, elements, bytes });
  }

  // Tensor data: padding to the alignment, then every tensor inside the file.
  const dataOffset = Math.ceil(cur.pos / alignment) * alignment;
  for (const t of tensors) {
    const end = dataOffset + t.offset + (t.bytes ?? 0);
    if (end > fileSize) {
      const size = t.bytes === undefined ? "" : `, ${t.bytes} bytes`;
      cur.truncated(`the data of tensor ${quote(t.name)} (${ggmlTypeName(t.type)} [${t.dims.join(", ")}]${size})`, end);
    }
  }

  return { path, fileSize, version, alignment, metadata, tensors, dataOffset };
}

/** The keys inspectGguf requires, for an architecture. */
export function requiredMetadataKeys(architecture: string): string[] {
  return [
    `${architecture}.context_length`,
    `${architecture}.embedding_length`,
    `${architecture}.block_count`,
    `${architecture}.feed_forward_length`,
    `${architecture}.attention.head_count`,
    "tokenizer.ggml.model",
    "tokenizer.ggml.tokens",
  ];
}

/** Keys whose absence makes llama.cpp abort the whole process rather than fail the load. */
const ABORTING_KEYS = ["feed_forward_length", "attention.head_count"];

/**
 * Reads a GGUF file's header, metadata and tensor infos (never its weights) and checks that
 * llama.cpp can load it: the structural checks of readGguf plus the metadata llama.cpp needs.
 * Throws GgufError with a code and a one-line message naming the file and the problem.
 */
export async function inspectGguf(path: string): Promise<GgufSummary> {
  const file = await readGguf(path);
  const fail = (code: GgufErrorCode, problem: string): never => {
    throw new GgufError(code, path, problem);
  };
  const md = file.metadata;

  const archEntry = md.get("general.architecture");
  if (archEntry === undefined) fail("MISSING_METADATA", "missing required metadata general.architecture");
  if (typeof archEntry!.value !== "string" || archEntry!.value === "") {
    fail("BAD_METADATA", "general.architecture is not a non-empty string");
  }
  const arch = archEntry!.value as string;

  const missing = requiredMetadataKeys(arch).filter((k) => !md.has(k));
  if (missing.length > 0) {
    const aborting = missing.filter((k) => ABORTING_KEYS.some((a) => k === `${arch}.${a}`));
    const note = aborting.length > 0 ? ` (llama.cpp aborts the whole process without ${aborting.join(" or ")})` : "";
    fail("MISSING_METADATA", `missing required metadata ${missing.join(", ")}${note}`);
  }

  const typeName = (e: GgufMetadataEntry): string =>
    e.type === GgufValueType.ARRAY && typeof e.value === "object" && e.value.kind === "array"
      ? `array of ${GGUF_VALUE_TYPE_NAMES[e.value.itemType] ?? e.value.itemType}`
      : (GGUF_VALUE_TYPE_NAMES[e.type] ?? String(e.type));

  /** An integer key, or for per-layer keys (an integer array) its largest item. */
  const intKey = (key: string, opts: { positive: boolean }): number | undefined => {
    const e = md.get(key);
    if (e === undefined) return undefined;
    let n: number | undefined;
    if (isIntegerValueType(e.type)) {
      n = Number(e.value as number | bigint);
    } else if (typeof e.value === "object" && e.value.kind === "array" && isIntegerValueType(e.value.itemType)) {
      const items = e.value.items ?? [];
      if (items.length > 0) n = Math.max(...items.map((v) => Number(v as number | bigint)));
    }
    if (n === undefined) fail("BAD_METADATA", `${key} has type ${typeName(e)}, expected an integer`);
    if (!Number.isSafeInteger(n) || n! < 0 || (opts.positive && n === 0)) {
      fail("BAD_METADATA", `${key} is ${n}, expected a ${opts.positive ? "positive" : "non-negative"} integer`);
    }
    return n;
  };
  const stringKey = (key: string): string | undefined => {
    const e = md.get(key);
    if (e === undefined) return undefined;
    if (typeof e.value === "string") return e.value;
    if (typeof e.value === "object" && e.value.kind === "long-string") return undefined;
    return fail("BAD_METADATA", `${key} has type ${typeName(e)}, expected a string`);
  };

  const tokenizerModel = stringKey("tokenizer.ggml.model");
  if (tokenizerModel === "") fail("BAD_METADATA", "tokenizer.ggml.model is empty");
  const tokens = md.get("tokenizer.ggml.tokens")!;
  if (typeof tokens.value !== "object" || tokens.value.kind !== "array" || tokens.value.itemType !== GgufValueType.STRING) {
    fail("BAD_METADATA", `tokenizer.ggml.tokens has type ${typeName(tokens)}, expected an array of strings`);
  }
  const vocabSize = (tokens.value as GgufArray).length;
  if (vocabSize === 0) fail("BAD_METADATA", "tokenizer.ggml.tokens is empty");

  const headCount = intKey(`${arch}.attention.head_count`, { positive: true })!;
  const templateEntry = md.get("tokenizer.chat_template");
  const template = templateEntry === undefined ? undefined : stringKey("tokenizer.chat_template");
  const fileType = intKey("general.file_type", { positive: false });
  const name = stringKey("general.name");
  const bosTokenId = intKey("tokenizer.ggml.bos_token_id", { positive: false });
  const eosTokenId = intKey("tokenizer.ggml.eos_token_id", { positive: false });

  const summary: GgufSummary = {
    path,
    fileSize: file.fileSize,
    version: file.version,
    architecture: arch,
    quantization: quantizationOf(fileType, file.tensors),
    contextLength: intKey(`${arch}.context_length`, { positive: true })!,
    embeddingLength: intKey(`${arch}.embedding_length`, { positive: true })!,
    blockCount: intKey(`${arch}.block_count`, { positive: true })!,
    headCount,
    headCountKv: intKey(`${arch}.attention.head_count_kv`, { positive: true }) ?? headCount,
    feedForwardLength: intKey(`${arch}.feed_forward_length`, { positive: false })!,
    vocabSize,
    hasChatTemplate: templateEntry !== undefined,
    tensorCount: file.tensors.length,
    parameterCount: file.tensors.reduce((sum, t) => sum + t.elements, 0),
  };
  if (name !== undefined) summary.name = name;
  if (fileType !== undefined) summary.fileType = fileType;
  if (template !== undefined && Buffer.byteLength(template) < MAX_CHAT_TEMPLATE) summary.chatTemplate = template;
  if (bosTokenId !== undefined) summary.bosTokenId = bosTokenId;
  if (eosTokenId !== undefined) summary.eosTokenId = eosTokenId;
  return summary;
}

/** general.file_type's name, else the type holding most bytes of the weight matrices. */
function quantizationOf(fileType: number | undefined, tensors: readonly GgufTensorInfo[]): string {
  const fromFileType = fileType === undefined ? undefined : fileTypeQuantization(fileType);
  if (fromFileType !== undefined) return fromFileType;
  const bytesByType = new Map<number, number>();
  for (const t of tensors) {
    if (t.dims.length < 2 || t.bytes === undefined) continue;
    bytesByType.set(t.type, (bytesByType.get(t.type) ?? 0) + t.bytes);
  }
  let best: number | undefined;
  for (const [type, bytes] of bytesByType) if (best === undefined || bytes > bytesByType.get(best)!) best = type;
  return best === undefined ? "unknown" : ggmlTypeName(best);
}
