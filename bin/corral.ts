#!/usr/bin/env node
import { Command } from "commander";
import { VERSION } from "../common/version.js";
import { runtimeCommand } from "../runtime/main.js";
import { makeTestModelCommand } from "../common/testmodels/command.js";
import { routerCommand, serveCommand } from "../router/main.js";
import { operatorCommand } from "../operator/main.js";

const program = new Command("corral")
  .description("Corral: Kubernetes-native LLM serving (operator, router and node-llama-cpp runtime)")
  .version(VERSION)
  .addCommand(serveCommand())
  .addCommand(routerCommand())
  .addCommand(runtimeCommand())
  .addCommand(operatorCommand())
  .addCommand(makeTestModelCommand());

await program.parseAsync(process.argv);
