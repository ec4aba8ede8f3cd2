// Property-based fuzzing of every public endpoint of `corral serve` (issue 14), with fast-check:
// valid-shaped bodies with wrong types, out-of-range numbers, huge strings, unknown keys,
// __proto__ and deep nesting; bodies that are not JSON; wrong content types; odd headers.
// Properties: never a 5xx except a documented 503 with {"detail"}; every error body is
// {"detail": string}; the server still answers /health; an unknown model id reads no file and
// fetches nothing. Reproduce a failure with FUZZ_SEED=<seed printed below> (and FUZZ_RUNS=<n>).

import { readdirSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MODEL_DIR, printTable, rawRequest, startServe, type RawResponse, type Serve } from "./harness.js";

const SEED = Number(process.env.FUZZ_SEED ?? 20_261_206);
const RUNS = Number(process.env.FUZZ_RUNS ?? 120);
process.stdout.write(`reliability fuzz: seed ${SEED}, ${RUNS} runs per endpoint (FUZZ_SEED, FUZZ_RUNS to change)\n`);

let serve: Serve;
let sentinel: http.Server;
let sentinelHits = 0;
let sentinelUrl = "";
let modelFilesBefore: string[] = [];

interface Figures {
  inputs: number;
  statuses: Map<number, number>;
  fiveXx: number;
  documented503: number;
  badErrorBodies: number;
}
const figures = new Map<string, Figures>();
function figuresOf(endpoint: string): Figures {
  let entry = figures.get(endpoint);
  if (!entry) {
    entry = { inputs: 0, statuses: new Map(), fiveXx: 0, documented503: 0, badErrorBodies: 0 };
    figures.set(endpoint, entry);
  }
  return entry;
}

function listModelFiles(): string[] {
  const out: string[] = [];
  const walk = (dir: string, prefix: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      if (entry.isDirectory()) walk(`${dir}/${entry.name}`, `${prefix}${entry.name}/`);
      else out.push(`${prefix}${entry.name}`);
    }
  };
  walk(MODEL_DIR, "");
  return out.sort();
}

beforeAll(async () => {
  // Any request here means an unknown model id made the server fetch something.
  sentinel = http.createServer((_req, res) => {
    sentinelHits++;
    res.end("GGUF");
  });
  await new Promise<void>((resolve) => sentinel.listen(0, "127.0.0.1", resolve));
  sentinelUrl = `http://127.0.0.1:${(sentinel.address() as AddressInfo).port}`;
  serve = await startServe({ readyWaitSeconds: 5 });
  modelFilesBefore = listModelFiles();
}, 180_000);

afterAll(async () => {
  await serve?.stop();
  sentinel?.close();
  const rows = [...figures].map(([endpoint, f]) => ({
    endpoint,
    "inputs tried": f.inputs,
    "5xx seen": f.fiveXx,
    "documented 503": f.documented503,
    "bad error bodies": f.badErrorBodies,
    statuses: [...f.statuses].sort(([a], [b]) => a - b).map(([status, n]) => `${status}x${n}`).join(" "),
  }));
  const total = rows.reduce((sum, row) => sum + row["inputs tried"], 0);
  const fiveXx = rows.reduce((sum, row) => sum + row["5xx seen"], 0);
  rows.push({ endpoint: "TOTAL", "inputs tried": total, "5xx seen": fiveXx, "documented 503": rows.reduce((s, r) => s + r["documented 503"], 0), "bad error bodies": rows.reduce((s, r) => s + r["bad error bodies"], 0), statuses: "" });
  printTable(`Reliability fuzz (fast-check seed ${SEED}, ${RUNS} runs per endpoint)`, rows);
}, 60_000);

// ---- arbitraries -------------------------------------------------------------------------------

const KNOWN_MODELS = ["tiny", "other"];

/** Model ids that are not in the catalog, some shaped like sources a naive server would open or fetch. */
const unknownModelId = () =>
  fc.oneof(
    fc.string({ maxLength: 40 }).filter((id) => !KNOWN_MODELS.includes(id)),
    fc.constantFrom(
      "/etc/passwd",
      "../../../../etc/passwd",
      "..\\..\\windows\\win.ini",
      "builtin:successor",
      "hf:owner/repo/model.gguf",
      "file:///etc/hostname",
      "~/.ssh/id_rsa",
      "tiny\u0000",
      "TINY",
      " tiny",
      "%2e%2e%2fetc%2fpasswd",
      "__proto__",
      "constructor",
      "toString",
    ),
    fc.constant(null).map(() => `${sentinelUrl}/model.gguf`),
    fc.constant(null).map(() => `${MODEL_DIR}/builtin/successor.gguf`),
  );

const hugeString = fc.integer({ min: 10_000, max: 1_200_000 }).map((n) => "a".repeat(n));
const anyJson = fc.jsonValue({ maxDepth: 3 });
const wrongType = fc.oneof(fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.string({ maxLength: 20 }), fc.array(anyJson, { maxLength: 3 }), fc.dictionary(fc.string({ maxLength: 8 }), anyJson, { maxKeys: 3 }));
const numberish = (min: number, max: number) =>
  fc.oneof(
    { weight: 4, arbitrary: fc.double({ min, max, noNaN: true }) },
    { weight: 2, arbitrary: fc.oneof(fc.double({ noNaN: true }), fc.constantFrom(-1, 0, -0, 1e308, -1e308, 2 ** 53, 2 ** 63, Number.MIN_VALUE)) },
    { weight: 1, arbitrary: wrongType },
  );
const smallLength = fc.oneof(
  { weight: 5, arbitrary: fc.integer({ min: 1, max: 6 }) },
  { weight: 1, arbitrary: fc.constantFrom(0, -1, 1.5, 2 ** 31, 2 ** 53, 1e308, null, "4", true) },
  { weight: 1, arbitrary: wrongType },
);
const modelId = fc.oneof({ weight: 3, arbitrary: fc.constantFrom<unknown>("tiny", null) }, { weight: 3, arbitrary: unknownModelId() }, { weight: 1, arbitrary: wrongType });
const text = fc.oneof({ weight: 6, arbitrary: fc.string({ maxLength: 60, unit: "grapheme" }) }, { weight: 1, arbitrary: hugeString }, { weight: 1, arbitrary: wrongType });
const sampling = {
  stream: fc.oneof({ weight: 4, arbitrary: fc.boolean() }, { weight: 1, arbitrary: wrongType }),
  max_length: smallLength,
  temperature: numberish(0, 2),
  top_p: numberish(0, 1),
  top_k: fc.oneof(fc.integer({ min: -5, max: 200 }), wrongType),
  repetition_penalty: numberish(0, 2),
  do_sample: fc.oneof(fc.boolean(), wrongType),
};
const message = fc.oneof(
  { weight: 5, arbitrary: fc.record({ role: fc.oneof(fc.constantFrom("system", "user", "assistant"), fc.string({ maxLength: 10 }), wrongType), content: text }, { requiredKeys: [] }) },
  { weight: 1, arbitrary: wrongType },
);
const messages = fc.oneof({ weight: 5, arbitrary: fc.array(message, { maxLength: 5 }) }, { weight: 1, arbitrary: fc.array(message, { minLength: 200, maxLength: 400 }) }, { weight: 1, arbitrary: wrongType });
const unknownKeys = fc.dictionary(fc.string({ maxLength: 12 }), anyJson, { maxKeys: 4 });

/** A body object with the endpoint's fields (each possibly missing or wrong) plus unknown keys. */
function shaped(fields: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<Record<string, unknown>> {
  return fc.tuple(fc.record(fields, { requiredKeys: [] }), unknownKeys).map(([known, extra]) => ({ ...extra, ...known }));
}

const BODIES: Record<string, fc.Arbitrary<Record<string, unknown>>> = {
  "/generate": shaped({ prompt: text, model_id: modelId, ...sampling }),
  "/chat": shaped({ messages, model_id: modelId, ...sampling }),
  "/generate/batch": shaped({ prompts: fc.oneof(fc.array(text, { maxLength: 4 }), fc.array(fc.constant("a"), { minLength: 60, maxLength: 80 }), wrongType), model_id: modelId, ...sampling, stream: fc.constant(false) }),
  "/v1/completions": shaped({
    model: modelId,
    prompt: fc.oneof(text, fc.array(text, { maxLength: 3 })),
    stream: sampling.stream,
    max_tokens: smallLength,
    temperature: sampling.temperature,
    top_p: sampling.top_p,
    n: fc.oneof(fc.integer({ min: -1, max: 3 }), wrongType),
    stop: fc.oneof(fc.string({ maxLength: 4 }), fc.array(fc.string({ maxLength: 4 }), { maxLength: 5 }), wrongType),
    logprobs: wrongType,
    stream_options: fc.oneof(fc.record({ include_usage: fc.boolean() }), wrongType),
  }),
  "/v1/chat/completions": shaped({
    model: modelId,
    messages,
    stream: sampling.stream,
    max_tokens: smallLength,
    max_completion_tokens: smallLength,
    temperature: sampling.temperature,
    top_p: sampling.top_p,
    n: fc.oneof(fc.integer({ min: -1, max: 3 }), wrongType),
    tools: fc.oneof(fc.array(anyJson, { maxLength: 2 }), wrongType),
    response_format: fc.oneof(fc.record({ type: fc.constantFrom("text", "json_object", "json_schema") }), wrongType),
  }),
  // Only ids that are not current: loading another model is the chaos suite's business.
  "/models/load": shaped({ model_id: fc.oneof(fc.constant("tiny"), unknownModelId(), wrongType) }),
  // Never the current model (an empty body unloads it): ids that are unknown or of the wrong type.
  "/models/unload": shaped({ model_id: fc.oneof(unknownModelId().filter((id) => id !== null), wrongType.filter((v) => v !== null)) }).map((body) => ({ model_id: "__not_a_model__", ...body })),
};

/** In-range bodies (so that generation, streaming and loading run too, not only validation). */
const validSampling = {
  stream: fc.boolean(),
  max_length: fc.integer({ min: 1, max: 6 }),
  temperature: fc.double({ min: 0, max: 2, noNaN: true }),
  top_p: fc.double({ min: 0, max: 1, noNaN: true }),
  top_k: fc.integer({ min: 1, max: 100 }),
  repetition_penalty: fc.double({ min: 1, max: 2, noNaN: true }),
  do_sample: fc.boolean(),
};
const validPrompt = fc.string({ maxLength: 40, unit: "grapheme" });
const validMessages = fc.array(fc.record({ role: fc.constantFrom("system", "user", "assistant"), content: validPrompt }), { minLength: 1, maxLength: 3 });
const VALID: Record<string, fc.Arbitrary<Record<string, unknown>>> = {
  "/generate": fc.record({ prompt: validPrompt, model_id: fc.constantFrom("tiny", null), ...validSampling }, { requiredKeys: ["prompt"] }),
  "/chat": fc.record({ messages: validMessages, model_id: fc.constantFrom("tiny", null), ...validSampling }, { requiredKeys: ["messages"] }),
  "/generate/batch": fc.record({ prompts: fc.array(validPrompt, { minLength: 1, maxLength: 3 }), model_id: fc.constantFrom("tiny", null), ...validSampling, stream: fc.constant(false) }, { requiredKeys: ["prompts"] }),
  "/v1/completions": fc.record({ model: fc.constant("tiny"), prompt: validPrompt, stream: fc.boolean(), max_tokens: fc.integer({ min: 1, max: 6 }), temperature: validSampling.temperature, top_p: validSampling.top_p }, { requiredKeys: ["model", "prompt"] }),
  "/v1/chat/completions": fc.record({ model: fc.constant("tiny"), messages: validMessages.map((list) => list.map(({ role, content }) => ({ role, content }))), stream: fc.boolean(), max_tokens: fc.integer({ min: 1, max: 6 }), temperature: validSampling.temperature }, { requiredKeys: ["model", "messages"] }),
  "/models/load": fc.constant({ model_id: "tiny" }),
  "/models/unload": fc.constantFrom({ model_id: "__not_a_model__" }, { model_id: "other" }),
};

/** The raw body on the wire: the JSON of a body, sometimes with __proto__/constructor keys spliced in, deep nesting, or not JSON at all. */
function wireBody(body: fc.Arbitrary<Record<string, unknown>>, valid: fc.Arbitrary<Record<string, unknown>>): fc.Arbitrary<{ raw: string; kind: string }> {
  return fc.oneof(
    { weight: 6, arbitrary: valid.map((value) => ({ raw: JSON.stringify(value), kind: "json" })) },
    { weight: 12, arbitrary: body.map((value) => ({ raw: JSON.stringify(value), kind: "json" })) },
    {
      weight: 2,
      arbitrary: fc
        .tuple(body, fc.constantFrom('"__proto__":{"polluted":true,"max_length":1}', '"constructor":{"prototype":{"polluted":true}}', '"__proto__":null', '"prompt":"a","prompt":1'))
        .map(([value, splice]) => {
          const json = JSON.stringify(value);
          return { raw: json === "{}" ? `{${splice}}` : `{${splice},${json.slice(1)}`, kind: "proto" };
        }),
    },
    { weight: 1, arbitrary: fc.integer({ min: 50, max: 100_000 }).map((depth) => ({ raw: `{"prompt":${"[".repeat(depth)}${"]".repeat(depth)}}`, kind: "deep" })) },
    {
      weight: 2,
      arbitrary: fc.oneof(
        fc.string({ maxLength: 80 }),
        fc.constantFrom("", "null", "[]", "0", '"x"', "{", '{"prompt":', "{'prompt':'x'}", "\u0000", "\ufeff{}", "{}}", "NaN", "[{}]", '{"prompt":"\\ud800"}', "a=b&c=d"),
        fc.uint8Array({ maxLength: 64 }).map((bytes) => Buffer.from(bytes).toString("latin1")),
      ).map((raw) => ({ raw, kind: "not-json" })),
    },
  );
}

const headerName = fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/).filter((name) => !["content-length", "transfer-encoding", "host", "connection", "expect", "upgrade"].includes(name));
const headerValue = fc.stringMatching(/^[\x20-\x7e]{0,60}$/).map((value) => value.trim());
const contentType = fc.oneof(
  { weight: 10, arbitrary: fc.constant("application/json") },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      undefined,
      "text/plain",
      "application/x-www-form-urlencoded",
      "multipart/form-data; boundary=x",
      "application/json; charset=utf-16",
      "application/json; charset=latin1",
      "APPLICATION/JSON",
      "application/json;;;",
      "application/jsonp",
      "application/octet-stream",
      "text/event-stream",
      "",
      "*/*",
    ),
  },
);
const oddHeaders = fc.record(
  {
    extra: fc.dictionary(headerName, headerValue, { maxKeys: 4 }),
    accept: fc.constantFrom("text/event-stream", "application/json", "*/*", "text/html", "application/xml;q=0.1", ""),
    authorization: fc.oneof(fc.constantFrom("Bearer", "Bearer ", "Basic Zm9vOmJhcg==", "Bearer sk-" + "x".repeat(2000)), headerValue),
    xff: fc.oneof(fc.ipV4(), fc.ipV6(), headerValue, fc.constant("1.1.1.1, 2.2.2.2, unknown")),
    host: fc.constantFrom("localhost", "127.0.0.1", "[::1]", "evil.example", "", "localhost:1", "LOCALHOST"),
    encoding: fc.constantFrom("gzip", "br", "deflate", "identity", "x-unknown"),
  },
  { requiredKeys: [] },
);

function headersFor(ct: string | undefined, odd: { extra?: Record<string, string>; accept?: string; authorization?: string; xff?: string; host?: string; encoding?: string }): Record<string, string> {
  const headers: Record<string, string> = { ...(odd.extra ?? {}) };
  if (ct !== undefined) headers["content-type"] = ct;
  if (odd.accept !== undefined) headers.accept = odd.accept;
  if (odd.authorization !== undefined) headers.authorization = odd.authorization;
  if (odd.xff !== undefined) headers["x-forwarded-for"] = odd.xff;
  if (odd.host !== undefined) headers.host = odd.host;
  if (odd.encoding !== undefined) headers["content-encoding"] = odd.encoding;
  return headers;
}

// ---- the properties ----------------------------------------------------------------------------

/** Checks one answer; records its figures. Returns a reason when a property fails. */
function check(endpoint: string, response: RawResponse, head = false): string | undefined {
  const f = figuresOf(endpoint);
  f.inputs++;
  f.statuses.set(response.status, (f.statuses.get(response.status) ?? 0) + 1);
  let parsed: unknown;
  if (response.status >= 400 && !head) {
    try {
      parsed = JSON.parse(response.body);
    } catch {
      parsed = undefined;
    }
    const good = typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) && typeof (parsed as { detail?: unknown }).detail === "string" && Object.keys(parsed).length === 1;
    if (!good) {
      f.badErrorBodies++;
      return `error ${response.status} without a {"detail": string} body: ${response.body.slice(0, 200)}`;
    }
  }
  if (response.status >= 500) {
    if (response.status === 503) {
      f.documented503++;
      return undefined;
    }
    f.fiveXx++;
    return `${response.status}: ${response.body.slice(0, 200)}`;
  }
  return undefined;
}

async function stillHealthy(): Promise<void> {
  const health = await rawRequest(serve.url, { method: "GET", path: "/health", timeoutMs: 10_000 });
  expect(health.status).toBe(200);
}

async function fuzz<T>(endpoint: string, arbitrary: fc.Arbitrary<T>, send: (input: T) => Promise<RawResponse>, extra?: (input: T, response: RawResponse) => string | undefined): Promise<void> {
  await fc.assert(
    fc.asyncProperty(arbitrary, async (input) => {
      const response = await send(input);
      const head = (input as { method?: string }).method === "HEAD";
      const problem = check(endpoint, response, head) ?? extra?.(input, response);
      if (problem) throw new Error(problem);
    }),
    { seed: SEED, numRuns: RUNS, endOnFailure: true },
  );
  await stillHealthy();
  // An empty (or null) body to /models/unload unloads the current model, as documented: load it again.
  if (endpoint === "/models/unload") expect((await rawRequest(serve.url, { method: "POST", path: "/models/load", headers: { "content-type": "application/json" }, body: '{"model_id":"tiny"}', timeoutMs: 120_000 })).status).toBe(200);
}

const POST_ENDPOINTS = Object.keys(BODIES);
const GET_ENDPOINTS = ["/models/current", "/models/available", "/system/info", "/health", "/v1/models"];
const MODEL_FIELD: Record<string, string> = { "/v1/completions": "model", "/v1/chat/completions": "model" };

describe("fuzzing every endpoint (fast-check)", () => {
  for (const endpoint of POST_ENDPOINTS) {
    it(`POST ${endpoint}: bodies, content types and headers never give a 5xx or a bad error body`, async () => {
      const input = fc.record({ body: wireBody(BODIES[endpoint]!, VALID[endpoint]!), ct: contentType, odd: oddHeaders, withHeaders: fc.integer({ min: 0, max: 3 }).map((n) => n === 0) });
      await fuzz(
        endpoint,
        input,
        ({ body, ct, odd, withHeaders }) => rawRequest(serve.url, { method: "POST", path: endpoint, headers: headersFor(ct, withHeaders ? odd : {}), body: body.raw, timeoutMs: 30_000 }),
        ({ body }, response) => {
          // An unknown model id is never served (nor loaded): the answer is a 4xx.
          if (response.status >= 400) return undefined;
          let parsed: unknown;
          try {
            parsed = JSON.parse(body.raw);
          } catch {
            return undefined;
          }
          const id = typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>)[MODEL_FIELD[endpoint] ?? "model_id"] : undefined;
          if (typeof id === "string" && !KNOWN_MODELS.includes(id)) return `unknown model id ${JSON.stringify(id)} answered ${response.status}`;
          return undefined;
        },
      );
    });
  }

  for (const endpoint of GET_ENDPOINTS) {
    it(`GET ${endpoint}: query strings, methods and headers never give a 5xx`, async () => {
      const input = fc.record({
        method: fc.constantFrom("GET", "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"),
        query: fc.oneof(fc.constant(""), fc.webQueryParameters().map((q) => `?${q}`), fc.constantFrom("?model_id=../../etc/passwd", "?__proto__[x]=1", "?a=%zz", `?${"a=1&".repeat(500)}`)),
        body: fc.oneof(fc.constant(undefined), fc.string({ maxLength: 40 }), fc.constant('{"model_id":"tiny"}')),
        ct: contentType,
        odd: oddHeaders,
      });
      await fuzz(endpoint, input, ({ method, query, body, ct, odd }) => rawRequest(serve.url, { method, path: `${endpoint}${query}`, headers: headersFor(body === undefined ? undefined : ct, odd), body, timeoutMs: 15_000 }));
    });
  }

  it("no unknown model id read a model file or fetched anything; the catalog is unchanged; the current model still answers", async () => {
    expect(sentinelHits).toBe(0);
    expect(listModelFiles()).toEqual(modelFilesBefore);
    const available = (await (await fetch(`${serve.url}/models/available`)).json()) as { current: string; models: { model_id: string }[] };
    expect(available.models.map((model) => model.model_id)).toEqual(KNOWN_MODELS);
    expect(available.current).toBe("tiny");
    const answer = await rawRequest(serve.url, { method: "POST", path: "/generate", headers: { "content-type": "application/json" }, body: JSON.stringify({ prompt: "Hello wor" }) });
    expect(answer.status).toBe(200);
    expect(JSON.parse(answer.body).response).toBe("stuvwxyz");
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});
