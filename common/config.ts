import type { TSchema, Static } from "typebox";
import Value from "typebox/value";
import { Option, type Command } from "commander";
import { ConfigError } from "./errors.js";

/**
 * One description per setting: the CLI flag, the environment variable and the help text come
 * from the same place as the TypeBox schema that validates the final value.
 */
export interface SettingSpec {
  /** Property name in the config object. */
  key: string;
  /** Long flag without the value placeholder, e.g. "--threads". */
  flag: string;
  env: string;
  description: string;
  /** Placeholder shown in help, e.g. "<n>". Omit for boolean switches. */
  value?: string;
  /** Default shown in help (the schema's default is what applies). */
  defaultText?: string;
  choices?: readonly string[];
}

/** Adds every setting to a commander command, so `--help` lists flag, env var and default. */
export function addSettings(command: Command, specs: readonly SettingSpec[]): Command {
  for (const spec of specs) {
    // The default is shown as text only: the schema's default is the one that applies, so a
    // value that came from neither a flag nor the environment stays undefined here.
    const description = spec.defaultText === undefined ? spec.description : `${spec.description} (default: ${spec.defaultText})`;
    const option = new Option(spec.value ? `${spec.flag} ${spec.value}` : spec.flag, description).env(spec.env);
    if (spec.choices) option.choices(spec.choices);
    command.addOption(option);
  }
  return command;
}

/**
 * Builds a validated configuration: schema defaults, then string conversion (flags and env vars
 * are strings), then validation. Fails with one message naming each bad setting by its flag.
 */
export function buildConfig<S extends TSchema>(
  schema: S,
  input: Record<string, unknown>,
  specs: readonly SettingSpec[] = [],
): Static<S> {
  const raw: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(input)) if (value !== undefined) raw[key] = value;
  const withDefaults = Value.Default(schema, raw);
  const converted = Value.Convert(schema, withDefaults);
  if (Value.Check(schema, converted)) return converted as Static<S>;
  const problems = [...Value.Errors(schema, converted)].map((error) => {
    const key = error.instancePath.replace(/^\//, "").split("/")[0] ?? "";
    const spec = specs.find((s) => s.key === key);
    const name = spec ? `${spec.flag} (${spec.env})` : key || "configuration";
    const params = error.params as { additionalProperties?: string[] };
    if (error.keyword === "additionalProperties" && params.additionalProperties) {
      return `unknown setting ${params.additionalProperties.join(", ")}`;
    }
    return `${name}: ${error.message}`;
  });
  throw new ConfigError(`invalid configuration: ${[...new Set(problems)].join("; ")}`);
}

/** Picks the values commander parsed (flags and env vars) for the given settings. */
export function settingsFromOptions(options: Record<string, unknown>, specs: readonly SettingSpec[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const spec of specs) {
    const value = options[spec.key];
    if (value !== undefined) out[spec.key] = value;
  }
  return out;
}
