/**
 * Starting the two servers that `bench:compare` and `bench/threads.ts` measure: Corral's runtime
 * and llama.cpp's llama-server, with the same model file, threads, slots and context per slot.
 */
import { CLI, freePort } from "../test/helpers/runtime.js";
import { pinned, startServer, type Server } from "./lib.js";
import { withRuntimeProcessEnv } from "../common/runtime-env.js";

export type ServerKind = "corral" | "llama-server";

export interface ServerSetup {
  model: string;
  slots: number;
  contextPerSlot: number;
  threads: number;
  /** The llama-server binary (see ./llama-server.ts). */
  llamaServer: string;
  /** Corral's `--prompt-admission` (its default when absent). */
  promptAdmission?: string;
}

export async function startCorral(setup: ServerSetup): Promise<Server & { llamaBuild: string }> {
  const port = await freePort();
  const server = await startServer(...pinned(0, process.execPath, [CLI, "runtime", "--model", setup.model, "--host", "127.0.0.1", "--port", String(port),
    "--threads", String(setup.threads), "--parallel", String(setup.slots), "--context-size", String(setup.contextPerSlot), "--max-queue", "4096",
    "--log-level", "warn", ...(setup.promptAdmission ? ["--prompt-admission", setup.promptAdmission] : [])]), port, "/readyz", withRuntimeProcessEnv(process.env));
  // Which llama.cpp binaries it loaded: llama-server here is compiled for this CPU (GGML_NATIVE),
  // node-llama-cpp's prebuilt binaries are generic CPU variants (~7% slower per F16 step on a
  // Zen 2); `npm run build:llama` makes the comparison like for like.
  const llamaBuild = ((await (await fetch(`${server.url}/info`)).json()) as { llama_build: string }).llama_build;
  return { ...server, llamaBuild };
}

export async function startLlamaServer(setup: ServerSetup): Promise<Server> {
  const port = await freePort();
  return startServer(...pinned(0, setup.llamaServer, ["-m", setup.model, "--host", "127.0.0.1", "--port", String(port),
    "-t", String(setup.threads), "-tb", String(setup.threads), "--parallel", String(setup.slots), "-c", String(setup.contextPerSlot * setup.slots),
    "--no-webui", "--log-disable",
    // Its RAM prompt cache only helps repeated prompts; with every prompt new it only grows, and
    // requests/s on the tiny model falls with it (~1,000 -> ~640 over 4,000 requests). Off, this
    // measures llama-server at its best.
    "--cache-ram", "0"]), port, "/health");
}

export function startKind(kind: ServerKind, setup: ServerSetup): Promise<Server & { llamaBuild?: string }> {
  return kind === "corral" ? startCorral(setup) : startLlamaServer(setup);
}
