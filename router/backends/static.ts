import { ModelStartError, type Backend, type CatalogEntry, type Endpoint, type ModelStatus } from "./types.js";

export interface StaticModel {
  modelId: string;
  endpoints: readonly Endpoint[];
  source?: string;
}

/**
 * A fixed set of runtimes that something else runs (`corral router --upstream id=url`): always
 * ready, never started or stopped by the router. Unloading only takes a model out of rotation.
 * Also the backend the router's unit tests and the benchmark use.
 */
export class StaticBackend implements Backend {
  readonly kind = "static";
  private readonly entries: CatalogEntry[];
  private readonly endpoints = new Map<string, readonly Endpoint[]>();
  private readonly unloaded = new Set<string>();
  private currentId: string | null;
  private endpointsListener: ((modelId: string) => void) | undefined;

  constructor(models: readonly StaticModel[]) {
    this.entries = models.map((model) => ({ model_id: model.modelId, source: model.source ?? model.endpoints[0]?.url ?? "", description: null, size_bytes: null }));
    for (const model of models) this.endpoints.set(model.modelId, model.endpoints);
    this.currentId = models[0]?.modelId ?? null;
  }

  /** From `--upstream` values: several entries with one id make one model with several endpoints. */
  static fromUpstreams(upstreams: readonly { modelId: string; url: string }[]): StaticBackend {
    const byModel = new Map<string, Endpoint[]>();
    for (const { modelId, url } of upstreams) {
      const list = byModel.get(modelId) ?? [];
      list.push({ id: `${modelId}@${url}`, url });
      byModel.set(modelId, list);
    }
    return new StaticBackend([...byModel].map(([modelId, endpoints]) => ({ modelId, endpoints })));
  }

  async start(): Promise<void> {}
  async close(): Promise<void> {}
  healthy(): boolean {
    return true;
  }

  list(): readonly CatalogEntry[] {
    return this.entries;
  }

  lookup(modelId: string): CatalogEntry | undefined {
    return this.entries.find((entry) => entry.model_id === modelId);
  }

  current(): string | null {
    return this.currentId;
  }

  /** Replaces a model's endpoints (tests simulate endpoints coming and going). */
  setEndpoints(modelId: string, endpoints: readonly Endpoint[]): void {
    this.endpoints.set(modelId, endpoints);
    this.endpointsListener?.(modelId);
  }

  /** Given once by the balancer (Backend.watchEndpoints): requests queued for a model take new endpoints at once. */
  watchEndpoints(listener: (modelId: string) => void): void {
    this.endpointsListener = listener;
  }

  readyEndpoints(modelId: string): readonly Endpoint[] {
    if (this.unloaded.has(modelId)) return [];
    return this.endpoints.get(modelId) ?? [];
  }

  status(modelId: string): ModelStatus {
    const endpoints = this.readyEndpoints(modelId);
    return { model_id: modelId, state: endpoints.length > 0 ? "ready" : "not_loaded", progress: null, message: null, endpoints };
  }

  async ensureReady(modelId: string, signal: AbortSignal): Promise<void> {
    this.unloaded.delete(modelId);
    if (this.readyEndpoints(modelId).length > 0) return;
    if ((this.endpoints.get(modelId) ?? []).length === 0) throw new ModelStartError(modelId, `model ${modelId} has no endpoint configured`);
    signal.throwIfAborted();
  }

  async load(modelId: string, signal: AbortSignal): Promise<void> {
    this.currentId = modelId;
    await this.ensureReady(modelId, signal);
  }

  async unload(modelId: string): Promise<void> {
    this.unloaded.add(modelId);
    if (this.currentId === modelId) this.currentId = null;
  }

  reportFailure(): void {}
}
