// Shared pieces of the reliability suite (issue 14): a `corral serve` in this process, a raw HTTP
// client that can send what fetch refuses (any header, any body), a redis-server the test can
// stop, hang and restart, and the table the suite prints at the end.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import type { RouterConfig } from "../../router/config.js";
import { run, type RouterHandle } from "../../router/run.js";
import { waitFor } from "../helpers/wait.js";
import { ensureTestModel } from "../helpers/test-models.js";
import { freePort } from "../helpers/net.js";
import { SERVE_MODEL_DIR, testServeConfig } from "../helpers/config.js";

export const MODEL_DIR = SERVE_MODEL_DIR;

/** A catalog file with the deterministic `tiny`, its twin `other`, and (optionally) the slow bench model. */
export async function writeCatalog(dir: string, withSlow: boolean): Promise<string> {
  const lines = ["default: tiny", "models:", "  - id: tiny", "    source: builtin:successor", "  - id: other", "    source: builtin:successor"];
  if (withSlow) {
    const slow = await ensureTestModel("bench", "q8_0");
    lines.push("  - id: slow", `    source: ${JSON.stringify(slow)}`, "    context_size: 512");
  }
  const file = path.join(dir, "models.yaml");
  writeFileSync(file, `${lines.join("\n")}\n`);
  return file;
}

export interface Serve {
  router: RouterHandle;
  url: string;
  dir: string;
  catalog: string;
  stop(): Promise<void>;
}

/** `corral serve` (router + local backend with real runtime children) through the same run() as main.ts. */
export async function startServe(settings: Partial<RouterConfig> = {}, withSlow = false): Promise<Serve> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "corral-reliability-"));
  const catalog = await writeCatalog(dir, withSlow);
  const router = await run(
    testServeConfig(catalog, settings),
    { runtimeLogSink: null },
  );
  await waitForModel(router.url, "tiny");
  return {
    router,
    url: router.url,
    dir,
    catalog,
    async stop() {
      await router.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function waitForModel(url: string, modelId: string, timeoutMs = 120_000): Promise<void> {
  await waitFor(
    async () => {
      const available = (await (await fetch(`${url}/models/available`)).json()) as { models: { model_id: string; state: string }[] };
      return available.models.find((model) => model.model_id === modelId)?.state === "ready";
    },
    { message: `timed out waiting for ${modelId} ready`, timeoutMs },
  );
}

export interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  ms: number;
}

export interface RawRequest {
  method: string;
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  timeoutMs?: number;
  /** A keep-alive agent to reuse a connection; default: a connection of its own. */
  agent?: http.Agent;
  /** The client address (any of 127.0.0.0/8 on Linux), to be another client. */
  localAddress?: string;
}

/** One HTTP/1.1 request with exactly these headers and body (no fetch rules); the whole answer read. */
export function rawRequest(base: string, request: RawRequest): Promise<RawResponse> {
  const url = new URL(base);
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        method: request.method,
        path: request.path,
        // Framed by Content-Length always: node sends a GET/DELETE/OPTIONS body unframed otherwise.
        headers: request.body === undefined ? request.headers : { ...request.headers, "content-length": String(Buffer.byteLength(request.body)) },
        agent: request.agent ?? false,
        localAddress: request.localAddress,
        setHost: !Object.keys(request.headers ?? {}).some((name) => name.toLowerCase() === "host"),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8"), ms: performance.now() - started }));
        res.on("error", reject);
      },
    );
    req.setTimeout(request.timeoutMs ?? 30_000, () => req.destroy(new Error(`no answer within ${request.timeoutMs ?? 30_000} ms`)));
    req.on("error", reject);
    req.end(request.body);
  });
}

/** The SSE data lines of a body, in order. */
export function sseData(body: string): { data: string[]; errorEvents: number; done: boolean } {
  const data: string[] = [];
  let errorEvents = 0;
  for (const line of body.split("\n")) {
    if (line.startsWith("event: error")) errorEvents++;
    if (line.startsWith("data: ")) data.push(line.slice(6));
  }
  return { data, errorEvents, done: data.at(-1) === "[DONE]" };
}

export { freePort };

/** Prints rows as an aligned text table (what `npm run test:chaos` and the fuzz suite end with). */
export function printTable(title: string, rows: Record<string, string | number>[]): string {
  if (rows.length === 0) return "";
  const columns = Object.keys(rows[0]!);
  const widths = columns.map((column) => Math.max(column.length, ...rows.map((row) => String(row[column] ?? "").length)));
  const line = (cells: string[]) => `| ${cells.map((cell, i) => cell.padEnd(widths[i]!)).join(" | ")} |`;
  const text = [
    "",
    title,
    line(columns),
    `|${widths.map((width) => "-".repeat(width + 2)).join("|")}|`,
    ...rows.map((row) => line(columns.map((column) => String(row[column] ?? "")))),
    "",
  ].join("\n");
  process.stdout.write(`${text}\n`);
  return text;
}
