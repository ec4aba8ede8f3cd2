import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { RUNTIME_SETTINGS, runtimeArgv, type RuntimeArgs } from "../common/runtime-command.js";
import { RuntimeConfigSchema, parseRuntimeArgv, runtimeConfig } from "./config.js";

// runtimeArgv() (what the operator and local mode launch) against the runtime's own parser.

let saved: Record<string, string | undefined> = {};
beforeEach(() => {
  // Settings left off the command line come from the environment: keep the test's out of it.
  saved = Object.fromEntries(RUNTIME_SETTINGS.map((spec) => [spec.env, process.env[spec.env]]));
  for (const spec of RUNTIME_SETTINGS) delete process.env[spec.env];
});
afterEach(() => {
  for (const [name, value] of Object.entries(saved)) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
});

describe("runtimeArgv", () => {
  it("gives back every setting through the runtime's parser", () => {
    const every: Required<RuntimeArgs> = {
      model: "hf:owner/repo/file.gguf",
      modelId: "Qwen/Qwen2.5-0.5B-Instruct",
      modelDir: "/models",
      host: "127.0.0.1",
      port: 0,
      parallel: 8,
      contextSize: 2048,
      batchSize: 256,
      threads: 3,
      gpu: "cuda",
      gpuLayers: 12,
      maxQueue: 5,
      promptAdmission: "all",
      maxBatchPrompts: 7,
      bodyLimitBytes: 4096,
      drainSeconds: 2.5,
      defaults: '{"max_length":64,"temperature":0.2}',
      logLevel: "warn",
    };
    expect(parseRuntimeArgv(runtimeArgv(every))).toEqual(every);
    // Every setting but the secrets is one a launcher can set.
    expect(Object.keys(every).sort()).toEqual(RUNTIME_SETTINGS.map((spec) => spec.key).filter((key) => key !== "hfToken").sort());
  });

  it("leaves out what is unset, so the runtime's defaults apply", () => {
    const argv = runtimeArgv({ model: "m.gguf", threads: undefined, gpuLayers: "max" });
    expect(argv).toEqual(["runtime", "--model", "m.gguf", "--gpu-layers", "max"]);
    expect(parseRuntimeArgv(argv)).toEqual(runtimeConfig({ model: "m.gguf", gpuLayers: "max" }));
  });

  it("keeps the Hugging Face token off the command line", () => {
    expect(() => runtimeArgv({ model: "m.gguf", hfToken: "secret" } as RuntimeArgs)).toThrow(/HF_TOKEN/);
  });
});

describe("the runtime's settings", () => {
  it("name each config property once, under commander's name for its flag", () => {
    expect(RUNTIME_SETTINGS.map((spec) => spec.key).sort()).toEqual(Object.keys(RuntimeConfigSchema.properties).sort());
    for (const spec of RUNTIME_SETTINGS) {
      const attribute = spec.flag.replace(/^--/, "").replace(/-([a-z])/g, (_m, letter: string) => letter.toUpperCase());
      expect(attribute, spec.flag).toBe(spec.key);
    }
  });

  it("refuses an unknown flag", () => {
    expect(() => parseRuntimeArgv(["runtime", "--model", "m.gguf", "--modle-id", "x"])).toThrow(/unknown option/);
  });
});
