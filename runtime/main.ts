import { Command } from "commander";
import { addSettings, settingsFromOptions } from "../common/config.js";
import { runProcess } from "../common/process.js";
import { RUNTIME_SETTINGS, runtimeConfig } from "./config.js";

/** `corral runtime`: one model, served over HTTP. */
export function runtimeCommand(): Command {
  const command = new Command("runtime").description("serve one GGUF model over HTTP (the process in each model pod)");
  addSettings(command, RUNTIME_SETTINGS);
  command.action(async (options: Record<string, unknown>) => {
    await runProcess(async () => {
      const config = runtimeConfig(settingsFromOptions(options, RUNTIME_SETTINGS));
      // Loaded once the settings are valid: `corral --help` and the other commands never load it.
      const { run } = await import("./run.js");
      const handle = await run(config);
      handle.loaded.catch((error: unknown) => {
        handle.logger.fatal({ reason: (error as Error).message }, "model could not be loaded");
        process.exit(1);
      });
      return handle.drain;
    });
  });
  return command;
}
