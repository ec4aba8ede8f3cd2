import type { Logger } from "../logger.js";
import { describeKubeError, errorCode, isGone, retryAfterSeconds, type KubeClient, type ResourceType, type WatchHandle } from "./client.js";
import { objectKey, type KubeObject, type KubeStatus } from "./types.js";

/**
 * A list+watch cache of one resource (client-go's Reflector + Store, in small):
 *
 * - lists (paginated), then watches from the list's resourceVersion with bookmarks and a server
 *   timeout; a watch the server ends cleanly is resumed from the last resourceVersion seen;
 * - a watch answering 410 Gone (or an ERROR event with code 410) relists, and the relist emits
 *   deletes for objects that vanished meanwhile;
 * - any failure (dropped connection, 429 while a new CRD's storage initialises, 5xx, a failed
 *   list) is retried with exponential backoff and jitter, honouring Retry-After — it never stops
 *   for good, unlike client-node's makeInformer;
 * - `synced()` is false until every namespace's first list has completed.
 *
 * Handlers get `add`/`update`/`delete` after the cache changed. They should only enqueue work.
 */

export type InformerEventType = "add" | "update" | "delete";
export type InformerHandler<T> = (type: InformerEventType, object: T, old: T | undefined) => void;

export interface BackoffSettings {
  initialMs: number;
  maxMs: number;
}

export interface InformerOptions {
  client: KubeClient;
  resource: ResourceType;
  /** Namespaces to watch; empty or absent: all namespaces (one cluster-wide watch). */
  namespaces?: readonly string[];
  labelSelector?: string;
  fieldSelector?: string;
  logger: Logger;
  backoff?: Partial<BackoffSettings>;
  /** Watches ask the server to end after a random time in this range, as client-go does (seconds). */
  watchTimeoutSeconds?: readonly [number, number];
  /** Called on every failure that makes the informer retry (for metrics). */
  onFailure?: (what: "list" | "watch", error: unknown) => void;
  /** Applied to every object before it is cached (default: drop metadata.managedFields, which nobody reads and which are large). */
  transform?: (object: KubeObject) => KubeObject;
}

/** Drops metadata.managedFields: often half of an object's size, and never needed from a cache. */
export function stripManagedFields(object: KubeObject): KubeObject {
  const metadata = object.metadata as KubeObject["metadata"] & { managedFields?: unknown };
  if (!metadata?.managedFields) return object;
  const { managedFields: _dropped, ...rest } = metadata;
  return { ...object, metadata: rest };
}

/** Exponential backoff with full jitter between 50% and 100% of the current step. */
export class Backoff {
  private attempt = 0;
  constructor(private readonly settings: BackoffSettings) {}

  next(minimumMs = 0): number {
    const step = Math.min(this.settings.maxMs, this.settings.initialMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    return Math.max(minimumMs, step / 2 + (Math.random() * step) / 2);
  }

  reset(): void {
    this.attempt = 0;
  }

  get failures(): number {
    return this.attempt;
  }
}

type WatchOutcome = { kind: "closed" } | { kind: "expired" } | { kind: "error"; error: unknown };

class Reflector<T extends KubeObject> {
  synced = false;
  private stopped = false;
  private watch: WatchHandle | undefined;
  private endWatch: (() => void) | undefined;
  private listAbort: AbortController | undefined;
  private sleeping: { timer: NodeJS.Timeout; wake: () => void } | undefined;
  private readonly backoff: Backoff;
  private done: Promise<void> | undefined;

  constructor(
    private readonly informer: Informer<T>,
    private readonly options: InformerOptions,
    /** undefined: all namespaces. */
    private readonly namespace: string | undefined,
    private readonly log: Logger,
  ) {
    this.backoff = new Backoff({ initialMs: options.backoff?.initialMs ?? 250, maxMs: options.backoff?.maxMs ?? 30_000 });
  }

  start(): void {
    this.done ??= this.loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watch?.abort();
    this.endWatch?.();
    this.listAbort?.abort();
    if (this.sleeping) {
      clearTimeout(this.sleeping.timer);
      this.sleeping.wake();
    }
    await this.done;
  }

  private async sleep(ms: number): Promise<void> {
    if (this.stopped) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.sleeping = { timer, wake: resolve };
    });
    this.sleeping = undefined;
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      let resourceVersion: string;
      try {
        resourceVersion = await this.list();
      } catch (error) {
        if (this.stopped) return;
        this.options.onFailure?.("list", error);
        const delay = this.backoff.next((retryAfterSeconds(error) ?? 0) * 1000);
        this.log.warn({ reason: describeKubeError(error), code: errorCode(error), retryInMs: Math.round(delay) }, "list failed; retrying");
        await this.sleep(delay);
        continue;
      }
      // Watch from the list, resuming after clean ends, until the history is gone.
      while (!this.stopped) {
        const outcome = await this.watchOnce(resourceVersion, (rv) => (resourceVersion = rv));
        if (this.stopped) return;
        if (outcome.kind === "closed") continue;
        if (outcome.kind === "expired") {
          this.log.debug({ resourceVersion }, "watch history expired (410); relisting");
          break;
        }
        this.options.onFailure?.("watch", outcome.error);
        const delay = this.backoff.next((retryAfterSeconds(outcome.error) ?? 0) * 1000);
        this.log.warn(
          { reason: describeKubeError(outcome.error), code: errorCode(outcome.error), retryInMs: Math.round(delay) },
          "watch failed; resuming after a backoff",
        );
        await this.sleep(delay);
      }
    }
  }

  private async list(): Promise<string> {
    this.listAbort = new AbortController();
    try {
      const result = await this.options.client.list<T>(this.options.resource, this.namespace, {
        labelSelector: this.options.labelSelector,
        fieldSelector: this.options.fieldSelector,
        signal: this.listAbort.signal,
      });
      if (this.stopped) return result.resourceVersion;
      this.informer.replace(this.namespace, result.items);
      if (!this.synced) {
        this.synced = true;
        this.informer.reflectorSynced();
      }
      this.backoff.reset();
      return result.resourceVersion;
    } finally {
      this.listAbort = undefined;
    }
  }

  private watchOnce(resourceVersion: string, advance: (rv: string) => void): Promise<WatchOutcome> {
    const [min, max] = this.options.watchTimeoutSeconds ?? [300, 600];
    const timeoutSeconds = Math.round(min + Math.random() * (max - min));
    return new Promise<WatchOutcome>((resolve) => {
      let settled = false;
      // A connection that died without a FIN never ends by itself: give up on it a little after
      // the server should have ended it, and resume from the last resourceVersion.
      const watchdog = setTimeout(() => finish({ kind: "closed" }), (timeoutSeconds + 30) * 1000);
      watchdog.unref();
      const finish = (outcome: WatchOutcome) => {
        if (settled) return;
        settled = true;
        clearTimeout(watchdog);
        this.watch?.abort();
        this.watch = undefined;
        this.endWatch = undefined;
        resolve(outcome);
      };
      this.endWatch = () => finish({ kind: "closed" });
      this.options.client
        .watch<T | KubeStatus>(
          this.options.resource,
          this.namespace,
          {
            resourceVersion,
            allowWatchBookmarks: true,
            timeoutSeconds,
            labelSelector: this.options.labelSelector,
            fieldSelector: this.options.fieldSelector,
          },
          (event) => {
            if (settled) return;
            if (event.type === "ERROR") {
              const status = event.object as KubeStatus;
              if (status.code === 410) finish({ kind: "expired" });
              else finish({ kind: "error", error: Object.assign(new Error(status.message ?? "watch error"), { statusCode: status.code }) });
              return;
            }
            const object = event.object as T;
            const rv = object.metadata?.resourceVersion;
            if (event.type === "BOOKMARK") {
              if (rv) advance(rv);
              return;
            }
            // Events flowing again mean the connection is healthy.
            this.backoff.reset();
            if (event.type === "DELETED") this.informer.remove(object);
            else this.informer.upsert(object);
            if (rv) advance(rv);
          },
          (error) => {
            if (error === null) finish({ kind: "closed" });
            else if (isGone(error)) finish({ kind: "expired" });
            else finish({ kind: "error", error });
          },
        )
        .then(
          (handle) => {
            if (settled) handle.abort();
            else this.watch = handle;
          },
          (error: unknown) => finish({ kind: "error", error }),
        );
    });
  }
}

export class Informer<T extends KubeObject> {
  private readonly cache = new Map<string, T>();
  private readonly handlers: InformerHandler<T>[] = [];
  private readonly reflectors: Reflector<T>[];
  private readonly syncWaiters: (() => void)[] = [];
  private readonly transform: (object: KubeObject) => KubeObject;
  readonly resource: ResourceType;

  constructor(options: InformerOptions) {
    this.resource = options.resource;
    this.transform = options.transform ?? stripManagedFields;
    const log = options.logger.child({ informer: options.resource.plural });
    const namespaces = options.namespaces?.length ? [...new Set(options.namespaces)] : [undefined];
    this.reflectors = namespaces.map((namespace) => new Reflector<T>(this, options, namespace, namespace ? log.child({ namespace }) : log));
  }

  on(handler: InformerHandler<T>): this {
    this.handlers.push(handler);
    return this;
  }

  start(): this {
    for (const reflector of this.reflectors) reflector.start();
    return this;
  }

  async stop(): Promise<void> {
    await Promise.all(this.reflectors.map((reflector) => reflector.stop()));
  }

  /** True once every namespace has been listed. */
  synced(): boolean {
    return this.reflectors.every((reflector) => reflector.synced);
  }

  /** Resolves when synced(); rejects after `timeoutMs`. */
  waitForSync(timeoutMs = 30_000): Promise<void> {
    if (this.synced()) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.resource.plural} were not listed within ${timeoutMs} ms`)), timeoutMs);
      this.syncWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  get(namespace: string, name: string): T | undefined {
    return this.cache.get(`${namespace}/${name}`);
  }

  /** Every cached object, or those of one namespace. */
  list(namespace?: string): T[] {
    const out: T[] = [];
    for (const object of this.cache.values()) if (namespace === undefined || object.metadata.namespace === namespace) out.push(object);
    return out;
  }

  get size(): number {
    return this.cache.size;
  }

  /** @internal */
  reflectorSynced(): void {
    if (this.synced()) for (const wake of this.syncWaiters.splice(0)) wake();
  }

  /** @internal */
  upsert(incoming: T): void {
    const object = this.transform(incoming) as T;
    const key = objectKey(object);
    const old = this.cache.get(key);
    if (old?.metadata.resourceVersion === object.metadata.resourceVersion && old !== undefined) return;
    this.cache.set(key, object);
    this.emit(old ? "update" : "add", object, old);
  }

  /** @internal */
  remove(object: T): void {
    const key = objectKey(object);
    const old = this.cache.get(key);
    this.cache.delete(key);
    this.emit("delete", old ?? object, old);
  }

  /** @internal A full list: the cache of this namespace (or all) becomes exactly `items`. */
  replace(namespace: string | undefined, items: T[]): void {
    const seen = new Set<string>();
    for (const item of items) {
      seen.add(objectKey(item));
      this.upsert(item);
    }
    for (const [key, object] of [...this.cache]) {
      if (seen.has(key)) continue;
      if (namespace !== undefined && object.metadata.namespace !== namespace) continue;
      this.cache.delete(key);
      this.emit("delete", object, object);
    }
  }

  private emit(type: InformerEventType, object: T, old: T | undefined): void {
    for (const handler of this.handlers) handler(type, object, old);
  }
}
