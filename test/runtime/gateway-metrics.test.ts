import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureTestModel } from "../helpers/test-models.js";
import { info, postJson, startRuntime } from "../helpers/runtime.js";
import { waitFor } from "../helpers/wait.js";
import type { RuntimeHandle } from "../../runtime/run.js";

const PARALLEL = 2;
const CONTEXT = 512;

/** Corral's name for each figure the Gateway API Inference Extension reads, and the vLLM names it defaults to. */
const ALIASES = {
  running: ["corral_runtime_requests_running", "vllm:num_requests_running"],
  waiting: ["corral_runtime_requests_waiting", "vllm:num_requests_waiting"],
  kv: ["corral_runtime_kv_cache_usage_ratio", "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
} as const;

interface GatewayFigures {
  running: number;
  waiting: number;
  kv: number;
  /** corral_runtime_load: running + waiting, what the autoscaler reads. */
  load: number;
  /** Every series of every alias, from the same scrape. */
  series: Record<string, number>;
  types: Record<string, string>;
}

/** One scrape of /metrics, read the way an endpoint picker reads it. */
async function scrape(url: string): Promise<GatewayFigures> {
  const response = await fetch(`${url}/metrics`);
  expect(response.status).toBe(200);
  const text = await response.text();
  const series: Record<string, number> = {};
  const types: Record<string, string> = {};
  for (const name of Object.values(ALIASES).flat()) {
    const sample = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text);
    if (sample) series[name] = Number(sample[1]);
    const type = new RegExp(`^# TYPE ${name} (\\w+)$`, "m").exec(text);
    if (type) types[name] = type[1]!;
  }
  const load = Number(/^corral_runtime_load(?:\{[^}]*\})? (\S+)$/m.exec(text)?.[1]);
  return { running: series[ALIASES.running[0]]!, waiting: series[ALIASES.waiting[0]]!, kv: series[ALIASES.kv[0]]!, load, series, types };
}

/** Every alias shows the same value as Corral's own name, and is a gauge. */
function expectAliasesAgree(figures: GatewayFigures): void {
  for (const names of Object.values(ALIASES)) {
    for (const name of names) {
      expect(figures.types[name], name).toBe("gauge");
      expect(figures.series[name], name).toBe(figures.series[names[0]]);
    }
  }
}

/** Opens a stream and resolves once its first chunk arrived (the request holds a sequence). */
async function openStream(url: string, prompt: string) {
  const controller = new AbortController();
  const response = await postJson(`${url}/generate`, { prompt, max_length: 400, stream: true }, { signal: controller.signal });
  expect(response.status).toBe(200);
  const reader = response.body!.getReader();
  expect((await reader.read()).done).toBe(false);
  const rest = (async () => {
    try {
      for (;;) if ((await reader.read()).done) return;
    } catch {
      // aborted by the test
    }
  })();
  return { abort: () => controller.abort(), rest };
}

// The model-server metrics of the Gateway API Inference Extension protocol (docs/inference-gateway.md),
// on a real runtime. The benchmark-shaped model decodes slowly enough to scrape mid-generation.
describe("gateway metrics: queued, running, KV-cache usage", () => {
  let runtime: RuntimeHandle;

  beforeAll(async () => {
    const model = await ensureTestModel("bench", "q8_0");
    runtime = await startRuntime({ model, parallel: PARALLEL, maxQueue: 2, contextSize: CONTEXT });
  }, 180_000);
  afterAll(() => runtime?.close());

  it("reads zero when idle, counts running and waiting requests and the KV cells they hold, and drops back when they end", async () => {
    const url = runtime.url;
    const idle = await scrape(url);
    expect(idle).toMatchObject({ running: 0, waiting: 0, kv: 0, load: 0 });
    expectAliasesAgree(idle);
    const idleInfo = await info(url);
    expect(idleInfo).toMatchObject({ kv_cache_usage: 0, kv_cache_cells_used: 0, kv_cache_cells_total: CONTEXT * PARALLEL });

    // Two long streams hold both sequences; a third request waits for one.
    const streams = await Promise.all([openStream(url, "one"), openStream(url, "two")]);
    const queuedController = new AbortController();
    const queued = postJson(`${url}/generate`, { prompt: "three", max_length: 2 }, { signal: queuedController.signal }).catch(() => undefined);
    const busy = await waitFor(
      async () => {
        const figures = await scrape(url);
        return figures.running === PARALLEL && figures.waiting === 1 ? figures : undefined;
      },
      { timeoutMs: 20_000, message: "timed out waiting for two requests running and one waiting" },
    );
    expectAliasesAgree(busy);
    expect(busy.load).toBe(PARALLEL + 1);
    expect(busy.kv).toBeGreaterThan(0);
    expect(busy.kv).toBeLessThanOrEqual(1);

    // The figure is the cells in use: it grows with every token the streams generate, and /info
    // shows the same kind of count.
    await waitFor(async () => (await scrape(url)).kv > busy.kv, { timeoutMs: 20_000, message: "timed out waiting for the KV usage to grow" });
    const busyInfo = await info(url);
    expect(busyInfo.kv_cache_cells_used).toBeGreaterThan(0);
    // The autoscaler's signal on /info is the same sum.
    expect(busyInfo.load).toBe(busyInfo.slots_busy + busyInfo.queue_depth);
    expect(busyInfo.load).toBe(PARALLEL + 1);
    expect(busyInfo.kv_cache_usage).toBeCloseTo(busyInfo.kv_cache_cells_used / (CONTEXT * PARALLEL), 10);

    queuedController.abort();
    await queued;
    for (const stream of streams) stream.abort();
    await Promise.all(streams.map((stream) => stream.rest));

    // The prefixes the idle sequences keep for reuse are free cells, as in vLLM's count.
    const after = await waitFor(
      async () => {
        const figures = await scrape(url);
        return figures.running === 0 && figures.waiting === 0 && figures.kv === 0 && figures.load === 0 ? figures : undefined;
      },
      { timeoutMs: 10_000, message: "timed out waiting for the metrics to drop back to idle" },
    );
    expectAliasesAgree(after);
    // The old names still work.
    const text = await (await fetch(`${url}/metrics`)).text();
    expect(text).toMatch(/^corral_runtime_slots_busy\{[^}]*\} 0$/m);
    expect(text).toMatch(/^corral_runtime_queue_depth\{[^}]*\} 0$/m);
    expect(text).toMatch(new RegExp(`^corral_runtime_slots_total\\{[^}]*\\} ${PARALLEL}$`, "m"));
  });
});
