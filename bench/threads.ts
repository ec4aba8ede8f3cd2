/**
 * `node dist/bench/threads.js`: where each server spends its CPU while serving. Starts Corral's
 * runtime and llama-server like `bench:compare`, sends the same load to each in A/B rounds, and
 * reads every thread's CPU time from /proc before and after. Prints, per round, the throughput,
 * the busiest thread's share of the wall time and its CPU per generated token (the decoding
 * thread: while it is ~100% busy, throughput is 1 / its CPU per token), the other threads' CPU
 * per token, and the load generator's.
 *
 *   --model bench|tiny   --type q8_0|f16   --concurrency C   --requests-per-client N
 *   --rounds N   --stream on|off (tiny only; bench-model requests always stream)
 */
import fs from "node:fs";
import { ensureTestModel } from "../test/helpers/test-models.js";
import { argValue, BenchClient, fixed, PIN, pinSelf, runConcurrently, table, type Server } from "./lib.js";
import { ensureLlamaServer } from "./llama-server.js";
import { startKind, type ServerKind } from "./servers.js";

const KIND = argValue("model", "bench") as "bench" | "tiny";
const TYPE = argValue("type", "f16") as "q8_0" | "f16";
const CONCURRENCY = Number(argValue("concurrency", KIND === "tiny" ? "16" : "4"));
const PER_CLIENT = Number(argValue("requests-per-client", KIND === "tiny" ? "50" : "3"));
const ROUNDS = Number(argValue("rounds", "3"));
const STREAM = argValue("stream", "off") === "on";
/** Clock ticks per second for /proc's utime and stime (USER_HZ, 100 on Linux). */
const TICKS = 100;

interface ThreadTimes {
  [tid: string]: { main: boolean; seconds: number };
}

function threadTimes(pid: number): ThreadTimes {
  const times: ThreadTimes = {};
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      // Fields after the command name: state is field 3, utime 14, stime 15.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      times[tid] = { main: tid === String(pid), seconds: (Number(fields[11]) + Number(fields[12])) / TICKS };
    } catch {
      // The thread ended between listing and reading.
    }
  }
  return times;
}

let nextPromptId = 0;
const SAMPLING = { temperature: 0.7, top_p: 0.9, top_k: 80, repeat_penalty: 1.15, repetition_penalty: 1.15 };

async function measure(server: Server) {
  const client = new BenchClient(server.url, CONCURRENCY);
  const before = threadTimes(server.child.pid!);
  const clientBefore = process.cpuUsage();
  let tokens = 0;
  const seconds = await runConcurrently(CONCURRENCY, CONCURRENCY * PER_CLIENT, async (i) => {
    const body = KIND === "tiny"
      ? { prompt: `request ${nextPromptId++}`, max_tokens: 8, stream: STREAM, ...SAMPLING }
      : { prompt: `Once upon a time, in a village number ${nextPromptId++}, there lived`, max_tokens: 64, stream: true, stream_options: { include_usage: true }, seed: i, ...SAMPLING };
    const response = await client.post("/v1/completions", body);
    if (response.status !== 200) throw new Error(`HTTP ${response.status}: ${response.body.slice(0, 300)}`);
    const usage = /"completion_tokens":(\d+)/.exec(response.body)?.[1];
    tokens += usage === undefined ? 0 : Number(usage);
  });
  const clientUsage = process.cpuUsage(clientBefore);
  const after = threadTimes(server.child.pid!);
  client.close();
  const used = Object.entries(after)
    .map(([tid, t]) => ({ main: t.main, seconds: t.seconds - (before[tid]?.seconds ?? 0) }))
    .sort((a, b) => b.seconds - a.seconds);
  const busiest = used[0]!;
  const others = used.slice(1).reduce((sum, t) => sum + t.seconds, 0);
  return { seconds, tokens, requests: CONCURRENCY * PER_CLIENT, busiest, others, client: (clientUsage.user + clientUsage.system) / 1e6 };
}

async function main(): Promise<void> {
  const binary = ensureLlamaServer();
  if (!binary) return;
  pinSelf(1);
  const model = KIND === "tiny" ? await ensureTestModel("tiny") : await ensureTestModel("bench", TYPE);
  const setup = { model, slots: CONCURRENCY, contextPerSlot: KIND === "tiny" ? 256 : 2048, threads: 1, llamaServer: binary };
  const servers = { corral: await startKind("corral", setup), "llama-server": await startKind("llama-server", setup) };
  const rows: (string | number)[][] = [];
  // Per generated token on the bench model, per request on the tiny one.
  const unit = KIND === "tiny" ? "request" : "token";
  try {
    for (const server of Object.values(servers)) await measure(server); // warm-up
    for (let round = 0; round < ROUNDS; round++) {
      const order: ServerKind[] = round % 2 === 0 ? ["corral", "llama-server"] : ["llama-server", "corral"];
      for (const kind of order) {
        const m = await measure(servers[kind]);
        const per = KIND === "tiny" ? m.requests : m.tokens;
        rows.push([round + 1, kind, fixed(per / m.seconds), `${fixed((100 * m.busiest.seconds) / m.seconds, 0)}%${m.busiest.main ? " (main)" : ""}`,
          fixed((1000 * m.busiest.seconds) / per, 3), fixed((1000 * m.others) / per, 3), fixed((1000 * m.client) / per, 3)]);
      }
    }
  } finally {
    await Promise.all(Object.values(servers).map((server) => server.stop()));
  }
  console.log(`\n${KIND === "tiny" ? "tiny" : `bench ${TYPE.toUpperCase()}`}, C=${CONCURRENCY}, ${CONCURRENCY * PER_CLIENT} requests per round` +
    `${PIN ? ", servers pinned to CPU 0 and this client to CPU 1" : ", servers and client share the CPUs"}; Corral's llama.cpp: ${servers.corral.llamaBuild}.\n`);
  console.log(table(["round", "server", `${unit}s/s`, "busiest thread busy", `its CPU ms/${unit}`, `other threads CPU ms/${unit}`, `load generator CPU ms/${unit}`], rows));
}

await main();
