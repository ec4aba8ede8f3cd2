import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { ConfigError } from "../common/errors.js";

function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

/**
 * Optional API keys. Keys are kept only as SHA-256 digests; a presented key is hashed and compared
 * with every stored digest in constant time (no early exit, equal lengths), so neither the
 * comparison time nor the number of keys checked depends on how much of a key matched. Keys are
 * never logged; a client is identified by a short digest (`key:<16 hex>`) in rate limits.
 */
export class ApiKeys {
  private readonly digests: Buffer[];

  constructor(keys: readonly string[]) {
    this.digests = [...new Set(keys.map((key) => key.trim()).filter(Boolean))].map(sha256);
  }

  /** Keys from a file (one a line, `#` starts a comment) and a list (`CORRAL_API_KEYS`); `what` names them in errors. */
  static load(options: { file?: string; keys?: readonly string[]; what?: string }): ApiKeys {
    const what = options.what ?? "API keys";
    const keys = [...(options.keys ?? [])];
    if (options.file) {
      let text: string;
      try {
        text = readFileSync(options.file, "utf8");
      } catch (error) {
        throw new ConfigError(`${what} file ${options.file} cannot be read: ${(error as Error).message}`);
      }
      for (const line of text.split(/\r?\n/)) {
        const key = line.replace(/#.*$/, "").trim();
        if (key) keys.push(key);
      }
      if (keys.length === 0) throw new ConfigError(`${what} file ${options.file} holds no key`);
    }
    return new ApiKeys(keys);
  }

  get enabled(): boolean {
    return this.digests.length > 0;
  }

  get count(): number {
    return this.digests.length;
  }

  /**
   * The client id of a valid `Authorization: Bearer <key>` header, or null. Callers answer 401
   * on null when auth is enabled.
   */
  verify(authorization: string | undefined): string | null {
    if (!authorization) return null;
    const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization);
    if (!match) return null;
    const presented = sha256(match[1]!);
    let found = false;
    for (const digest of this.digests) found = timingSafeEqual(presented, digest) || found;
    return found ? `key:${presented.toString("hex").slice(0, 16)}` : null;
  }
}
