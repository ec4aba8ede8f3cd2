// GGUF file-format constants shared by the reader and the writer.
// Layout facts: /work/shared/notes/test-models.md; the ggml type table below was checked against
// the ggml built into node-llama-cpp 3.22.1 (getBlockSizeForGgmlType / getTypeSizeForGgmlType).

/** "GGUF" read as a little-endian u32. */
export const GGUF_MAGIC = 0x46554747;
export const GGUF_MAGIC_BYTES = Buffer.from("GGUF", "ascii");
/** Versions llama.cpp still loads (v1 is long gone). */
export const GGUF_SUPPORTED_VERSIONS: readonly number[] = [2, 3];
export const GGUF_WRITE_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;
/** ggml's GGML_MAX_DIMS. */
export const GGML_MAX_DIMS = 4;
/** ggml's GGML_MAX_NAME: a tensor name must be shorter than this many bytes. */
export const GGML_MAX_NAME = 64;

/** Metadata value types (the u32 after each key). */
export const GgufValueType = {
  UINT8: 0,
  INT8: 1,
  UINT16: 2,
  INT16: 3,
  UINT32: 4,
  INT32: 5,
  FLOAT32: 6,
  BOOL: 7,
  STRING: 8,
  ARRAY: 9,
  UINT64: 10,
  INT64: 11,
  FLOAT64: 12,
} as const;
export type GgufValueType = (typeof GgufValueType)[keyof typeof GgufValueType];

export const GGUF_VALUE_TYPE_NAMES: Readonly<Record<number, string>> = {
  0: "u8",
  1: "i8",
  2: "u16",
  3: "i16",
  4: "u32",
  5: "i32",
  6: "f32",
  7: "bool",
  8: "string",
  9: "array",
  10: "u64",
  11: "i64",
  12: "f64",
};

/** Byte size of a fixed-size value type; undefined for string and array. */
export function fixedValueSize(type: number): number | undefined {
  switch (type) {
    case GgufValueType.UINT8:
    case GgufValueType.INT8:
    case GgufValueType.BOOL:
      return 1;
    case GgufValueType.UINT16:
    case GgufValueType.INT16:
      return 2;
    case GgufValueType.UINT32:
    case GgufValueType.INT32:
    case GgufValueType.FLOAT32:
      return 4;
    case GgufValueType.UINT64:
    case GgufValueType.INT64:
    case GgufValueType.FLOAT64:
      return 8;
    default:
      return undefined;
  }
}

export function isIntegerValueType(type: number): boolean {
  return (
    type === GgufValueType.UINT8 ||
    type === GgufValueType.INT8 ||
    type === GgufValueType.UINT16 ||
    type === GgufValueType.INT16 ||
    type === GgufValueType.UINT32 ||
    type === GgufValueType.INT32 ||
    type === GgufValueType.UINT64 ||
    type === GgufValueType.INT64
  );
}

/** ggml tensor types (the u32 in each tensor info). Gaps are types ggml has removed. */
export const GgmlType = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q8_1: 9,
  Q2_K: 10,
  Q3_K: 11,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  Q8_K: 15,
  IQ2_XXS: 16,
  IQ2_XS: 17,
  IQ3_XXS: 18,
  IQ1_S: 19,
  IQ4_NL: 20,
  IQ3_S: 21,
  IQ2_S: 22,
  IQ4_XS: 23,
  I8: 24,
  I16: 25,
  I32: 26,
  I64: 27,
  F64: 28,
  IQ1_M: 29,
  BF16: 30,
  TQ1_0: 34,
  TQ2_0: 35,
  MXFP4: 39,
  NVFP4: 40,
  Q1_0: 41,
  Q2_0: 42,
} as const;
export type GgmlType = (typeof GgmlType)[keyof typeof GgmlType];

export interface GgmlTypeTraits {
  name: string;
  /** Values per block (ne0 must be a multiple of it). */
  blockSize: number;
  /** Bytes per block. */
  typeSize: number;
}

export const GGML_TYPE_TRAITS: Readonly<Record<number, GgmlTypeTraits>> = Object.fromEntries(
  (
    [
      [GgmlType.F32, "F32", 1, 4],
      [GgmlType.F16, "F16", 1, 2],
      [GgmlType.Q4_0, "Q4_0", 32, 18],
      [GgmlType.Q4_1, "Q4_1", 32, 20],
      [GgmlType.Q5_0, "Q5_0", 32, 22],
      [GgmlType.Q5_1, "Q5_1", 32, 24],
      [GgmlType.Q8_0, "Q8_0", 32, 34],
      [GgmlType.Q8_1, "Q8_1", 32, 36],
      [GgmlType.Q2_K, "Q2_K", 256, 84],
      [GgmlType.Q3_K, "Q3_K", 256, 110],
      [GgmlType.Q4_K, "Q4_K", 256, 144],
      [GgmlType.Q5_K, "Q5_K", 256, 176],
      [GgmlType.Q6_K, "Q6_K", 256, 210],
      [GgmlType.Q8_K, "Q8_K", 256, 292],
      [GgmlType.IQ2_XXS, "IQ2_XXS", 256, 66],
      [GgmlType.IQ2_XS, "IQ2_XS", 256, 74],
      [GgmlType.IQ3_XXS, "IQ3_XXS", 256, 98],
      [GgmlType.IQ1_S, "IQ1_S", 256, 50],
      [GgmlType.IQ4_NL, "IQ4_NL", 32, 18],
      [GgmlType.IQ3_S, "IQ3_S", 256, 110],
      [GgmlType.IQ2_S, "IQ2_S", 256, 82],
      [GgmlType.IQ4_XS, "IQ4_XS", 256, 136],
      [GgmlType.I8, "I8", 1, 1],
      [GgmlType.I16, "I16", 1, 2],
      [GgmlType.I32, "I32", 1, 4],
      [GgmlType.I64, "I64", 1, 8],
      [GgmlType.F64, "F64", 1, 8],
      [GgmlType.IQ1_M, "IQ1_M", 256, 56],
      [GgmlType.BF16, "BF16", 1, 2],
      [GgmlType.TQ1_0, "TQ1_0", 256, 54],
      [GgmlType.TQ2_0, "TQ2_0", 256, 66],
      [GgmlType.MXFP4, "MXFP4", 32, 17],
      [GgmlType.NVFP4, "NVFP4", 64, 36],
      [GgmlType.Q1_0, "Q1_0", 128, 18],
      [GgmlType.Q2_0, "Q2_0", 64, 18],
    ] as const
  ).map(([type, name, blockSize, typeSize]) => [type, { name, blockSize, typeSize }]),
);

export function ggmlTypeName(type: number): string {
  return GGML_TYPE_TRAITS[type]?.name ?? `type ${type}`;
}

/**
 * Bytes a tensor of this type and shape occupies (dims with ne0 first), or undefined for a type
 * we do not know (callers skip the size check then) or a row length (ne0) that is not a whole
 * number of blocks.
 */
export function ggmlTensorBytes(type: number, dims: readonly number[]): number | undefined {
  const traits = GGML_TYPE_TRAITS[type];
  if (traits === undefined) return undefined;
  const ne0 = dims[0] ?? 1;
  if (ne0 % traits.blockSize !== 0) return undefined;
  let rows = 1;
  for (let i = 1; i < dims.length; i++) rows *= dims[i]!;
  return (ne0 / traits.blockSize) * traits.typeSize * rows;
}

/** `general.file_type` values (llama.cpp's llama_ftype), by the names llama.cpp prints. */
export const GGUF_FILE_TYPE_NAMES: Readonly<Record<number, string>> = {
  0: "ALL_F32",
  1: "MOSTLY_F16",
  2: "MOSTLY_Q4_0",
  3: "MOSTLY_Q4_1",
  4: "MOSTLY_Q4_1_SOME_F16",
  7: "MOSTLY_Q8_0",
  8: "MOSTLY_Q5_0",
  9: "MOSTLY_Q5_1",
  10: "MOSTLY_Q2_K",
  11: "MOSTLY_Q3_K_S",
  12: "MOSTLY_Q3_K_M",
  13: "MOSTLY_Q3_K_L",
  14: "MOSTLY_Q4_K_S",
  15: "MOSTLY_Q4_K_M",
  16: "MOSTLY_Q5_K_S",
  17: "MOSTLY_Q5_K_M",
  18: "MOSTLY_Q6_K",
  19: "MOSTLY_IQ2_XXS",
  20: "MOSTLY_IQ2_XS",
  21: "MOSTLY_Q2_K_S",
  22: "MOSTLY_IQ3_XS",
  23: "MOSTLY_IQ3_XXS",
  24: "MOSTLY_IQ1_S",
  25: "MOSTLY_IQ4_NL",
  26: "MOSTLY_IQ3_S",
  27: "MOSTLY_IQ3_M",
  28: "MOSTLY_IQ2_S",
  29: "MOSTLY_IQ2_M",
  30: "MOSTLY_IQ4_XS",
  31: "MOSTLY_IQ1_M",
  32: "MOSTLY_BF16",
  36: "MOSTLY_TQ1_0",
  37: "MOSTLY_TQ2_0",
  38: "MOSTLY_MXFP4_MOE",
};

/** Short quantisation name for a `general.file_type` ("Q8_0", "F16", "Q4_K_M", ...). */
export function fileTypeQuantization(fileType: number): string | undefined {
  const name = GGUF_FILE_TYPE_NAMES[fileType];
  if (name === undefined) return undefined;
  if (name === "ALL_F32") return "F32";
  if (name === "MOSTLY_MXFP4_MOE") return "MXFP4";
  return name.replace(/^MOSTLY_/, "");
}

/** File types the writer uses for models whose weight matrices are all of one ggml type. */
export const FILE_TYPE_FOR_GGML_TYPE: Readonly<Record<number, number>> = {
  [GgmlType.F32]: 0,
  [GgmlType.F16]: 1,
  [GgmlType.Q8_0]: 7,
};
