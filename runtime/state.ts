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
  /**
   * Generation requests received and not yet handed to the engine (body being read, validated,
   * tokenized). An idle batch loop waits briefly for these so that requests arriving together
   * share their first step, and starts at once when there are none.
   */
  arriving = 0;
  private readonly arrivals = new WeakSet<object>();
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

  /** A generation request came in (`key` identifies it). */
  arrive(key: object): void {
    this.arrivals.add(key);
    this.arriving++;
  }

  /** It reached the engine, or ended before; only the first call per request counts. */
  settle(key: object): void {
    if (this.arrivals.delete(key)) this.arriving--;
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
