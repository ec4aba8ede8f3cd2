/**
 * `npm run bench:router`: the same requests straight to a runtime and through the router, in one
 * run (A/B alternated so drift on a noisy machine hits both alike):
 * - throughput at concurrency 16, tiny model, 8-token completions: routed/direct (goal >= 0.95);
 * - latency the router adds at concurrency 1 (p50 goal < 1 ms), p50 and p99;
 * - time for one streamed chunk to cross the router (chunks stamped by an SSE source in this process);
 * - the cost of one rate-limit check in a local Redis (and in memory), p50 and p99;
 * - what a key's quota checks add per request (docs/keys.md: the key lookup, its own rate limit
 *   and a token-budget reservation in Redis; the settlement after the answer is off the path): a
 *   second router with a keys file and a local Redis against the first, on the trivial upstream.
 * The router runs as its own process (`corral router --upstream`), rate limits off for the A/B
 * parts so that only proxying is measured. Prints markdown tables.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import { pino } from "pino";
import { PACKAGE_ROOT } from "../common/package-root.js";
import { RateLimiter } from "../router/ratelimit.js";
import { CLI, freePort } from "../test/helpers/runtime.js";
import { waitFor } from "../test/helpers/wait.js";
import { ensureTestModel } from "../test/helpers/test-models.js";
import { argValue, BenchClient, fixed, median, percentile, PIN, pinned, pinSelf, runConcurrently, table } from "./lib.js";
import { withRuntimeProcessEnv } from "../common/runtime-env.js";

const ROUNDS = Number(argValue("rounds", "5"));
const CONCURRENCY = 16;
const REQUESTS_PER_ROUND = Number(argValue("requests", "1200"));
const LATENCY_SAMPLES = Number(argValue("latency-samples", "400"));
const THREADS = 1;
// `--pin` (bench/lib.ts): the runtime on CPU 0, the router and this load generator on CPU 1.

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  await exited;
}

async function startRuntime(model: string) {
  const port = await freePort();
  const child = spawn(
    ...pinned(0, process.execPath, [CLI, "runtime", "--model", model, "--model-id", "tiny", "--host", "127.0.0.1", "--port", String(port),
      "--threads", String(THREADS), "--parallel", String(CONCURRENCY), "--context-size", "256", "--max-queue", "1024", "--log-level", "warn"]),
    { stdio: ["ignore", "ignore", "inherit"], env: withRuntimeProcessEnv(process.env) },
  );
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => (await fetch(`${url}/readyz`)).ok, { timeoutMs: 120_000, message: "timed out waiting for the runtime to be ready" });
  return { url, stop: () => stopChild(child) };
}

/** `corral router --upstream ...` in a process of its own (through its commander command). */
async function startRouter(upstreams: string, extra: string[] = ["--rate-limit-points", "0"]) {
  const port = await freePort();
  const main = path.join(PACKAGE_ROOT, "dist/router/main.js");
  const script = `const { routerCommand } = await import(${JSON.stringify(main)}); await routerCommand().parseAsync(process.argv.slice(1), { from: "user" });`;
  const child = spawn(
    ...pinned(1, process.execPath, ["--input-type=module", "-e", script, "--", "--upstream", upstreams, "--host", "127.0.0.1", "--port", String(port),
      ...extra, "--log-level", "warn"]),
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => (await fetch(`${url}/health`)).ok, { timeoutMs: 30_000, message: "timed out waiting for the router to be ready" });
  return { url, stop: () => stopChild(child) };
}

/** A trivial upstream in its own process (a fixed /generate answer): the router's own cost with no model behind it. */
async function startTrivialUpstream() {
  const port = await freePort();
  const body = JSON.stringify({ response: "abcdefgh", finish_reason: "length", usage: { prompt_tokens: 3, completion_tokens: 8, total_tokens: 11 } });
  const script = `require("node:http").createServer((req, res) => { req.resume(); req.on("end", () => { res.writeHead(200, { "content-type": "application/json; charset=utf-8", "content-length": ${Buffer.byteLength(body)}, "x-corral-usage": "prompt=3, completion=8" }); res.end(${JSON.stringify(body)}); }); }).listen(${port}, "127.0.0.1");`;
  const child = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "ignore", "inherit"] });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => (await fetch(url, { method: "POST", body: "{}" })).ok, { timeoutMs: 10_000, message: "timed out waiting for the trivial upstream" });
  return { url, stop: () => stopChild(child) };
}

/** Latency of the same request sent alternately to two places, one at a time. */
async function interleavedLatency(a: BenchClient, b: BenchClient, samples: number, body: (i: number) => Record<string, unknown>): Promise<[number[], number[]]> {
  const aMs: number[] = [];
  const bMs: number[] = [];
  for (let i = 0; i < samples; i++) {
    for (const [client, out] of i % 2 === 0 ? ([[a, aMs], [b, bMs]] as const) : ([[b, bMs], [a, aMs]] as const)) {
      const response = await client.post("/generate", body(i));
      if (response.status !== 200) throw new Error(`HTTP ${response.status}: ${response.body}`);
      out.push(response.totalMs);
    }
  }
  return [aMs, bMs];
}

/** An SSE source whose events carry the time they were written (performance.now() of this process). */
async function startStampedSse(events: number, intervalMs: number) {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache" });
      let sent = 0;
      const timer = setInterval(() => {
        if (sent++ < events) {
          res.write(`data: ${performance.now()}\n\n`);
          return;
        }
        clearInterval(timer);
        res.end("data: [DONE]\n\n");
      }, intervalMs);
      res.on("close", () => clearInterval(timer));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, stop: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

/** Milliseconds from each stamped event's writing to its arrival here. */
function chunkDelays(base: string, agent: http.Agent, body: unknown): Promise<number[]> {
  const payload = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const request = http.request(new URL("/generate", base), { method: "POST", agent, headers: { "content-type": "application/json", "content-length": payload.length } }, (response) => {
      const delays: number[] = [];
      let buffer = "";
      response.setEncoding("utf8");
      response.on("data", (text: string) => {
        const now = performance.now();
        buffer += text;
        let end = buffer.indexOf("\n\n");
        while (end !== -1) {
          const data = buffer.slice(6, end);
          buffer = buffer.slice(end + 2);
          if (data !== "[DONE]") delays.push(now - Number(data));
          end = buffer.indexOf("\n\n");
        }
      });
      response.on("end", () => resolve(delays));
      response.on("error", reject);
    });
    request.on("error", reject);
    request.end(payload);
  });
}

async function throughput(client: BenchClient): Promise<number> {
  const seconds = await runConcurrently(CONCURRENCY, REQUESTS_PER_ROUND, async (i) => {
    const response = await client.post("/generate", { prompt: `request ${i}`, max_length: 8 });
    if (response.status !== 200) throw new Error(`HTTP ${response.status}: ${response.body}`);
  });
  return REQUESTS_PER_ROUND / seconds;
}

/** Starts a redis-server of our own on a free port (REDIS_URL is used when it is set). */
async function localRedis(): Promise<{ url: string; stop: () => Promise<void> } | undefined> {
  if (process.env.REDIS_URL) return { url: process.env.REDIS_URL, stop: async () => undefined };
  if (spawnSync("redis-server", ["--version"], { stdio: "ignore" }).status !== 0) return undefined;
  const port = await freePort();
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  const url = `redis://127.0.0.1:${port}`;
  const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  probe.on("error", () => undefined);
  await waitFor(async () => {
    try {
      if (probe.status !== "ready") await probe.connect();
      return (await probe.ping()) === "PONG";
    } catch {
      probe.disconnect();
      return false;
    }
  }, { timeoutMs: 10_000, message: "timed out waiting for redis-server" });
  probe.disconnect();
  return { url, stop: () => stopChild(child) };
}

async function rateLimitCost(redisUrl: string | undefined, checks: number): Promise<{ p50: number; p99: number }> {
  const redis = redisUrl ? new Redis(redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 0 }) : undefined;
  redis?.on("error", () => undefined);
  if (redis) await new Promise((resolve) => redis.once("ready", resolve));
  const limiter = new RateLimiter({ points: 60, duration: 60, burst: 10, keyPrefix: `bench:${Date.now()}` }, redis, { logger: pino({ level: "silent" }) });
  const micros: number[] = [];
  for (let i = 0; i < checks; i++) {
    const started = performance.now();
    const decision = await limiter.check(`ip:10.0.${(i >> 8) & 255}.${i & 255}`);
    micros.push((performance.now() - started) * 1000);
    if (redis && decision.store !== "redis") throw new Error("rate limit check did not use Redis");
  }
  redis?.disconnect();
  return { p50: median(micros.slice(checks / 10)), p99: percentile(micros.slice(checks / 10), 99) };
}

/**
 * Two fresh routers on the trivial upstream, warmed alike, requests interleaved one by one: one
 * without keys or limits, one with a keys file (a key with its own rate and token budgets, all far
 * from spent) and Redis.
 */
async function quotaCost(redisUrl: string, trivialUrl: string, limits: string): Promise<{ plainMs: number[]; quotaMs: number[] }> {
  const dir = mkdtempSync(path.join(tmpdir(), "corral-bench-keys-"));
  const keysFile = path.join(dir, "keys.yaml");
  const key = "sk-bench-0123456789abcdef";
  writeFileSync(keysFile, `keys:\n  - name: bench\n    key: ${key}\n    limits: ${limits}\n`);
  const plainRouter = await startRouter(`trivial=${trivialUrl}`);
  const router = await startRouter(`trivial=${trivialUrl}`, ["--keys-file", keysFile, "--redis-url", redisUrl, "--rate-limit-points", "10000000", "--rate-limit-burst", "1000000"]);
  const plain = new BenchClient(plainRouter.url, 1);
  const quota = new BenchClient(router.url, 1, { authorization: `Bearer ${key}` });
  try {
    await interleavedLatency(plain, quota, 1500, () => ({ prompt: "warm-up", model_id: "trivial", max_length: 8 }));
    const [plainMs, quotaMs] = await interleavedLatency(plain, quota, 2000, (i) => ({ prompt: `latency ${i}`, model_id: "trivial", max_length: 8 }));
    return { plainMs, quotaMs };
  } finally {
    plain.close();
    quota.close();
    await Promise.all([plainRouter.stop(), router.stop()]);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  pinSelf(1);
  const tiny = await ensureTestModel("tiny");
  const cleanups: (() => Promise<void> | void)[] = [];
  const rows: (string | number)[][] = [];
  try {
    const runtime = await startRuntime(tiny);
    cleanups.push(runtime.stop);
    const sse = await startStampedSse(40, 10);
    cleanups.push(sse.stop);
    const trivial = await startTrivialUpstream();
    cleanups.push(trivial.stop);
    const router = await startRouter(`tiny=${runtime.url},sse=${sse.url},trivial=${trivial.url}`);
    cleanups.push(router.stop);
    const direct = new BenchClient(runtime.url, CONCURRENCY);
    const routed = new BenchClient(router.url, CONCURRENCY);
    cleanups.push(() => direct.close(), () => routed.close());

    // Warm-up: connections, JIT, the runtime's first batches.
    for (let i = 0; i < 2; i++) {
      await throughput(direct);
      await throughput(routed);
    }

    const directRps: number[] = [];
    const routedRps: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      directRps.push(await throughput(direct));
      routedRps.push(await throughput(routed));
      console.error(`throughput round ${round + 1}/${ROUNDS}: direct ${fixed(directRps.at(-1)!)} req/s, routed ${fixed(routedRps.at(-1)!)} req/s`);
    }
    const ratios = directRps.map((value, i) => routedRps[i]! / value);

    // Latency at concurrency 1, direct and routed requests interleaved one by one.
    const [directMs, routedMs] = await interleavedLatency(direct, routed, LATENCY_SAMPLES, (i) => ({ prompt: `latency ${i}`, max_length: 8 }));
    // The same with no model behind: what the router itself adds.
    const trivialDirect = new BenchClient(trivial.url, 1);
    cleanups.push(() => trivialDirect.close());
    await interleavedLatency(trivialDirect, routed, 200, () => ({ prompt: "warm-up", model_id: "trivial" }));
    const [trivialDirectMs, trivialRoutedMs] = await interleavedLatency(trivialDirect, routed, 2000, (i) => ({ prompt: `latency ${i}`, model_id: "trivial" }));

    // A streamed chunk crossing the router: stamped events, direct and routed.
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const chunkDirect: number[] = [];
    const chunkRouted: number[] = [];
    for (let i = 0; i < 20; i++) {
      chunkDirect.push(...(await chunkDelays(sse.url, agent, { prompt: "x", stream: true })));
      chunkRouted.push(...(await chunkDelays(router.url, agent, { prompt: "x", stream: true, model_id: "sse" })));
    }
    agent.destroy();

    const redis = await localRedis();
    const redisCost = redis ? await rateLimitCost(redis.url, 5000) : undefined;
    // What each part of a key's checks adds: the key alone (the router's rate, in Redis), its own
    // rate, and its own rate with token budgets (a reservation before, a settlement after).
    const quotas = redis
      ? [
          ["a key, the router's rate in Redis", await quotaCost(redis.url, trivial.url, "{}")],
          ["a key with its own rate in Redis", await quotaCost(redis.url, trivial.url, "{ requestsPerMinute: 10000000, burst: 1000000 }")],
          [
            "a key with its own rate and token budgets in Redis",
            await quotaCost(redis.url, trivial.url, "{ requestsPerMinute: 10000000, burst: 1000000, tokensPerMinute: 1000000000, tokensPerDay: 1000000000000 }"),
          ],
        ] as const
      : [];
    await redis?.stop();
    const memoryCost = await rateLimitCost(undefined, 5000);

    rows.push(["throughput, C=16, 8-token completions (req/s)", fixed(median(directRps)), fixed(median(routedRps)), `ratio ${fixed(median(ratios), 3)} (goal >= 0.95)`]);
    rows.push(["latency p50, C=1 (ms)", fixed(median(directMs), 2), fixed(median(routedMs), 2), `+${fixed(median(routedMs) - median(directMs), 2)} ms (goal < 1 ms)`]);
    rows.push(["latency p99, C=1 (ms)", fixed(percentile(directMs, 99), 2), fixed(percentile(routedMs, 99), 2), `+${fixed(percentile(routedMs, 99) - percentile(directMs, 99), 2)} ms`]);
    rows.push(["no model (trivial upstream): latency p50, C=1 (ms)", fixed(median(trivialDirectMs), 3), fixed(median(trivialRoutedMs), 3), `+${fixed(median(trivialRoutedMs) - median(trivialDirectMs), 3)} ms`]);
    rows.push(["no model (trivial upstream): latency p99, C=1 (ms)", fixed(percentile(trivialDirectMs, 99), 3), fixed(percentile(trivialRoutedMs, 99), 3), `+${fixed(percentile(trivialRoutedMs, 99) - percentile(trivialDirectMs, 99), 3)} ms`]);
    rows.push(["streamed chunk, write to arrival p50 (ms)", fixed(median(chunkDirect), 3), fixed(median(chunkRouted), 3), `+${fixed(median(chunkRouted) - median(chunkDirect), 3)} ms to cross the router`]);
    rows.push(["streamed chunk, write to arrival p99 (ms)", fixed(percentile(chunkDirect, 99), 3), fixed(percentile(chunkRouted, 99), 3), `+${fixed(percentile(chunkRouted, 99) - percentile(chunkDirect, 99), 3)} ms`]);
    for (const [what, quota] of quotas) {
      const goal = what.includes("budgets") ? " (goal < 0.3 ms)" : "";
      rows.push([`${what} vs no limits: latency p50, C=1 (ms)`, fixed(median(quota.plainMs), 3), fixed(median(quota.quotaMs), 3), `+${fixed(median(quota.quotaMs) - median(quota.plainMs), 3)} ms${goal}`]);
      rows.push([`${what}: latency p99, C=1 (ms)`, fixed(percentile(quota.plainMs, 99), 3), fixed(percentile(quota.quotaMs, 99), 3), `+${fixed(percentile(quota.quotaMs, 99) - percentile(quota.plainMs, 99), 3)} ms`]);
    }
    rows.push([
      "one rate-limit check, p50 / p99 (µs)",
      "",
      "",
      `${redisCost ? `Redis ${fixed(redisCost.p50, 0)} / ${fixed(redisCost.p99, 0)}` : "Redis: not installed"}; memory ${fixed(memoryCost.p50, 1)} / ${fixed(memoryCost.p99, 1)}`,
    ]);
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup();
  }
  console.log(
    `\nRouter vs straight to the runtime: tiny model, runtime with ${THREADS} thread and ${CONCURRENCY} parallel sequences, ` +
      `router as its own process (rate limits off for the A/B rows), median of ${ROUNDS} alternating rounds of ${REQUESTS_PER_ROUND} requests, ` +
      `${LATENCY_SAMPLES} interleaved latency samples, 800 stamped chunks; ${PIN ? "runtime pinned to CPU 0, router and client to CPU 1" : `client, router and runtime share this machine's ${(await import("node:os")).availableParallelism()} CPUs`}\n`,
  );
  console.log(table(["measure", "direct", "through the router", "router cost"], rows));
}

await main();
