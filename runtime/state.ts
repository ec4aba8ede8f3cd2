import type { GgufSummary } from "../common/gguf/reader.js";
import type { SamplingDefaults } from "../common/api.js";
import type { Engine } from "./engine.js";

export type RuntimePhase = "downloading" | "loading" | "ready" | "draining" | "failed";

/** What the runtime knows about itself; read by /info, /readyz and every generation route. */
export class RuntimeState {
  phase: RuntimePhase = "loading";
  engine: Engine | undefined;
  summary: GgufSummary | undefined;
  download: { bytesDone: number; bytesTotal?: number } | undefined;
  loadFraction = 0;
  failure: string | undefined;
  /** Generation requests accepted and not yet answered (queued ones included). */
  inFlight = 0;
  /** One controller per request generating or queued; aborting one frees its sequence. */
  readonly activeRequests = new Set<AbortController>();
  private idleWaiters: (() => void)[] = [];

  constructor(
    readonly modelId: string,
    readonly source: string,
    readonly defaults: SamplingDefaults,
    readonly threads: number,
  ) {}

  get ready(): boolean {
    return this.phase === "ready" && this.engine !== undefined;
  }

  enter(): void {
    this.inFlight++;
  }

  leave(): void {
    this.inFlight--;
    if (this.inFlight === 0) for (const wake of this.idleWaiters.splice(0)) wake();
  }

  abortAll(reason: string): void {
    for (const controller of this.activeRequests) controller.abort(new Error(reason));
  }

  /** Resolves once nothing is in flight. */
  idle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}
