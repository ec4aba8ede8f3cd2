import { Command } from "commander";
import { addSettings, settingsFromOptions } from "../common/config.js";
import { runProcess } from "../common/process.js";
import { OPERATOR_SETTINGS, operatorConfig } from "./config.js";
import { run } from "./run.js";

/** `corral operator`: reconciles Model resources into Deployments and Services. */
export function operatorCommand(): Command {
  const command = new Command("operator").description("reconcile Model resources (corral.dev/v1alpha1) into Deployments, Services and cache volumes");
  addSettings(command, OPERATOR_SETTINGS);
  command.action(async (options: Record<string, unknown>) => {
    await runProcess(async () => {
      const config = operatorConfig(settingsFromOptions(options, OPERATOR_SETTINGS));
      return (await run(config)).close;
    });
  });
  return command;
}
