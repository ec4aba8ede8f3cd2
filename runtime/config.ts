import { Command } from "commander";
import { addSettings, buildConfig, settingsFromOptions } from "../common/config.js";
import { RUNTIME_COMMAND, RUNTIME_SETTINGS, RuntimeConfigSchema, type RuntimeConfig } from "../common/runtime-command.js";

// The runtime's settings are defined in common/runtime-command.ts, next to runtimeArgv(), which
// the launchers use to build this command line: a flag renamed there changes both sides.
export { GPU_CHOICES, PROMPT_ADMISSION_CHOICES, RUNTIME_SETTINGS, RuntimeConfigSchema, type RuntimeConfig } from "../common/runtime-command.js";

/** Builds a runtime config from flags/env values (strings) or typed test values. */
export function runtimeConfig(input: Record<string, unknown>): RuntimeConfig {
  return buildConfig(RuntimeConfigSchema, input, RUNTIME_SETTINGS);
}

/**
 * Parses `corral runtime ...` arguments (the subcommand first, as runtimeArgv() gives them) the
 * way `corral runtime` does (runtime/main.ts): commander with RUNTIME_SETTINGS, then
 * runtimeConfig(). Settings the arguments leave out come from the environment, then the defaults.
 * A bad command line throws (commander's error), rather than exiting.
 */
export function parseRuntimeArgv(argv: readonly string[]): RuntimeConfig {
  const [subcommand, ...rest] = argv;
  if (subcommand !== RUNTIME_COMMAND) throw new Error(`not a \`corral ${RUNTIME_COMMAND}\` command line: ${argv.join(" ")}`);
  const command = addSettings(new Command(RUNTIME_COMMAND), RUNTIME_SETTINGS).exitOverride()
    .configureOutput({ writeErr: () => undefined })
    .allowExcessArguments(false);
  command.parse(rest, { from: "user" });
  return runtimeConfig(settingsFromOptions(command.opts(), RUNTIME_SETTINGS));
}
