import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { PACKAGE_ROOT } from "../../common/package-root.js";
import { pino } from "pino";
import { createParser, type EventSourceMessage } from "eventsource-parser";
import { runtimeConfig } from "../../runtime/config.js";
import { run, type RuntimeHandle } from "../../runtime/run.js";
import { freePort } from "./net.js";

export const REPO_ROOT = PACKAGE_ROOT;
export const CLI = path.join(REPO_ROOT, "dist/bin/corral.js");

/** Starts a runtime in this process through the same run() as `corral runtime`, and waits until it is ready. */
export async function startRuntime(settings: Record<string, unknown>): Promise<RuntimeHandle> {
  const config = runtimeConfig({ host: "127.0.0.1", port: 0, threads: 1, logLevel: "silent", ...settings });
  const handle = await run(config, { logger: pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" }) });
  await handle.loaded;
  return handle;
}

export { freePort };

export interface ChildRuntime {
  child: ChildProcess;
  url: string;
  stderr: () => string;
  stdout: () => string;
  exit: Promise<number | null>;
}

/** Starts `corral runtime` as a real process (the built CLI), for signal and crash behaviour. */
export async function spawnRuntime(args: string[], env: NodeJS.ProcessEnv = {}): Promise<ChildRuntime> {
  const port = await freePort();
  const child = spawn(process.execPath, [CLI, "runtime", "--host", "127.0.0.1", "--port", String(port), "--threads", "1", ...args], {
    env: { ...process.env, LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  let stdout = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  const exit = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, url: `http://127.0.0.1:${port}`, stderr: () => stderr, stdout: () => stdout, exit };
}

export async function postJson(url: string, body: unknown, init: RequestInit = {}): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...(init.headers as Record<string, string> | undefined) },
    body: typeof body === "string" ? body : JSON.stringify(body),
    ...init,
  });
}

/** Reads a whole SSE response with a spec-compliant parser. */
export async function readSse(response: Response): Promise<{ events: EventSourceMessage[]; raw: string }> {
  const events: EventSourceMessage[] = [];
  const parser = createParser({ onEvent: (event) => events.push(event) });
  const decoder = new TextDecoder();
  let raw = "";
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
    const text = decoder.decode(chunk, { stream: true });
    raw += text;
    parser.feed(text);
  }
  return { events, raw };
}

/** The text of a seed-API stream: every data event before [DONE], joined. */
export function streamedText(events: EventSourceMessage[]): string {
  const done = events.findIndex((e) => e.data === "[DONE]");
  return events
    .slice(0, done < 0 ? undefined : done)
    .filter((e) => e.event === undefined)
    .map((e) => e.data)
    .join("");
}

export async function info(url: string): Promise<Record<string, any>> {
  return (await fetch(`${url}/info`)).json() as Promise<Record<string, any>>;
}
