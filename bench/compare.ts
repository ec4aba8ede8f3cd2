/**
 * `npm run bench:compare`: Corral's runtime against llama.cpp's own server (built from the same
 * llama.cpp source that node-llama-cpp ships), same model file, threads, slots and context per
 * slot, same OpenAI-style requests, alternating A/B/A/B so drift on a noisy machine cancels.
 * Prints a markdown table with the Corral/llama-server ratio per row.
 */
import { ensureTestModel } from "../test/helpers/test-models.js";
import { argValue, BenchClient, fixed, median, PIN, pinSelf, runConcurrently, table, type Server } from "./lib.js";
import { ensureLlamaServer } from "./llama-server.js";
import { startKind, type ServerKind } from "./servers.js";

const ROUNDS = Number(argValue("rounds", "3"));
const CONCURRENCIES = argValue("concurrency", "1,4,8").split(",").map(Number);
const TYPES = argValue("types", "q8_0,f16").split(",") as ("q8_0" | "f16")[];
const THREADS = Number(argValue("threads", "1"));
/** Completions each concurrent client sends per measurement; more gives steadier figures. */
const REQUESTS_PER_CLIENT = Number(argValue("requests-per-client", "2"));
const TINY = argValue("tiny", "on") === "on";
/** Corral's `--prompt-admission`: cost (its default) or all. */
const PROMPT_ADMISSION = argValue("prompt-admission", "cost");
const TOKENS = 64;
/** Time to first token: the first streamed chunk that carries generated text (servers may send an empty one first). */
const FIRST_TEXT = /"text":"[^"]/;
const CONTEXT_PER_SLOT = 2048;

/** Which llama.cpp binaries Corral's runtime loaded (see ./servers.ts). */
let corralLlamaBuild = "unknown";

async function start(kind: ServerKind, model: string, slots: number, contextPerSlot: number, binary: string): Promise<Server> {
  const server = await startKind(kind, { model, slots, contextPerSlot, threads: THREADS, llamaServer: binary, promptAdmission: PROMPT_ADMISSION });
  if (server.llamaBuild) corralLlamaBuild = server.llamaBuild;
  return server;
}

/** Every prompt is new, so neither server answers from a cache of earlier identical prompts. */
let nextPromptId = 0;

const SAMPLING = { temperature: 0.7, top_p: 0.9, top_k: 80, repeat_penalty: 1.15, repetition_penalty: 1.15 };

interface Throughput {
  tokensPerSecond: number;
  ttftMs: number[];
}

/** C concurrent streamed 64-token completions, REQUESTS_PER_CLIENT per client. */
async function throughput(server: Server, concurrency: number): Promise<Throughput> {
  const client = new BenchClient(server.url, concurrency);
  const ttftMs: number[] = [];
  let tokens = 0;
  const seconds = await runConcurrently(concurrency, concurrency * REQUESTS_PER_CLIENT, async (i) => {
    const response = await client.post("/v1/completions", {
      prompt: `Once upon a time, in a village number ${nextPromptId++}, there lived`,
      max_tokens: TOKENS,
      stream: true,
      stream_options: { include_usage: true },
      seed: i,
      ...SAMPLING,
    }, FIRST_TEXT);
    if (response.status !== 200) throw new Error(`HTTP ${response.status}: ${response.body.slice(0, 300)}`);
    ttftMs.push(response.firstMatchMs);
    const count = /"completion_tokens":(\d+)/.exec(response.body)?.[1];
    if (count === undefined) throw new Error(`no usage in the stream: ${response.body.slice(-300)}`);
    tokens += Number(count);
  });
  client.close();
  return { tokensPerSecond: tokens / seconds, ttftMs };
}

/** Requests/s at C=16 with 8-token completions, plain or streamed. */
async function requestsPerSecond(server: Server, streamed: boolean): Promise<number> {
  const concurrency = 16;
  const client = new BenchClient(server.url, concurrency);
  const total = 800;
  const seconds = await runConcurrently(concurrency, total, async (i) => {
    const response = await client.post("/v1/completions", { prompt: `request ${nextPromptId++}`, max_tokens: 8, stream: streamed, ...SAMPLING });
    if (response.status !== 200) throw new Error(`HTTP ${response.status}: ${response.body.slice(0, 300)}`);
  });
  client.close();
  return total / seconds;
}

/** Runs `measure` on both servers in A/B/A/B order; servers are started once per row. */
async function abRounds<T>(model: string, slots: number, contextPerSlot: number, binary: string, measure: (server: Server) => Promise<T>) {
  const results: Record<ServerKind, T[]> = { corral: [], "llama-server": [] };
  const servers: Record<ServerKind, Server> = {
    corral: await start("corral", model, slots, contextPerSlot, binary),
    "llama-server": await start("llama-server", model, slots, contextPerSlot, binary),
  };
  try {
    for (const kind of ["corral", "llama-server"] as const) await measure(servers[kind]); // warm-up
    for (let round = 0; round < ROUNDS; round++) {
      const order: ServerKind[] = round % 2 === 0 ? ["corral", "llama-server"] : ["llama-server", "corral"];
      for (const kind of order) results[kind].push(await measure(servers[kind]));
    }
  } finally {
    await Promise.all(Object.values(servers).map((server) => server.stop()));
  }
  return results;
}

async function main(): Promise<void> {
  const binary = ensureLlamaServer();
  if (!binary) return;
  pinSelf(1);
  const rows: (string | number)[][] = [];
  for (const type of TYPES) {
    const model = await ensureTestModel("bench", type);
    for (const concurrency of CONCURRENCIES) {
      const results = await abRounds(model, concurrency, CONTEXT_PER_SLOT, binary, (server) => throughput(server, concurrency));
      const tps = (kind: ServerKind) => median(results[kind].map((r) => r.tokensPerSecond));
      const ttft = (kind: ServerKind) => median(results[kind].flatMap((r) => r.ttftMs));
      rows.push([`${type.toUpperCase()} C=${concurrency} tok/s`, fixed(tps("corral")), fixed(tps("llama-server")), fixed(tps("corral") / tps("llama-server"), 2)]);
      rows.push([`${type.toUpperCase()} C=${concurrency} TTFT p50 ms`, fixed(ttft("corral")), fixed(ttft("llama-server")), fixed(ttft("llama-server") / ttft("corral"), 2)]);
      console.error(`${type} C=${concurrency} done`);
    }
  }
  const tiny = await ensureTestModel("tiny");
  for (const streamed of TINY ? [false, true] : []) {
    const results = await abRounds(tiny, 16, 256, binary, (server) => requestsPerSecond(server, streamed));
    const rps = (kind: ServerKind) => median(results[kind]);
    rows.push([`tiny C=16 ${streamed ? "streamed" : "plain"} req/s`, fixed(rps("corral")), fixed(rps("llama-server")), fixed(rps("corral") / rps("llama-server"), 2)]);
  }
  console.log(`\nCorral runtime vs llama-server: ${THREADS} thread(s), ${TOKENS}-token completions, ${CONTEXT_PER_SLOT} context per slot, ` +
    `Corral with --prompt-admission ${PROMPT_ADMISSION}, median of ${ROUNDS} A/B rounds${PIN ? ", servers pinned to CPU 0 and this client to CPU 1" : ", servers and client share the CPUs"}. ` +
    `Corral's llama.cpp: ${corralLlamaBuild === "localBuild" ? "local build for this CPU, as llama-server's" : `${corralLlamaBuild} (llama-server is built for this CPU; \`npm run build:llama\` compares like for like)`}. ` +
    `Ratio > 1 means Corral is better (for TTFT: llama-server's / Corral's).\n`);
  console.log(table(["row", "Corral", "llama-server", "ratio"], rows));
}

await main();
