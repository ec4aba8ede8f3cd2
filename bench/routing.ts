/**
 * `npm run bench:routing`: the router's two routing strategies (`--routing least-load` and
 * `--routing prefix`) in front of real runtimes, on a multi-turn chat workload.
 *
 * - N runtimes (`--routing-runtimes`, default 3) with the bench-shaped Q8_0 model, one thread and
 *   `--parallel` sequences each, behind one `corral router --upstream m=...,m=...` process (one
 *   model with N endpoints, rate limits off). With `--pin` (bench/lib.ts) runtime i runs on CPU
 *   i % 2, the router and this load generator on CPU 1.
 * - Workload: `--conversations` chats, each on one of `--system-prompts` long system prompts,
 *   `--turns` turns each; a turn appends the previous turn's real answer and a new user message.
 *   Streamed `/v1/chat/completions`, `temperature: 0`, `--max-tokens` tokens.
 * - Open loop: requests start at a fixed `--rate` (req/s, `--arrivals fixed|poisson`); each
 *   start takes a random conversation among those waiting for their next turn (a turn is sent
 *   only after its previous answer). When none is waiting, the start is late (counted).
 * - Each run of a strategy starts on fresh runtimes and a fresh router, so no cache carries over;
 *   the strategies alternate over `--rounds` rounds (A B, B A, ...) and the table shows medians.
 *
 * Per strategy: time to first token p50/p99 (client side: the first SSE chunk that carries
 * generated text), completion tokens/s over the round, prompt tokens the runtimes reused per
 * request and their share of all prompt tokens (from the runtimes' /metrics), failed requests.
 */
import { spawn, type ChildProcess } from "node:child_process";
import http from "node:http";
import path from "node:path";
import { PACKAGE_ROOT } from "../common/package-root.js";
import { withRuntimeProcessEnv } from "../common/runtime-env.js";
import { ROUTING_STRATEGIES, type RoutingStrategy } from "../common/routing.js";
import { CLI, freePort } from "../test/helpers/runtime.js";
import { ensureTestModel } from "../test/helpers/test-models.js";
import { waitFor } from "../test/helpers/wait.js";
import { argValue, seededRandom, fixed, median, percentile, PIN, pinned, pinSelf, table } from "./lib.js";

const RUNTIMES = Number(argValue("routing-runtimes", "3"));
const PARALLEL = Number(argValue("parallel", "4"));
const CONTEXT_SIZE = Number(argValue("context-size", "2048"));
const CONVERSATIONS = Number(argValue("conversations", "24"));
const TURNS = Number(argValue("turns", "4"));
const SYSTEM_PROMPTS = Number(argValue("system-prompts", "3"));
const SYSTEM_PROMPT_CHARS = Number(argValue("system-prompt-chars", "400"));
const MAX_TOKENS = Number(argValue("max-tokens", "16"));
const RATE = Number(argValue("rate", "0.7"));
const ARRIVALS = argValue("arrivals", "fixed");
const ROUNDS = Number(argValue("rounds", "2"));
const STRATEGIES = argValue("strategies", ROUTING_STRATEGIES.join(",")).split(",") as RoutingStrategy[];
const THREADS = 1;
const MODEL_ID = "m";
/** The CPU of the router and of this process with `--pin`; runtime i gets CPU i % 2. */
const CLIENT_CPU = 1;

for (const strategy of STRATEGIES) {
  if (!ROUTING_STRATEGIES.includes(strategy)) throw new Error(`--strategies: unknown strategy "${strategy}" (${ROUTING_STRATEGIES.join(", ")})`);
}
if (!["fixed", "poisson"].includes(ARRIVALS)) throw new Error(`--arrivals must be fixed or poisson, got "${ARRIVALS}"`);


const WORDS = (
  "account answer billing careful clear concise context customer detail document example explain follow format " +
  "friendly guide helpful history invoice issue keep language list mention never note order policy polite question " +
  "reply request short source step summary support team tone topic usage user value warranty write"
).split(" ");

function words(next: () => number, chars: number): string {
  const out: string[] = [];
  let length = 0;
  while (length < chars) {
    const word = WORDS[Math.floor(next() * WORDS.length)]!;
    out.push(word);
    length += word.length + 1;
  }
  return out.join(" ");
}

/** Each system prompt opens differently, so no two share a start beyond a few tokens. */
const systemPrompts = Array.from({ length: SYSTEM_PROMPTS }, (_, i) => {
  const next = seededRandom(1000 + i);
  return `Prompt ${i}: you are the assistant of team ${i}. ${words(next, SYSTEM_PROMPT_CHARS - 40)}`;
});

/** Each conversation's system prompt, drawn at random (not c % n, which lines up with round-robin). */
const systemPromptOf = (() => {
  const next = seededRandom(99);
  return Array.from({ length: CONVERSATIONS }, () => Math.floor(next() * SYSTEM_PROMPTS));
})();

/** The user's message at each turn of each conversation (answers come from the model). */
const userMessages = Array.from({ length: CONVERSATIONS }, (_, c) => {
  const next = seededRandom(5000 + c);
  return Array.from({ length: TURNS }, (_, turn) => `Question ${c}.${turn}: ${words(next, 60)}?`);
});

interface Message {
  role: "system" | "user" | "assistant";
  content: string;
}

interface TurnResult {
  ok: boolean;
  ttftMs: number;
  text: string;
  completionTokens: number;
}

/** One streamed chat completion: the time to the first chunk with text, the answer, its token count. */
function chatTurn(base: string, agent: http.Agent, messages: readonly Message[]): Promise<TurnResult> {
  const payload = Buffer.from(
    JSON.stringify({ model: MODEL_ID, messages, max_tokens: MAX_TOKENS, temperature: 0, stream: true, stream_options: { include_usage: true } }),
  );
  return new Promise((resolve) => {
    const started = performance.now();
    let ttftMs = -1;
    let text = "";
    let completionTokens = 0;
    let failed = false;
    let buffer = "";
    const request = http.request(
      new URL("/v1/chat/completions", base),
      { method: "POST", agent, headers: { "content-type": "application/json", "content-length": payload.length } },
      (response) => {
        if (response.statusCode !== 200) {
          response.resume();
          response.on("end", () => resolve({ ok: false, ttftMs, text, completionTokens }));
          return;
        }
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => {
          buffer += chunk;
          let end = buffer.indexOf("\n\n");
          while (end !== -1) {
            const event = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            end = buffer.indexOf("\n\n");
            if (!event.startsWith("data: ")) continue;
            const data = event.slice(6);
            if (data === "[DONE]") continue;
            const parsed = JSON.parse(data) as {
              error?: unknown;
              choices?: { delta?: { content?: string } }[];
              usage?: { completion_tokens: number } | null;
            };
            if (parsed.error) failed = true;
            const content = parsed.choices?.[0]?.delta?.content;
            if (content) {
              if (ttftMs < 0) ttftMs = performance.now() - started;
              text += content;
            }
            if (parsed.usage) completionTokens = parsed.usage.completion_tokens;
          }
        });
        response.on("end", () => resolve({ ok: !failed, ttftMs, text, completionTokens }));
        response.on("error", () => resolve({ ok: false, ttftMs, text, completionTokens }));
      },
    );
    request.on("error", () => resolve({ ok: false, ttftMs, text, completionTokens }));
    request.end(payload);
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  await exited;
}

interface Process {
  url: string;
  stop(): Promise<void>;
}

async function startRuntime(model: string, cpu: number): Promise<Process> {
  const port = await freePort();
  const child = spawn(
    ...pinned(cpu, process.execPath, [CLI, "runtime", "--model", model, "--model-id", MODEL_ID, "--host", "127.0.0.1", "--port", String(port),
      "--threads", String(THREADS), "--parallel", String(PARALLEL), "--context-size", String(CONTEXT_SIZE), "--max-queue", "1024", "--log-level", "warn"]),
    { stdio: ["ignore", "ignore", "inherit"], env: withRuntimeProcessEnv(process.env) },
  );
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => (await fetch(`${url}/readyz`)).ok, { timeoutMs: 120_000, message: "timed out waiting for the runtime to be ready" });
  return { url, stop: () => stopChild(child) };
}

/** `corral router` in a process of its own (through its commander command), as bench/router.ts. */
async function startRouter(upstreams: readonly string[], strategy: RoutingStrategy): Promise<Process> {
  const port = await freePort();
  const main = path.join(PACKAGE_ROOT, "dist/router/main.js");
  const script = `const { routerCommand } = await import(${JSON.stringify(main)}); await routerCommand().parseAsync(process.argv.slice(1), { from: "user" });`;
  const child = spawn(
    ...pinned(CLIENT_CPU, process.execPath, ["--input-type=module", "-e", script, "--", "--upstream", upstreams.map((url) => `${MODEL_ID}=${url}`).join(","),
      "--routing", strategy, "--host", "127.0.0.1", "--port", String(port), "--rate-limit-points", "0", "--log-level", "warn"]),
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => (await fetch(`${url}/health`)).ok, { timeoutMs: 30_000, message: "timed out waiting for the router to be ready" });
  return { url, stop: () => stopChild(child) };
}

/** Prompt tokens processed and reused, summed over the runtimes' /metrics. */
async function promptTokens(runtimes: readonly Process[]): Promise<{ total: number; reused: number }> {
  let total = 0;
  let reused = 0;
  for (const runtime of runtimes) {
    const text = await (await fetch(`${runtime.url}/metrics`)).text();
    // Lines carry the registry's default label: corral_runtime_prompt_tokens_total{model="m"} 123
    total += Number(/^corral_runtime_prompt_tokens_total(?:\{[^}]*\})? (\S+)$/m.exec(text)?.[1] ?? NaN);
    reused += Number(/^corral_runtime_prompt_tokens_reused_total(?:\{[^}]*\})? (\S+)$/m.exec(text)?.[1] ?? NaN);
  }
  return { total, reused };
}

interface RoundResult {
  ttftMs: number[];
  tokensPerSecond: number;
  reusedPerRequest: number;
  reusedShare: number;
  promptPerRequest: number;
  failed: number;
  late: number;
  seconds: number;
  startSeconds: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/** The workload once, open loop, against the router; returns what the client and the runtimes saw. */
async function workload(router: string, runtimes: readonly Process[]): Promise<Omit<RoundResult, "startSeconds">> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONVERSATIONS });
  const histories: Message[][] = Array.from({ length: CONVERSATIONS }, (_, c) => [{ role: "system", content: systemPrompts[systemPromptOf[c]!]! }]);
  const turnsDone = new Array<number>(CONVERSATIONS).fill(0);
  /** Conversations waiting for their next turn (users come back in random order). */
  const waiting = Array.from({ length: CONVERSATIONS }, (_, c) => c);
  let wake: (() => void) | undefined;
  const gaps = seededRandom(42);
  const picks = seededRandom(7);
  const total = CONVERSATIONS * TURNS;
  const ttftMs: number[] = [];
  let failed = 0;
  let late = 0;
  let completionTokens = 0;
  const pending: Promise<void>[] = [];
  const before = await promptTokens(runtimes);

  const started = performance.now();
  let due = 0;
  for (let i = 0; i < total; i++) {
    await sleep(started + due - performance.now());
    if (waiting.length === 0) {
      // Every conversation awaits an answer: this start waits for one, and the schedule restarts from it.
      late++;
      await new Promise<void>((resolve) => (wake = resolve));
      due = performance.now() - started;
    }
    due += ARRIVALS === "poisson" ? (-Math.log(1 - gaps()) / RATE) * 1000 : 1000 / RATE;
    // A random waiting conversation, not the longest waiting: a fixed cycle would line up with
    // least-load's round-robin ties and pin each conversation to one runtime by accident.
    const c = waiting.splice(Math.floor(picks() * waiting.length), 1)[0]!;
    const history = histories[c]!;
    history.push({ role: "user", content: userMessages[c]![turnsDone[c]!]! });
    pending.push(
      chatTurn(router, agent, history).then((result) => {
        if (!result.ok) failed++;
        else if (result.ttftMs >= 0) ttftMs.push(result.ttftMs);
        completionTokens += result.completionTokens;
        history.push({ role: "assistant", content: result.ok ? result.text : "" });
        if (++turnsDone[c]! < TURNS) {
          waiting.push(c);
          wake?.();
          wake = undefined;
        }
      }),
    );
  }
  await Promise.all(pending);
  const seconds = (performance.now() - started) / 1000;
  agent.destroy();
  const after = await promptTokens(runtimes);
  const reused = after.reused - before.reused;
  const prompt = after.total - before.total;
  return {
    ttftMs,
    tokensPerSecond: completionTokens / seconds,
    reusedPerRequest: reused / total,
    reusedShare: reused / prompt,
    promptPerRequest: prompt / total,
    failed,
    late,
    seconds,
  };
}

/** One strategy on fresh runtimes and a fresh router: nothing cached from an earlier run. */
async function round(model: string, strategy: RoutingStrategy): Promise<RoundResult> {
  const startedAt = performance.now();
  const runtimes: Process[] = [];
  let router: Process | undefined;
  try {
    runtimes.push(...(await Promise.all(Array.from({ length: RUNTIMES }, (_, i) => startRuntime(model, i % 2)))));
    router = await startRouter(runtimes.map((runtime) => runtime.url), strategy);
    // Warm-up: one short request straight to each runtime (its first decode), unrelated to the workload.
    const warm = new http.Agent({ keepAlive: false });
    await Promise.all(runtimes.map((runtime) => chatTurn(runtime.url, warm, [{ role: "user", content: "warm up" }])));
    const startSeconds = (performance.now() - startedAt) / 1000;
    return { ...(await workload(router.url, runtimes)), startSeconds };
  } finally {
    await router?.stop();
    await Promise.all(runtimes.map((runtime) => runtime.stop()));
  }
}

async function main(): Promise<void> {
  pinSelf(CLIENT_CPU);
  const model = await ensureTestModel("bench", "q8_0");
  const results = new Map<RoutingStrategy, RoundResult[]>(STRATEGIES.map((strategy) => [strategy, []]));
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? STRATEGIES : [...STRATEGIES].reverse();
    for (const strategy of order) {
      const result = await round(model, strategy);
      results.get(strategy)!.push(result);
      console.error(
        `round ${r + 1}/${ROUNDS} ${strategy}: TTFT p50 ${fixed(median(result.ttftMs), 0)} ms p99 ${fixed(percentile(result.ttftMs, 99), 0)} ms, ` +
          `${fixed(result.tokensPerSecond, 2)} tok/s, reused ${fixed(result.reusedPerRequest, 0)} of ${fixed(result.promptPerRequest, 0)} prompt tokens/request ` +
          `(${fixed(result.reusedShare * 100, 0)}%), failed ${result.failed}, late starts ${result.late}, ${CONVERSATIONS * TURNS} requests in ${fixed(result.seconds, 1)} s (+${fixed(result.startSeconds, 1)} s start-up)`,
      );
    }
  }

  const of = (strategy: RoutingStrategy, value: (result: RoundResult) => number) => median(results.get(strategy)!.map(value));
  const rows = STRATEGIES.map((strategy) => [
    strategy,
    fixed(of(strategy, (r) => median(r.ttftMs)), 0),
    fixed(of(strategy, (r) => percentile(r.ttftMs, 99)), 0),
    fixed(of(strategy, (r) => r.tokensPerSecond), 2),
    fixed(of(strategy, (r) => r.reusedPerRequest), 0),
    `${fixed(of(strategy, (r) => r.reusedShare) * 100, 0)}%`,
    fixed(of(strategy, (r) => r.promptPerRequest), 0),
    results.get(strategy)!.map((r) => r.failed).join(" / "),
    results.get(strategy)!.map((r) => r.late).join(" / "),
  ]);
  if (STRATEGIES.length === 2) {
    const [a, b] = STRATEGIES as [RoutingStrategy, RoutingStrategy];
    const ratio = (value: (result: RoundResult) => number, digits = 2) => fixed(of(b, value) / of(a, value), digits);
    rows.push([
      `${b} / ${a}`,
      ratio((r) => median(r.ttftMs)),
      ratio((r) => percentile(r.ttftMs, 99)),
      ratio((r) => r.tokensPerSecond),
      ratio((r) => r.reusedPerRequest),
      ratio((r) => r.reusedShare),
      ratio((r) => r.promptPerRequest),
      "",
      "",
    ]);
  }
  const startSeconds = median([...results.values()].flat().map((r) => r.startSeconds));
  console.log(
    `\nRouting strategies: ${RUNTIMES} runtimes (bench-shaped Q8_0, ${THREADS} thread, ${PARALLEL} sequences of ${CONTEXT_SIZE} tokens) behind one router ` +
      `(rate limits off); ${CONVERSATIONS} conversations x ${TURNS} turns on ${SYSTEM_PROMPTS} system prompts of ~${SYSTEM_PROMPT_CHARS} tokens, ` +
      `streamed chat, max_tokens ${MAX_TOKENS}, temperature 0; open loop at ${RATE} req/s (${ARRIVALS} arrivals); ` +
      `median of ${ROUNDS} alternating rounds, each on fresh runtimes and router (start-up ${fixed(startSeconds, 1)} s, not timed); ` +
      `${PIN ? `runtime i pinned to CPU i % 2, router and client to CPU ${CLIENT_CPU}` : "nothing pinned"}\n`,
  );
  console.log(
    table(
      ["strategy", "TTFT p50 (ms)", "TTFT p99 (ms)", "completion tok/s", "prompt tokens reused / request", "reused share", "prompt tokens / request", "failed (per round)", "late starts (per round)"],
      rows,
    ),
  );
}

await main();
