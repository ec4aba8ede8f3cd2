import type { Endpoint } from "./backends/types.js";

/**
 * Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2016; what KubeAI's
 * PrefixHash routing does) over one model's ready endpoints. A request's key (the start of its
 * prompt) hashes to a point on a ring of virtual nodes; it goes to the first endpoint clockwise
 * whose load stays within `loadFactor` times the average, so requests that share a prefix keep
 * landing where that prefix is cached, and no endpoint takes more than its bound. When endpoints
 * come or go, only the keys next to them move.
 */

/** Points per endpoint on the ring: with 100 the largest share is within ~20% of the mean at 3 endpoints and ~10% at 1,000. */
export const VIRTUAL_NODES = 100;

/** FNV-1a's starting value. */
export const HASH_SEED = 0x811c9dc5;

/** Adds `text[start, end)` (UTF-16 units) to a 32-bit FNV-1a hash: parts hash without being joined. */
export function hashPart(hash: number, text: string, start = 0, end = text.length): number {
  let h = hash;
  for (let i = start; i < end; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** murmur3's finaliser: keys that differ in one character land far apart on the ring. */
export function finishHash(hash: number): number {
  let h = hash;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The ring position of a whole string. */
export function hashKey(text: string): number {
  return finishHash(hashPart(HASH_SEED, text));
}

export class HashRing {
  /** Ring points in ascending order, and the index (into `endpoints`) of each point's endpoint. */
  private readonly points: Uint32Array;
  private readonly owners: Uint32Array;
  /** Per endpoint: the pick that last visited it (saves a Set per pick). */
  private readonly visited: Uint32Array;
  private pickNumber = 0;

  constructor(readonly endpoints: readonly Endpoint[]) {
    const count = endpoints.length * VIRTUAL_NODES;
    const pairs = new Float64Array(count);
    for (let e = 0; e < endpoints.length; e++) {
      const id = endpoints[e]!.id;
      for (let v = 0; v < VIRTUAL_NODES; v++) {
        // Point and owner in one number (point * 2^20 + owner) so one typed sort orders both.
        pairs[e * VIRTUAL_NODES + v] = hashKey(`${id}#${v}`) * 1_048_576 + e;
      }
    }
    pairs.sort();
    this.points = new Uint32Array(count);
    this.owners = new Uint32Array(count);
    for (let i = 0; i < count; i++) {
      const pair = pairs[i]!;
      const owner = pair % 1_048_576;
      this.owners[i] = owner;
      this.points[i] = (pair - owner) / 1_048_576;
    }
    this.visited = new Uint32Array(endpoints.length);
  }

  /** Whether this ring was built for exactly these endpoints (ids, in order). */
  matches(endpoints: readonly Endpoint[]): boolean {
    if (endpoints === this.endpoints) return true;
    if (endpoints.length !== this.endpoints.length) return false;
    for (let i = 0; i < endpoints.length; i++) if (endpoints[i]!.id !== this.endpoints[i]!.id) return false;
    return true;
  }

  /**
   * The first endpoint clockwise from `keyHash` that `admits` (its load is within the bound and it
   * is usable), or undefined when none does.
   */
  pick(keyHash: number, admits: (endpoint: Endpoint) => boolean): Endpoint | undefined {
    const { points, owners, visited, endpoints } = this;
    if (points.length === 0) return undefined;
    // The first point at or after the key, wrapping round.
    let low = 0;
    let high = points.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (points[mid]! < keyHash) low = mid + 1;
      else high = mid;
    }
    const stamp = ++this.pickNumber;
    if (stamp === 0xffffffff) {
      visited.fill(0);
      this.pickNumber = 1;
    }
    let seen = 0;
    for (let step = 0; step < points.length && seen < endpoints.length; step++) {
      const owner = owners[(low + step) % points.length]!;
      if (visited[owner] === this.pickNumber) continue;
      visited[owner] = this.pickNumber;
      seen++;
      const endpoint = endpoints[owner]!;
      if (admits(endpoint)) return endpoint;
    }
    return undefined;
  }
}
