import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync, unwatchFile, watchFile } from "node:fs";
import Type, { type Static } from "typebox";
import { Value } from "typebox/value";
import { parse as parseYaml } from "yaml";
import { ConfigError } from "../common/errors.js";
import type { Logger } from "../common/logger.js";

/**
 * Who may call the router: keys with a name, scopes, the models they may use, their own request
 * rate and token budgets, and a weight for fair queueing. They come from a keys file (YAML or
 * JSON, `--keys-file`) and from the plain lists of `--api-keys(-file)` and `--admin-api-keys(-file)`.
 *
 * Keys are kept only as SHA-256 digests (the file may hold the digest instead of the key); a
 * presented key is hashed and compared with every stored digest in constant time (no early exit),
 * so neither the time taken nor the number of comparisons depends on how much of a key matched.
 * Keys are never logged: a key is known by its name in logs, metrics and /usage.
 */

export const SCOPES = ["generate", "models:manage", "admin"] as const;
export type Scope = (typeof SCOPES)[number];

const NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$";

const KeyEntrySchema = Type.Object(
  {
    name: Type.String({ pattern: NAME_PATTERN, description: "Shown in logs, metrics and /usage instead of the key." }),
    key: Type.Optional(Type.String({ minLength: 16, maxLength: 512, pattern: "^\\S+$" })),
    sha256: Type.Optional(Type.String({ pattern: "^[0-9a-fA-F]{64}$" })),
    scopes: Type.Optional(Type.Array(Type.Enum([...SCOPES]), { minItems: 1, uniqueItems: true })),
    models: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 256 }), { minItems: 1 })),
    limits: Type.Optional(
      Type.Object(
        {
          requestsPerMinute: Type.Optional(Type.Number({ minimum: 0 })),
          burst: Type.Optional(Type.Integer({ minimum: 1 })),
          tokensPerMinute: Type.Optional(Type.Integer({ minimum: 1 })),
          tokensPerDay: Type.Optional(Type.Integer({ minimum: 1 })),
        },
        { additionalProperties: false },
      ),
    ),
    weight: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1000 })),
    maxQueued: Type.Optional(Type.Integer({ minimum: 0, maximum: 100_000 })),
  },
  { additionalProperties: false },
);

const KeysFileSchema = Type.Object({ keys: Type.Array(KeyEntrySchema) }, { additionalProperties: false });
export type KeyEntry = Static<typeof KeyEntrySchema>;

/** One client key, as the router uses it. */
export interface Tenant {
  readonly name: string;
  readonly scopes: ReadonlySet<Scope>;
  /** Model id patterns (`*` matches any run of characters); null: every model. */
  readonly models: readonly string[] | null;
  /** Own request rate (requests per minute, burst); undefined: the router's --rate-limit-*; 0 per minute: none. */
  readonly requests?: { perMinute: number; burst: number };
  readonly tokensPerMinute?: number;
  readonly tokensPerDay?: number;
  /** Share of a saturated model's capacity relative to other keys (fair queueing). */
  readonly weight: number;
  /** Requests it may have waiting for a saturated model; undefined: the router's --queue-per-key. */
  readonly maxQueued?: number;
  /** A client without a key (named by its address: never a metric label). */
  readonly anonymous?: boolean;
}

const ALL_SCOPES: ReadonlySet<Scope> = new Set(SCOPES);

/**
 * The identity of a request without a key, where the router lets one in: each client address is
 * its own tenant (for rate limits and fair queueing). With no keys at all it may do everything;
 * with only admin keys, what needs no admin scope.
 */
export function anonymousTenant(ip: string, scopes: ReadonlySet<Scope> = ALL_SCOPES): Tenant {
  return { name: `ip:${ip}`, scopes, models: null, weight: 1, anonymous: true };
}

export const GENERATE_ONLY: ReadonlySet<Scope> = new Set(["generate"]);


function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

/** `Qwen/*` -> /^Qwen\/.*$/ : only `*` is special. */
function modelPattern(glob: string): RegExp {
  return new RegExp(`^${glob.split("*").map((part) => part.replace(/[.+?^${}()|[\]\\/]/g, "\\$&")).join(".*")}$`);
}

/** Each tenant's model patterns, compiled once (a request's tenant may outlive a reload). */
const compiledPatterns = new WeakMap<Tenant, RegExp[]>();

function patternsOf(tenant: Tenant & { models: readonly string[] }): RegExp[] {
  let patterns = compiledPatterns.get(tenant);
  if (!patterns) compiledPatterns.set(tenant, (patterns = tenant.models.map(modelPattern)));
  return patterns;
}

interface StoredKey {
  digest: Buffer;
  tenant: Tenant;
}

export class Tenants {
  private constructor(
    private readonly stored: readonly StoredKey[],
    /** Only admin keys are configured: routes that need no scope beyond generate stay open without a key. */
    readonly adminOnly = false,
  ) {}

  static readonly EMPTY = new Tenants([]);

  get enabled(): boolean {
    return this.stored.length > 0;
  }

  get count(): number {
    return this.stored.length;
  }

  /** Every tenant, in file order (for /usage). */
  list(): Tenant[] {
    return this.stored.map((s) => s.tenant);
  }

  /**
   * The tenant of a valid `Authorization: Bearer <key>` header, or null. Every stored digest is
   * compared whatever matched, so the time taken says nothing about the key.
   */
  verify(authorization: string | undefined): Tenant | null {
    if (!authorization) return null;
    const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization);
    if (!match) return null;
    const presented = sha256(match[1]!);
    let found: Tenant | null = null;
    for (const stored of this.stored) if (timingSafeEqual(presented, stored.digest) && !found) found = stored.tenant;
    return found;
  }

  /** May this tenant use the model? Tenants without keys (anonymous) may use every model. */
  mayUse(tenant: Tenant, modelId: string): boolean {
    return tenant.models === null || patternsOf(tenant as Tenant & { models: readonly string[] }).some((pattern) => pattern.test(modelId));
  }

  /**
   * From the settings: the keys file (`--keys-file`), and the plain lists. A plain key may do
   * everything an admin key does when there are no admin keys (Corral's behaviour before scopes),
   * else only generate; admin keys have every scope.
   */
  static load(options: { keysFile?: string; apiKeysFile?: string; apiKeys?: readonly string[]; adminKeysFile?: string; adminKeys?: readonly string[] }): Tenants {
    const admins = plainKeys(options.adminKeysFile, options.adminKeys ?? [], "admin keys");
    const plain = plainKeys(options.apiKeysFile, options.apiKeys ?? [], "API keys");
    const entries: StoredKey[] = [];
    const plainScopes: Scope[] = admins.length > 0 ? ["generate"] : [...SCOPES];
    for (const key of admins) entries.push(plainEntry(key, [...SCOPES]));
    for (const key of plain) entries.push(plainEntry(key, plainScopes));
    if (options.keysFile) entries.push(...readKeysFile(options.keysFile));
    return Tenants.of(entries, options.keysFile ? `keys file ${options.keysFile}` : "the key lists", admins.length > 0 && entries.length === admins.length);
  }

  private static of(entries: StoredKey[], source: string, adminOnly: boolean): Tenants {
    const names = new Set<string>();
    const digests = new Set<string>();
    for (const entry of entries) {
      if (names.has(entry.tenant.name)) throw new ConfigError(`${source}: two keys are named "${entry.tenant.name}": names must be unique`);
      names.add(entry.tenant.name);
      const hex = entry.digest.toString("hex");
      if (digests.has(hex)) throw new ConfigError(`${source}: key "${entry.tenant.name}" is the same key as another entry`);
      digests.add(hex);
    }
    return new Tenants(entries, adminOnly);
  }
}

function plainEntry(key: string, scopes: Scope[]): StoredKey {
  const digest = sha256(key);
  // The name a plain key is known by: a short digest, as the rate limits always used.
  const tenant: Tenant = { name: `key:${digest.toString("hex").slice(0, 16)}`, scopes: new Set(scopes), models: null, weight: 1 };
  return { digest, tenant };
}

/** Keys from a file of one key a line (`#` starts a comment) and a list. */
function plainKeys(file: string | undefined, keys: readonly string[], what: string): string[] {
  const out = keys.map((key) => key.trim()).filter(Boolean);
  if (!file) return [...new Set(out)];
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw new ConfigError(`${what} file ${file} cannot be read: ${(error as Error).message}`);
  }
  const before = out.length;
  for (const line of text.split(/\r?\n/)) {
    const key = line.replace(/#.*$/, "").trim();
    if (key) out.push(key);
  }
  if (out.length === before) throw new ConfigError(`${what} file ${file} holds no key`);
  return [...new Set(out)];
}

function readKeysFile(file: string): StoredKey[] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw new ConfigError(`keys file ${file} cannot be read: ${(error as Error).message}`);
  }
  return parseKeysFile(text, `keys file ${file}`);
}

function parseKeysFile(text: string, source: string): StoredKey[] {
  let document: unknown;
  try {
    document = parseYaml(text);
  } catch (error) {
    throw new ConfigError(`${source} is not valid YAML or JSON: ${(error as Error).message.split("\n")[0]}`);
  }
  if (!Value.Check(KeysFileSchema, document)) {
    const first = [...Value.Errors(KeysFileSchema, document)][0];
    const where = first?.instancePath ? first.instancePath.replace(/^\//, "").replaceAll("/", ".") : "the document";
    throw new ConfigError(`${source}: ${where}: ${first?.message ?? "invalid"} (expected { keys: [{ name, key or sha256, scopes, models, limits, weight }] })`);
  }
  return document.keys.map((entry, i) => storedOf(entry, `${source}: keys.${i} (${entry.name})`));
}

function storedOf(entry: KeyEntry, where: string): StoredKey {
  if ((entry.key === undefined) === (entry.sha256 === undefined)) throw new ConfigError(`${where}: give exactly one of key and sha256`);
  const digest = entry.key !== undefined ? sha256(entry.key) : Buffer.from(entry.sha256!, "hex");
  const limits = entry.limits ?? {};
  if (limits.burst !== undefined && limits.requestsPerMinute === undefined) throw new ConfigError(`${where}: limits.burst needs limits.requestsPerMinute`);
  const tenant: Tenant = {
    name: entry.name,
    scopes: new Set(entry.scopes ?? ["generate"]),
    models: entry.models ?? null,
    requests: limits.requestsPerMinute === undefined ? undefined : { perMinute: limits.requestsPerMinute, burst: limits.burst ?? Math.max(1, Math.ceil(limits.requestsPerMinute / 6)) },
    tokensPerMinute: limits.tokensPerMinute,
    tokensPerDay: limits.tokensPerDay,
    weight: entry.weight ?? 1,
    maxQueued: entry.maxQueued,
  };
  return { digest, tenant };
}

/** Where the keys come from (the router's settings). */
export interface KeySources {
  keysFile?: string;
  apiKeysFile?: string;
  apiKeys?: readonly string[];
  adminKeysFile?: string;
  adminKeys?: readonly string[];
}

/**
 * The keys now in force, reloaded when a key file changes (a mounted Secret is updated in place),
 * so keys are added, rotated and revoked without a restart. A file that cannot be read or parsed
 * keeps the keys in force (and says why in the log), as does one that would leave no key at all:
 * that would turn authentication off, which only a restart may do.
 */
export class KeyStore {
  current: Tenants;
  private readonly files: string[];
  /** What the files held when the keys in force were read (a change of metadata alone is no reload). */
  private loadedText: string;
  private settleTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly sources: KeySources,
    private readonly hooks: { logger: Logger; onReload?: (outcome: "success" | "failure") => void },
  ) {
    this.files = [sources.keysFile, sources.apiKeysFile, sources.adminKeysFile].filter((f): f is string => f !== undefined);
    this.loadedText = this.read();
    this.current = Tenants.load(sources);
  }

  /**
   * Polls the files' status (a Secret volume swaps a symlink, which fs.watch can miss). The first
   * poll only records the status: a change made between the first load and it is caught by one
   * comparison of the contents once it has run.
   */
  watch(intervalMs = 1000): void {
    for (const file of this.files) watchFile(file, { interval: intervalMs, persistent: false }, () => this.reloadIfChanged());
    this.settleTimer = setTimeout(() => this.reloadIfChanged(), intervalMs * 2);
    this.settleTimer.unref();
  }

  /** The files' contents, side by side (unreadable ones as a marker, so that their return counts as a change). */
  private read(): string {
    return this.files
      .map((file) => {
        try {
          return readFileSync(file, "utf8");
        } catch {
          return "\u0000unreadable";
        }
      })
      .join("\u0000");
  }

  reloadIfChanged(): boolean {
    return this.read() === this.loadedText ? false : this.reload();
  }

  reload(): boolean {
    const { logger, onReload } = this.hooks;
    try {
      const text = this.read();
      const next = Tenants.load(this.sources);
      this.loadedText = text;
      if (this.current.enabled && !next.enabled) throw new ConfigError("the key files now hold no key, which would turn authentication off; restart the router to do that");
      this.current = next;
      logger.info({ keys: next.count }, "keys reloaded");
      onReload?.("success");
      return true;
    } catch (error) {
      logger.error({ reason: (error as Error).message }, "keys not reloaded: the keys in force stay");
      onReload?.("failure");
      return false;
    }
  }

  close(): void {
    clearTimeout(this.settleTimer);
    for (const file of this.files) unwatchFile(file);
  }
}
