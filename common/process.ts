import { ConfigError } from "./errors.js";
import { GgufError } from "./gguf/reader.js";

/**
 * Runs a server process: `start` returns its graceful stop; SIGTERM/SIGINT call it once and the
 * process exits 0 when it is done (a second signal exits at once). Start-up failures that a
 * person must fix (bad settings, a broken model file) print one line and exit non-zero.
 */
export async function runProcess(start: () => Promise<() => Promise<void>>): Promise<void> {
  let stop: () => Promise<void>;
  try {
    stop = await start();
  } catch (error) {
    if (error instanceof ConfigError || error instanceof GgufError || (error as Error).name === "ModelSourceError") {
      process.stderr.write(`corral: ${(error as Error).message}\n`);
      process.exit(error instanceof ConfigError ? 2 : 1);
    }
    throw error;
  }
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) process.exit(1);
    stopping = true;
    process.stderr.write(`corral: ${signal} received, shutting down\n`);
    stop().then(
      () => process.exit(0),
      (error: unknown) => {
        process.stderr.write(`corral: shutdown failed: ${(error as Error).stack ?? String(error)}\n`);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
}
