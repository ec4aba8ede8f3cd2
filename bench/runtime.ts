/**
 * `npm run bench:runtime`: Corral's runtime over HTTP against the same work done with
 * node-llama-cpp in-process (no HTTP), on the benchmark-shaped Q8_0 model with 1 thread.
 * The ratio HTTP/in-process is Corral's overhead (goal >= 0.95). Also requests/s on the tiny
 * model at concurrency 16 with 8-token completions. Prints markdown tables.
 */
import { getLlama, LlamaCompletion } from "node-llama-cpp";
import { ensureTestModel } from "../test/helpers/test-models.js";
import { CLI, freePort } from "../test/helpers/runtime.js";
import { argValue, BenchClient, fixed, median, percentile, runConcurrently, startServer, table, type Server } from "./lib.js";
import { withRuntimeProcessEnv } from "../common/runtime-env.js";

const ROUNDS = Number(argValue("rounds", "3"));
const CONCURRENCIES = argValue("concurrency", "1,4,8").split(",").map(Number);
const TOKENS = 64;
/** Time to first token: the first streamed chunk that carries generated text (servers may send an empty one first). */
const FIRST_TEXT = /"text":"[^"]/;
const CONTEXT_PER_SEQUENCE = 2048;
const THREADS = 1;

interface Sample {
  tokensPerSecond: number;
  ttftMs: number[];
}

async function startRuntime(model: string, parallel: number, contextSize: number): Promise<Server> {
  const port = await freePort();
  return startServer(process.execPath, [CLI, "runtime", "--model", model, "--host", "127.0.0.1", "--port", String(port),
    "--threads", String(THREADS), "--parallel", String(parallel), "--context-size", String(contextSize), "--max-queue", "1024",
    "--log-level", "warn"], port, "/readyz", withRuntimeProcessEnv(process.env));
}

const prompt = (i: number) => `Once upon a time, in a village number ${i}, there lived`;

/** C concurrent streamed completions of 64 tokens through the runtime's HTTP API. */
async function httpSample(url: string, concurrency: number): Promise<Sample> {
  const client = new BenchClient(url, concurrency);
  const requests = concurrency * 2;
  const ttftMs: number[] = [];
  let tokens = 0;
  const seconds = await runConcurrently(concurrency, requests, async (i) => {
    const response = await client.post("/v1/completions", {
      prompt: prompt(i),
      max_tokens: TOKENS,
      stream: true,
      stream_options: { include_usage: true },
      seed: i,
    }, FIRST_TEXT);
    if (response.status !== 200) throw new Error(`HTTP ${response.status}: ${response.body}`);
    ttftMs.push(response.firstMatchMs);
    const usage = /"usage":\{"prompt_tokens":\d+,"completion_tokens":(\d+)/.exec(response.body);
    tokens += Number(usage?.[1] ?? 0);
  });
  client.close();
  return { tokensPerSecond: tokens / seconds, ttftMs };
}

/** The same work with node-llama-cpp in this process: C sequences of one context. */
async function inProcessSample(modelPath: string, concurrency: number): Promise<Sample> {
  const llama = await getLlama({ gpu: false, build: "never", maxThreads: THREADS });
  const model = await llama.loadModel({ modelPath });
  const context = await model.createContext({
    sequences: concurrency,
    contextSize: CONTEXT_PER_SEQUENCE,
    batchSize: Math.min(512, CONTEXT_PER_SEQUENCE * concurrency),
    threads: THREADS,
  });
  const completions = Array.from({ length: concurrency }, () => new LlamaCompletion({ contextSequence: context.getSequence() }));
  const free = [...completions];
  const ttftMs: number[] = [];
  let tokens = 0;
  const seconds = await runConcurrently(concurrency, concurrency * 2, async (i) => {
    const completion = free.pop()!;
    const started = performance.now();
    let first = -1;
    await completion.generateCompletion(prompt(i), {
      maxTokens: TOKENS,
      seed: i,
      temperature: 0.7,
      topK: 80,
      topP: 0.9,
      repeatPenalty: { penalty: 1.15, lastTokens: 64 },
      onToken: (t) => {
        if (first < 0) first = performance.now() - started;
        tokens += t.length;
      },
    });
    ttftMs.push(first);
    free.push(completion);
  });
  await context.dispose();
  await model.dispose();
  await llama.dispose();
  return { tokensPerSecond: tokens / seconds, ttftMs };
}

async function tinyRequestsPerSecond(tiny: string) {
  const concurrency = 16;
  const runtime = await startRuntime(tiny, concurrency, 256);
  const client = new BenchClient(runtime.url, concurrency);
  const results: Record<string, { rps: number; p50: number; p99: number }[]> = { plain: [], streamed: [] };
  try {
    for (let round = 0; round < ROUNDS; round++) {
      for (const mode of ["plain", "streamed"] as const) {
        const latencies: number[] = [];
        const total = 1200;
        const seconds = await runConcurrently(concurrency, total, async (i) => {
          const response = await client.post("/generate", { prompt: `request ${i}`, max_length: 8, stream: mode === "streamed" });
          if (response.status !== 200) throw new Error(`HTTP ${response.status}: ${response.body}`);
          latencies.push(response.totalMs);
        });
        results[mode]!.push({ rps: total / seconds, p50: median(latencies), p99: percentile(latencies, 99) });
      }
    }
  } finally {
    client.close();
    await runtime.stop();
  }
  return results;
}

async function main(): Promise<void> {
  const bench = await ensureTestModel("bench", "q8_0");
  const tiny = await ensureTestModel("tiny");
  const rows: (string | number)[][] = [];
  for (const concurrency of CONCURRENCIES) {
    const http: Sample[] = [];
    const local: Sample[] = [];
    const runtime = await startRuntime(bench, concurrency, CONTEXT_PER_SEQUENCE);
    try {
      await httpSample(runtime.url, concurrency); // warm-up
      // Alternate A/B so drift on a noisy machine hits both sides alike.
      for (let round = 0; round < ROUNDS; round++) {
        http.push(await httpSample(runtime.url, concurrency));
        local.push(await inProcessSample(bench, concurrency));
      }
    } finally {
      await runtime.stop();
    }
    const httpTps = median(http.map((s) => s.tokensPerSecond));
    const localTps = median(local.map((s) => s.tokensPerSecond));
    const httpTtft = http.flatMap((s) => s.ttftMs);
    const localTtft = local.flatMap((s) => s.ttftMs);
    rows.push([
      concurrency,
      fixed(httpTps),
      fixed(localTps),
      fixed(httpTps / localTps, 2),
      fixed(median(httpTtft)),
      fixed(percentile(httpTtft, 99)),
      fixed(median(localTtft)),
      fixed(percentile(localTtft, 99)),
    ]);
    console.error(`C=${concurrency} done`);
  }
  console.log(`\nRuntime vs in-process node-llama-cpp: bench-shaped Q8_0 model, ${THREADS} thread, ${TOKENS}-token completions, ` +
    `${CONTEXT_PER_SEQUENCE} context per sequence, median of ${ROUNDS} alternating rounds\n`);
  console.log(table(
    ["C", "HTTP tok/s", "in-process tok/s", "ratio", "HTTP TTFT p50 ms", "HTTP TTFT p99 ms", "in-process TTFT p50 ms", "in-process TTFT p99 ms"],
    rows,
  ));

  const tinyResults = await tinyRequestsPerSecond(tiny);
  console.log(`\nTiny model, concurrency 16, 8-token completions through /generate (median of ${ROUNDS} rounds)\n`);
  console.log(table(
    ["mode", "requests/s", "latency p50 ms", "latency p99 ms"],
    (["plain", "streamed"] as const).map((mode) => {
      const runs = tinyResults[mode]!;
      return [mode, fixed(median(runs.map((r) => r.rps))), fixed(median(runs.map((r) => r.p50))), fixed(median(runs.map((r) => r.p99)))];
    }),
  ));
}

await main();
