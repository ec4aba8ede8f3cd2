import { readFileSync } from "node:fs";
import Type, { type Static } from "typebox";
import Value from "typebox/value";
import { parse as parseYaml } from "yaml";
import { SamplingDefaultsSchema } from "../common/api.js";
import { ConfigError } from "../common/errors.js";
import type { CatalogEntry } from "./backends/types.js";

/** One model of the local catalog file. */
const CatalogModel = Type.Object(
  {
    id: Type.String({ minLength: 1, maxLength: 256 }),
    source: Type.String({ minLength: 1 }),
    description: Type.Optional(Type.String()),
    size_bytes: Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.Null()])),
    /** Per-model runtime settings; the router's settings apply when absent. */
    context_size: Type.Optional(Type.Integer({ minimum: 64 })),
    parallel: Type.Optional(Type.Integer({ minimum: 1, maximum: 256 })),
    /** Sampling defaults in the API's names, with the API's bounds. */
    defaults: Type.Optional(SamplingDefaultsSchema),
  },
  { additionalProperties: false },
);

const CatalogFile = Type.Object(
  {
    /** The model started at start-up as the current one. */
    default: Type.Optional(Type.Union([Type.String({ minLength: 1 }), Type.Null()])),
    models: Type.Array(CatalogModel, { minItems: 1 }),
  },
  { additionalProperties: false },
);

export type CatalogModel = Static<typeof CatalogModel>;

export interface Catalog {
  defaultModel: string | null;
  models: CatalogModel[];
}

/** Parses and checks a catalog; errors name the file and the field. */
export function parseCatalog(text: string, origin: string): Catalog {
  let data: unknown;
  try {
    data = parseYaml(text);
  } catch (error) {
    throw new ConfigError(`model catalog ${origin}: not valid YAML: ${(error as Error).message}`);
  }
  if (!Value.Check(CatalogFile, data)) {
    const first = [...Value.Errors(CatalogFile, data)][0];
    const where = first?.instancePath.replace(/^\//, "").replaceAll("/", ".") || "(top level)";
    const params = first?.params as { additionalProperties?: string[]; requiredProperties?: string[] } | undefined;
    const extra = params?.additionalProperties ? ` (${params.additionalProperties.join(", ")})` : params?.requiredProperties ? ` (${params.requiredProperties.join(", ")})` : "";
    throw new ConfigError(`model catalog ${origin}: ${where}: ${first?.message ?? "is invalid"}${extra}`);
  }
  const file = data as Static<typeof CatalogFile>;
  const seen = new Set<string>();
  for (const model of file.models) {
    if (seen.has(model.id)) throw new ConfigError(`model catalog ${origin}: model id "${model.id}" appears twice`);
    seen.add(model.id);
  }
  const defaultModel = file.default ?? null;
  if (defaultModel !== null && !seen.has(defaultModel)) {
    throw new ConfigError(`model catalog ${origin}: default "${defaultModel}" is not one of its models`);
  }
  return { defaultModel, models: file.models };
}

export function loadCatalog(path: string): Catalog {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new ConfigError(`model catalog ${path}: cannot be read: ${(error as Error).message}`);
  }
  return parseCatalog(text, path);
}

export function catalogEntry(model: CatalogModel): CatalogEntry {
  return { model_id: model.id, source: model.source, description: model.description ?? null, size_bytes: model.size_bytes ?? null };
}
