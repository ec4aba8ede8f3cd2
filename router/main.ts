import { Command } from "commander";
import { addSettings, settingsFromOptions } from "../common/config.js";
import { runProcess } from "../common/process.js";
import { KUBERNETES_SETTINGS, LOCAL_SETTINGS, ROUTER_HOST_SETTING, ROUTER_SETTINGS, SERVE_HOST_SETTING, STATIC_SETTINGS, routerConfig } from "./config.js";

const CLUSTER_SETTINGS = [ROUTER_HOST_SETTING, ...ROUTER_SETTINGS, ...STATIC_SETTINGS, ...KUBERNETES_SETTINGS];
const SERVE_SETTINGS = [SERVE_HOST_SETTING, ...ROUTER_SETTINGS, ...LOCAL_SETTINGS];

/** `corral router`: the public API in front of runtimes that run elsewhere (Kubernetes, or --upstream). */
export function routerCommand(): Command {
  const command = new Command("router").description("serve the public API, routing each request to the runtimes of its model");
  addSettings(command, CLUSTER_SETTINGS);
  command.action(async (options: Record<string, unknown>) => {
    await runProcess(async () => {
      const settings = settingsFromOptions(options, CLUSTER_SETTINGS);
      const config = routerConfig({ ...settings, backend: settings.backend ?? (settings.upstream ? "static" : "kubernetes") });
      // Loaded once the settings are valid: `corral --help` and the other commands never load it.
      const { run } = await import("./run.js");
      return (await run(config)).close;
    });
  });
  return command;
}

/** `corral serve` (`npm start`): the router with the local backend, one runtime child per loaded model. */
export function serveCommand(): Command {
  const command = new Command("serve").description("serve the public API on this machine, running models as local runtime processes");
  addSettings(command, SERVE_SETTINGS);
  command.action(async (options: Record<string, unknown>) => {
    await runProcess(async () => {
      const config = routerConfig({ ...settingsFromOptions(options, SERVE_SETTINGS), backend: "local" });
      // Loaded once the settings are valid: `corral --help` and the other commands never load it.
      const { run } = await import("./run.js");
      return (await run(config)).close;
    });
  });
  return command;
}
