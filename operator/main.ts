import { Command } from "commander";
import { addSettings, settingsFromOptions } from "../common/config.js";
import { runProcess } from "../common/process.js";
import { OPERATOR_SETTINGS, operatorConfig } from "./config.js";

/** `corral operator`: reconciles Model resources into Deployments and Services. */
export function operatorCommand(): Command {
  const command = new Command("operator").description("reconcile Model resources (corral.dev/v1alpha1) into Deployments, Services and cache volumes");
  addSettings(command, OPERATOR_SETTINGS);
  command.action(async (options: Record<string, unknown>) => {
    await runProcess(async () => {
      const config = operatorConfig(settingsFromOptions(options, OPERATOR_SETTINGS));
      // Loaded once the settings are valid: `corral --help` and the other commands never load it.
      const { run } = await import("./run.js");
      return (await run(config)).close;
    });
  });
  return command;
}
