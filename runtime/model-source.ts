import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, open, rename, rm, stat, utimes, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Logger } from "../common/logger.js";
import { inspectGguf, GgufError, type GgufSummary } from "../common/gguf/reader.js";
import { makeTestModel } from "../common/testmodels/make.js";

/** Where a model comes from, parsed from `--model`. */
export type ModelSource =
  | { kind: "file"; path: string }
  | { kind: "url"; url: string; cacheName: string }
  | { kind: "builtin"; name: BuiltinModel; cacheName: string };

export const BUILTIN_MODELS = ["tiny", "successor"] as const;
export type BuiltinModel = (typeof BUILTIN_MODELS)[number];

export class ModelSourceError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ModelSourceError";
  }
}

export interface DownloadProgress {
  bytesDone: number;
  bytesTotal?: number;
}

/** The Hugging Face endpoint; HF_ENDPOINT points it at a mirror (the library convention). */
export function huggingFaceEndpoint(env: NodeJS.ProcessEnv = process.env): string {
  return (env.HF_ENDPOINT ?? "https://huggingface.co").replace(/\/+$/, "");
}

export function defaultModelDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CACHE_HOME ?? path.join(os.homedir(), ".cache");
  return path.join(base, "corral", "models");
}

export function parseModelSource(source: string, env: NodeJS.ProcessEnv = process.env): ModelSource {
  if (source.startsWith("builtin:")) {
    const name = source.slice("builtin:".length);
    if (!(BUILTIN_MODELS as readonly string[]).includes(name)) {
      throw new ModelSourceError(`unknown built-in model "${name}"; built-ins are ${BUILTIN_MODELS.join(", ")}`);
    }
    return { kind: "builtin", name: name as BuiltinModel, cacheName: path.join("builtin", `${name}.gguf`) };
  }
  if (source.startsWith("hf:")) {
    const parts = source.slice(3).split("/");
    if (parts.length < 3 || parts.some((p) => p === "" || p === "." || p === "..") || !parts.at(-1)!.endsWith(".gguf")) {
      throw new ModelSourceError(`invalid source "${source}": expected hf:owner/repo/file.gguf`);
    }
    const [owner, repo, ...file] = parts;
    const url = `${huggingFaceEndpoint(env)}/${owner}/${repo}/resolve/main/${file.map(encodeURIComponent).join("/")}`;
    return { kind: "url", url, cacheName: path.join("hf", owner!, repo!, ...file) };
  }
  if (/^https?:\/\//i.test(source)) {
    let url: URL;
    try {
      url = new URL(source);
    } catch (cause) {
      throw new ModelSourceError(`invalid source URL "${source}"`, { cause });
    }
    const base = path.basename(url.pathname) || "model.gguf";
    const hash = createHash("sha256").update(source).digest("hex").slice(0, 16);
    return { kind: "url", url: source, cacheName: path.join("url", `${hash}-${base.replace(/[^\w.-]/g, "_")}`) };
  }
  if (source.startsWith("file://")) return { kind: "file", path: new URL(source).pathname };
  return { kind: "file", path: path.resolve(source) };
}

export interface ResolveOptions {
  modelDir: string;
  logger: Logger;
  hfToken?: string;
  onProgress?: (progress: DownloadProgress) => void;
  signal?: AbortSignal;
}

/**
 * Makes the model available as a validated local file and returns its summary. Downloads are
 * written to `<file>.part` (resumed with a Range request when possible), checked, then renamed:
 * a file under the final name is always complete. A cached file that fails validation (a
 * partial copy from an older version, a corrupted disk) is deleted and fetched again.
 */
export async function resolveModel(source: ModelSource, options: ResolveOptions): Promise<GgufSummary> {
  if (source.kind === "file") return inspectGguf(source.path);
  const target = path.join(options.modelDir, source.cacheName);
  const cached = await validCachedFile(target, options.logger);
  if (cached) return cached;
  await mkdir(path.dirname(target), { recursive: true });
  if (source.kind === "builtin") {
    options.logger.info({ model: source.name, file: target }, "generating built-in model");
    await makeTestModel({ kind: source.name, out: target });
    return inspectGguf(target);
  }
  await withDownloadLock(target, options, () => download(source.url, target, options));
  return inspectGguf(target);
}

async function validCachedFile(file: string, logger: Logger): Promise<GgufSummary | undefined> {
  try {
    return await inspectGguf(file);
  } catch (error) {
    if (error instanceof GgufError && error.code === "ENOENT") return undefined;
    logger.warn({ file, reason: (error as Error).message }, "cached model file is invalid; fetching it again");
    await rm(file, { force: true });
    return undefined;
  }
}

const LOCK_STALE_MS = 60_000;

/**
 * Pods that share a model cache volume download each file once: the first takes a lock file and
 * touches it while it works; the others wait for the result, and take over a lock left stale by
 * a pod that died.
 */
async function withDownloadLock(target: string, options: ResolveOptions, work: () => Promise<void>): Promise<void> {
  const lockFile = `${target}.lock`;
  for (;;) {
    options.signal?.throwIfAborted();
    try {
      const handle = await open(lockFile, "wx");
      await handle.writeFile(`${os.hostname()} ${process.pid}\n`);
      await handle.close();
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const lock = await stat(lockFile).catch(() => undefined);
      if (lock && Date.now() - lock.mtimeMs > LOCK_STALE_MS) {
        options.logger.warn({ lockFile }, "taking over a stale download lock");
        await rm(lockFile, { force: true });
        continue;
      }
      options.logger.info({ lockFile }, "another process is downloading this model; waiting");
      await new Promise((resolve) => setTimeout(resolve, 1000));
      if (await validCachedFile(target, options.logger)) return;
    }
  }
  const heartbeat = setInterval(() => {
    const now = new Date();
    utimes(lockFile, now, now).catch(() => undefined);
  }, 10_000);
  try {
    await work();
  } finally {
    clearInterval(heartbeat);
    await rm(lockFile, { force: true });
  }
}

async function download(url: string, target: string, options: ResolveOptions): Promise<void> {
  const partial = `${target}.part`;
  const existing = (await stat(partial).catch(() => undefined))?.size ?? 0;
  const headers: Record<string, string> = { "user-agent": "corral-runtime" };
  if (options.hfToken) headers.authorization = `Bearer ${options.hfToken}`;
  if (existing > 0) headers.range = `bytes=${existing}-`;
  const safeUrl = url.replace(/\/\/[^@/]*@/, "//");
  options.logger.info({ url: safeUrl, file: target, resumeFrom: existing }, "downloading model");

  let response: Response;
  try {
    response = await fetch(url, { headers, redirect: "follow", signal: options.signal });
  } catch (cause) {
    throw new ModelSourceError(`cannot download ${safeUrl}: ${(cause as Error).message}`, { cause });
  }
  if (response.status === 416 && existing > 0) {
    // The partial file is already whole (or longer than the remote one): start over.
    await rm(partial, { force: true });
    return download(url, target, options);
  }
  if (!response.ok || !response.body) {
    const hint = response.status === 401 || response.status === 403 ? " (a gated model needs --hf-token / HF_TOKEN)" : "";
    throw new ModelSourceError(`cannot download ${safeUrl}: HTTP ${response.status}${hint}`);
  }
  const resumed = response.status === 206;
  const start = resumed ? existing : 0;
  const length = Number(response.headers.get("content-length") ?? NaN);
  const total = Number.isFinite(length) ? start + length : undefined;
  let done = start;
  let lastLog = 0;
  options.onProgress?.({ bytesDone: done, bytesTotal: total });
  const meter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      done += chunk.length;
      options.onProgress?.({ bytesDone: done, bytesTotal: total });
      const now = Date.now();
      if (now - lastLog > 5000) {
        lastLog = now;
        options.logger.info({ bytesDone: done, bytesTotal: total }, "download progress");
      }
      callback(null, chunk);
    },
  });
  await pipeline(
    Readable.fromWeb(response.body as import("node:stream/web").ReadableStream),
    meter,
    createWriteStream(partial, { flags: resumed ? "a" : "w" }),
    { signal: options.signal },
  );
  if (total !== undefined && done !== total) {
    throw new ModelSourceError(`download of ${safeUrl} ended early: ${done} of ${total} bytes`);
  }
  try {
    await inspectGguf(partial);
  } catch (cause) {
    await rm(partial, { force: true });
    throw new ModelSourceError(`downloaded file from ${safeUrl} is not a valid GGUF model: ${(cause as Error).message}`, { cause });
  }
  await rename(partial, target);
  await writeFile(`${target}.source`, `${safeUrl}\n`).catch(() => undefined);
  options.logger.info({ file: target, bytes: done }, "download complete");
}
