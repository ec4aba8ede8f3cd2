// The router's balancer alone, at scale: `node dist/bench/balancer.js` (after `npm run bench:balancer`
// builds it). Many endpoints of one model, many multi-turn conversations whose turns arrive in a
// random interleaving, a steady number of requests in flight (each request holds its endpoint until
// `inFlight` later requests have been picked: FIFO service). For least-load and for prefix routing:
// - the load bound: requests that landed on an endpoint above ceil(loadFactor x average), and the
//   busiest endpoint against the average;
// - locality: the share of a conversation's later turns that land where its previous turn was
//   (where its history is in the KV cache);
// - the picking cost per request (routing key + pick + release), median of rounds.
import { StaticBackend } from "../router/backends/static.js";
import type { Endpoint } from "../router/backends/types.js";
import { Balancer, DEFAULT_LOAD_FACTOR, type Lease } from "../router/balancer.js";
import type { RoutingStrategy } from "../common/routing.js";
import { routingKey } from "../router/routing-key.js";
import { argValue, seededRandom, fixed, median, table } from "./lib.js";

const ENDPOINTS = Number(argValue("endpoints", "1000"));
const CONVERSATIONS = Number(argValue("conversations", "100000"));
const REQUESTS = Number(argValue("requests", "500000"));
const IN_FLIGHT = Number(argValue("in-flight", String(ENDPOINTS * 4)));
const SYSTEM_PROMPTS = Number(argValue("system-prompts", "20"));
const ROUNDS = Number(argValue("rounds", "3"));


const systemPrompts = Array.from({ length: SYSTEM_PROMPTS }, (_, i) => `You are assistant ${i}. ${"Follow the house style closely. ".repeat(40)}`);
/**
 * Each conversation's opening messages (its later turns add to them; the key does not change),
 * parsed from JSON as the router's bodies are (flat strings, not the joined ones built here).
 */
const openings = Array.from({ length: CONVERSATIONS }, (_, c) =>
  JSON.parse(
    JSON.stringify([
      { role: "system", content: systemPrompts[c % SYSTEM_PROMPTS]! },
      { role: "user", content: `Question ${c}: how do I configure this cluster for workload ${c * 7919}?` },
    ]),
  ) as { role: string; content: string }[],
);

interface Result {
  strategy: RoutingStrategy;
  overBound: number;
  maxOverAverage: number;
  sameAsLastTurn: number;
  nsPerPick: number;
}

function run(strategy: RoutingStrategy, seed: number): Result {
  const endpoints: Endpoint[] = Array.from({ length: ENDPOINTS }, (_, i) => ({ id: `corral-model-${i}`, url: `http://10.0.${i >> 8}.${i & 255}:8080` }));
  const balancer = new Balancer(new StaticBackend([{ modelId: "m", endpoints }]), { strategy });
  const load = new Map<string, number>();
  const held: Lease[] = new Array(IN_FLIGHT);
  const lastEndpoint = new Int32Array(CONVERSATIONS).fill(-1);
  const indexOf = new Map(endpoints.map((endpoint, i) => [endpoint.id, i]));
  const next = seededRandom(seed);
  let overBound = 0;
  let maxOverAverage = 0;
  let laterTurns = 0;
  let sameAsLastTurn = 0;
  let pickNs = 0n;
  for (let r = 0; r < REQUESTS; r++) {
    const conversation = Math.floor(next() * CONVERSATIONS);
    const body = { messages: openings[conversation]! };
    const slot = r % IN_FLIGHT;
    const started = process.hrtime.bigint();
    const previous = held[slot];
    previous?.release();
    const lease = balancer.tryAcquire("m", { key: strategy === "prefix" ? routingKey(body) : undefined })!;
    pickNs += process.hrtime.bigint() - started;
    if (previous) load.set(previous.endpoint.id, load.get(previous.endpoint.id)! - 1);
    held[slot] = lease;
    const now = (load.get(lease.endpoint.id) ?? 0) + 1;
    load.set(lease.endpoint.id, now);
    const inFlight = Math.min(r + 1, IN_FLIGHT);
    if (now > Math.ceil((DEFAULT_LOAD_FACTOR * inFlight) / ENDPOINTS)) overBound++;
    // Against the average once the steady number is in flight (before, one request is "1000x").
    if (r >= IN_FLIGHT) maxOverAverage = Math.max(maxOverAverage, now / (IN_FLIGHT / ENDPOINTS));
    const index = indexOf.get(lease.endpoint.id)!;
    if (lastEndpoint[conversation] !== -1) {
      laterTurns++;
      if (lastEndpoint[conversation] === index) sameAsLastTurn++;
    }
    lastEndpoint[conversation] = index;
  }
  return { strategy, overBound, maxOverAverage, sameAsLastTurn: sameAsLastTurn / laterTurns, nsPerPick: Number(pickNs) / REQUESTS };
}

const rows: (string | number)[][] = [];
for (const strategy of ["least-load", "prefix"] as const) {
  const results = Array.from({ length: ROUNDS }, (_, round) => run(strategy, 42 + round));
  rows.push([
    strategy,
    Math.max(...results.map((r) => r.overBound)),
    fixed(Math.max(...results.map((r) => r.maxOverAverage)), 2),
    `${fixed(100 * median(results.map((r) => r.sameAsLastTurn)), 1)}%`,
    fixed(median(results.map((r) => r.nsPerPick)) / 1000, 2),
  ]);
}
process.stdout.write(
  `\nBalancer alone: ${ENDPOINTS} endpoints, ${CONVERSATIONS} conversations (${SYSTEM_PROMPTS} shared system prompts), ${REQUESTS} requests, ` +
    `${IN_FLIGHT} in flight, load factor ${DEFAULT_LOAD_FACTOR}; ${ROUNDS} rounds (worst bound figures, median of the others)\n\n`,
);
process.stdout.write(
  table(["strategy", `requests above ceil(${DEFAULT_LOAD_FACTOR} x average)`, "busiest endpoint / average", "later turns on the last turn's endpoint", "pick cost per request (µs)"], rows) + "\n",
);
