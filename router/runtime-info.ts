import type { Endpoint } from "./backends/types.js";

/** How long the router waits for a runtime's /info before showing none. */
const INFO_TIMEOUT_MS = 2000;

/**
 * The runtimes' /info (context size, defaults, slots, memory), fetched on demand and kept per
 * endpoint: most of it is static, so model listings reuse a recent answer, while /system/info
 * asks afresh.
 */
export class RuntimeInfoCache {
  private readonly entries = new Map<string, { info: Record<string, unknown>; at: number }>();

  /** The endpoint's /info, fetched when the kept one is older than `maxAgeMs`; null when it does not answer. */
  async get(endpoint: Endpoint, maxAgeMs: number): Promise<Record<string, unknown> | null> {
    const kept = this.entries.get(endpoint.id);
    if (kept && Date.now() - kept.at <= maxAgeMs) return kept.info;
    try {
      const response = await fetch(`${endpoint.url}/info`, { signal: AbortSignal.timeout(INFO_TIMEOUT_MS) });
      if (response.status !== 200) {
        await response.body?.cancel();
        return null;
      }
      const info = (await response.json()) as Record<string, unknown>;
      this.entries.set(endpoint.id, { info, at: Date.now() });
      return info;
    } catch {
      return null;
    }
  }

  /** The last answer kept for an endpoint, without fetching. */
  kept(endpoint: Endpoint): Record<string, unknown> | undefined {
    return this.entries.get(endpoint.id)?.info;
  }
}
