import { Command, Option } from "commander";

/** `corral make-test-model`: writes a generated GGUF model for tests and benchmarks. */
export function makeTestModelCommand(): Command {
  return new Command("make-test-model")
    .description("write a generated GGUF model (random or deterministic weights) for tests and benchmarks")
    .addOption(new Option("--kind <kind>", "tiny (random), successor (deterministic text) or bench (SmolLM2-135M shape)").choices(["tiny", "successor", "bench"]).makeOptionMandatory())
    .addOption(new Option("--type <type>", "tensor type").choices(["f32", "f16", "q8_0"]))
    .requiredOption("--out <file>", "output file")
    .action(async (options: { kind: "tiny" | "successor" | "bench"; type?: "f32" | "f16" | "q8_0"; out: string }) => {
      const { makeTestModel } = await import("./make.js");
      const result = await makeTestModel({ kind: options.kind, type: options.type, out: options.out });
      process.stdout.write(`${result.path} (${result.bytes} bytes)\n`);
    });
}
