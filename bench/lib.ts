/** Small helpers shared by the benchmarks: statistics and markdown tables. */

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

export const median = (values: readonly number[]) => percentile(values, 50);

export function table(headers: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  const line = (cells: readonly (string | number)[]) => `| ${cells.join(" | ")} |`;
  return [line(headers), line(headers.map(() => "---")), ...rows.map(line)].join("\n");
}

export const fixed = (value: number, digits = 1) => (Number.isFinite(value) ? value.toFixed(digits) : "n/a");

/** Runs `work` from `concurrency` workers until `total` calls are done; returns wall seconds. */
export async function runConcurrently(concurrency: number, total: number, work: (index: number) => Promise<void>): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (;;) {
        const index = next++;
        if (index >= total) return;
        await work(index);
      }
    }),
  );
  return (performance.now() - started) / 1000;
}

/** A deterministic random generator (mulberry32) in [0, 1): every round and strategy of a benchmark sees the same workload. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function argValue(name: string, fallback: string): string {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 && process.argv[index + 1] ? process.argv[index + 1]! : fallback;
}

import http from "node:http";

export interface TimedResponse {
  status: number;
  body: string;
  /** Milliseconds from sending to the first body byte, and to the end. */
  firstByteMs: number;
  /** Milliseconds until the body first matched `firstMatch` (e.g. the first generated text), or -1. */
  firstMatchMs: number;
  totalMs: number;
}

/**
 * A lean keep-alive HTTP client for load generation: the client shares the machine with the
 * server, so it must cost as little as possible (fetch costs noticeably more per request).
 */
export class BenchClient {
  readonly agent: http.Agent;
  constructor(
    private readonly base: string,
    maxSockets: number,
    /** Sent with every request (an Authorization header). */
    private readonly headers: Record<string, string> = {},
  ) {
    this.agent = new http.Agent({ keepAlive: true, maxSockets });
  }

  /**
   * Some servers (llama-server after a stream) close a kept-alive connection without saying so;
   * a request that dies on such a socket before any answer is sent again once.
   */
  async post(path: string, body: unknown, firstMatch?: RegExp): Promise<TimedResponse> {
    try {
      return await this.postOnce(path, body, true, firstMatch);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ECONNRESET" || code === "EPIPE") return this.postOnce(path, body, false, firstMatch);
      throw error;
    }
  }

  private postOnce(path: string, body: unknown, reuse = true, firstMatch?: RegExp): Promise<TimedResponse> {
    const payload = Buffer.from(JSON.stringify(body));
    const url = new URL(path, this.base);
    return new Promise((resolve, reject) => {
      const started = performance.now();
      let firstByteMs = -1;
      let firstMatchMs = -1;
      let seen = "";
      const request = http.request(
        url,
        { method: "POST", agent: reuse ? this.agent : false, headers: { ...this.headers, "content-type": "application/json", "content-length": payload.length } },
        (response) => {
          const chunks: Buffer[] = [];
          response.on("data", (chunk: Buffer) => {
            if (firstByteMs < 0) firstByteMs = performance.now() - started;
            if (firstMatch && firstMatchMs < 0) {
              seen += chunk.toString();
              if (firstMatch.test(seen)) firstMatchMs = performance.now() - started;
            }
            chunks.push(chunk);
          });
          response.on("end", () =>
            resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString(), firstByteMs, firstMatchMs, totalMs: performance.now() - started }),
          );
          response.on("error", reject);
        },
      );
      request.on("error", reject);
      request.end(payload);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

import { spawn, spawnSync, type ChildProcess } from "node:child_process";

export interface Server {
  url: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

/** Starts a server process and waits until `readyPath` answers 200. */
export async function startServer(command: string, args: string[], port: number, readyPath: string, env: NodeJS.ProcessEnv = process.env): Promise<Server> {
  const child = spawn(command, args, { stdio: ["ignore", "ignore", "pipe"], env });
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4000)));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${command} exited with ${child.exitCode}: ${stderr}`);
    try {
      if ((await fetch(`${url}${readyPath}`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${command} did not become ready: ${stderr}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    url,
    child,
    stop: async () => {
      if (child.exitCode !== null) return;
      child.kill("SIGTERM");
      await new Promise((resolve) => child.once("exit", resolve));
    },
  };
}

/**
 * `--pin`: servers on CPU 0, the load generator (and any helper process) on CPU 1, as in a cluster
 * where clients do not share the model pod's CPUs. Without it everything shares both cores.
 */
export const PIN = process.argv.includes("--pin");

/** The command line, under `taskset -c <cpu>` when pinning. */
export function pinned(cpu: number, command: string, args: string[]): [string, string[]] {
  return PIN ? ["taskset", ["-c", String(cpu), command, ...args]] : [command, args];
}

/** Moves this process to `cpu` when pinning. */
export function pinSelf(cpu: number): void {
  if (PIN) spawnSync("taskset", ["-pc", String(cpu), String(process.pid)], { stdio: "ignore" });
}
