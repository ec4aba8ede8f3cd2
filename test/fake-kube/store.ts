// Object storage with one global resourceVersion counter (like etcd's revision) and a bounded
// event history from which watches resume.

import { type ManagedEntry, renderManagedFields } from "./managed.js";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Obj = Record<string, any>;

export interface StoredObject {
  obj: Obj;
  managed: ManagedEntry[];
}

export type EventType = "ADDED" | "MODIFIED" | "DELETED";

export interface StoreEvent {
  rv: number;
  storageKey: string;
  type: EventType;
  /** The object after the change (for DELETED: the last state, with the deletion's resourceVersion). */
  obj: Obj;
  /** The object before the change (MODIFIED and DELETED). */
  old?: Obj;
}

export function objectKey(namespace: string | undefined, name: string): string {
  return namespace ? `${namespace}/${name}` : name;
}

export class Store {
  private rv: number;
  private readonly data = new Map<string, Map<string, StoredObject>>();
  private readonly uids = new Map<string, { storageKey: string; key: string }>();
  /** owner uid -> "storageKey\u0000key" of the objects whose ownerReferences name it */
  private readonly owners = new Map<string, Set<string>>();
  private history: StoreEvent[] = [];
  /** A watch from a resourceVersion below this one has missed events: 410 Gone. */
  private expiredBefore = 0;
  private readonly listeners = new Set<(e: StoreEvent) => void>();

  constructor(
    private readonly historySize: number,
    startRv: number,
  ) {
    this.rv = startRv;
  }

  currentRv(): number {
    return this.rv;
  }

  oldestWatchableRv(): number {
    return this.expiredBefore;
  }

  get(storageKey: string, namespace: string | undefined, name: string): StoredObject | undefined {
    return this.data.get(storageKey)?.get(objectKey(namespace, name));
  }

  /** Objects of a storage key, in key order (etcd returns them sorted by key). */
  list(storageKey: string, namespace?: string): StoredObject[] {
    const m = this.data.get(storageKey);
    if (!m) return [];
    const keys = [...m.keys()].sort();
    const out: StoredObject[] = [];
    for (const k of keys) {
      const s = m.get(k)!;
      if (namespace !== undefined && s.obj.metadata?.namespace !== namespace) continue;
      out.push(s);
    }
    return out;
  }

  storageKeys(): string[] {
    return [...this.data.keys()];
  }

  byUid(uid: string): { storageKey: string; stored: StoredObject } | undefined {
    const ref = this.uids.get(uid);
    if (!ref) return undefined;
    const stored = this.data.get(ref.storageKey)?.get(ref.key);
    return stored ? { storageKey: ref.storageKey, stored } : undefined;
  }

  /** Creates or replaces an object; sets its resourceVersion and managedFields. */
  write(storageKey: string, obj: Obj, managed: ManagedEntry[]): Obj {
    const meta = obj.metadata as Obj;
    const key = objectKey(meta.namespace, meta.name);
    let m = this.data.get(storageKey);
    if (!m) {
      m = new Map();
      this.data.set(storageKey, m);
    }
    const previous = m.get(key);
    this.rv++;
    const stored = structuredClone(obj);
    if (previous) this.unindexOwners(storageKey, key, previous.obj);
    this.indexOwners(storageKey, key, stored);
    stored.metadata.resourceVersion = String(this.rv);
    const mf = renderManagedFields(managed);
    if (mf.length > 0) stored.metadata.managedFields = mf;
    else delete stored.metadata.managedFields;
    m.set(key, { obj: stored, managed });
    if (stored.metadata.uid) this.uids.set(stored.metadata.uid, { storageKey, key });
    this.record({
      rv: this.rv,
      storageKey,
      type: previous ? "MODIFIED" : "ADDED",
      obj: stored,
      ...(previous ? { old: previous.obj } : {}),
    });
    return structuredClone(stored);
  }

  /** Deletes an object; the DELETED event carries the deletion's resourceVersion. */
  remove(storageKey: string, namespace: string | undefined, name: string, finalState?: Obj): Obj | undefined {
    const m = this.data.get(storageKey);
    const key = objectKey(namespace, name);
    const previous = m?.get(key);
    if (!m || !previous) return undefined;
    m.delete(key);
    this.unindexOwners(storageKey, key, previous.obj);
    if (previous.obj.metadata?.uid) this.uids.delete(previous.obj.metadata.uid);
    this.rv++;
    const last = structuredClone(finalState ?? previous.obj);
    if (finalState && previous.obj.metadata.managedFields) last.metadata.managedFields ??= previous.obj.metadata.managedFields;
    last.metadata.resourceVersion = String(this.rv);
    this.record({ rv: this.rv, storageKey, type: "DELETED", obj: last, old: previous.obj });
    return structuredClone(last);
  }

  private indexOwners(storageKey: string, key: string, obj: Obj): void {
    for (const ref of (obj.metadata?.ownerReferences ?? []) as Obj[]) {
      if (typeof ref?.uid !== "string") continue;
      let set = this.owners.get(ref.uid);
      if (!set) {
        set = new Set();
        this.owners.set(ref.uid, set);
      }
      set.add(`${storageKey}\u0000${key}`);
    }
  }

  private unindexOwners(storageKey: string, key: string, obj: Obj): void {
    for (const ref of (obj.metadata?.ownerReferences ?? []) as Obj[]) {
      const set = this.owners.get(ref?.uid);
      if (!set) continue;
      set.delete(`${storageKey}\u0000${key}`);
      if (set.size === 0) this.owners.delete(ref.uid);
    }
  }

  /** Objects whose ownerReferences name `uid`. */
  dependentsOf(uid: string): { storageKey: string; stored: StoredObject }[] {
    const out: { storageKey: string; stored: StoredObject }[] = [];
    for (const ref of this.owners.get(uid) ?? []) {
      const [storageKey, key] = ref.split("\u0000") as [string, string];
      const stored = this.data.get(storageKey)?.get(key);
      if (stored) out.push({ storageKey, stored });
    }
    return out;
  }

  /** Advances the resourceVersion without an event (like writes to other resources). */
  bump(): number {
    return ++this.rv;
  }

  /** Drops all history: every resourceVersion issued so far becomes too old to watch from. */
  compact(): void {
    this.rv++;
    this.expiredBefore = this.rv;
    this.history = [];
  }

  /** Events after `rv` for a storage key, or "expired" when the history no longer has them. */
  eventsSince(rv: number, storageKey: string): StoreEvent[] | "expired" {
    if (rv < this.expiredBefore) return "expired";
    return this.history.filter((e) => e.rv > rv && e.storageKey === storageKey);
  }

  subscribe(listener: (e: StoreEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private record(e: StoreEvent): void {
    this.history.push(e);
    while (this.history.length > this.historySize) {
      const dropped = this.history.shift()!;
      this.expiredBefore = Math.max(this.expiredBefore, dropped.rv);
    }
    for (const l of [...this.listeners]) l(e);
  }
}
