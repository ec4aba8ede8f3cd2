import { afterAll, beforeAll, describe, expect, it } from "vitest";
import OpenAI from "openai";
import { ensureTestModel } from "../helpers/test-models.js";
import { postJson, readSse, startRuntime } from "../helpers/runtime.js";
import type { RuntimeHandle } from "../../runtime/run.js";

// The tiny model has random weights: its free text is gibberish, so whatever a grammar lets
// through is what the grammar enforces.
describe("OpenAI parameters on the runtime", () => {
  let runtime: RuntimeHandle;
  let url: string;

  beforeAll(async () => {
    const model = await ensureTestModel("tiny");
    runtime = await startRuntime({ model, modelId: "acme/tiny", parallel: 1, contextSize: 512 });
    url = runtime.url;
  });
  afterAll(() => runtime?.close());

  const schemaFormat = {
    type: "json_schema",
    json_schema: { name: "answer", strict: true, schema: { type: "object", properties: { a: { type: "integer" } }, required: ["a"], additionalProperties: false } },
  };

  it("json_schema constrains chat output to JSON matching the schema, plain and streamed", async () => {
    for (const seed of [1, 2, 3]) {
      const response = await postJson(`${url}/v1/chat/completions`, {
        messages: [{ role: "user", content: "give me a" }],
        response_format: schemaFormat,
        max_tokens: 200,
        temperature: 1,
        seed,
      });
      expect(response.status).toBe(200);
      const body = (await response.json()) as any;
      expect(body.choices[0].finish_reason).toBe("stop");
      const value = JSON.parse(body.choices[0].message.content);
      expect(Object.keys(value)).toEqual(["a"]);
      expect(Number.isInteger(value.a)).toBe(true);
    }
    const { events } = await readSse(
      await postJson(`${url}/v1/chat/completions`, { messages: [{ role: "user", content: "a" }], response_format: schemaFormat, max_tokens: 200, stream: true }),
    );
    const text = events
      .filter((e) => e.data !== "[DONE]")
      .map((e) => JSON.parse(e.data).choices[0]?.delta.content ?? "")
      .join("");
    expect(Number.isInteger(JSON.parse(text).a)).toBe(true);
  });

  it("json_object constrains output to a JSON value, also on /v1/completions", async () => {
    const chat = (await (
      await postJson(`${url}/v1/chat/completions`, { messages: [{ role: "user", content: "x" }], response_format: { type: "json_object" }, max_tokens: 300, seed: 7, temperature: 0.8 })
    ).json()) as any;
    expect(chat.choices[0].finish_reason).toBe("stop");
    expect(() => JSON.parse(chat.choices[0].message.content)).not.toThrow();
    const completion = (await (
      await postJson(`${url}/v1/completions`, { prompt: "x", response_format: schemaFormat, max_tokens: 200 })
    ).json()) as any;
    expect(Number.isInteger(JSON.parse(completion.choices[0].text).a)).toBe(true);
  });

  it("a grammar is the request's alone: the next request on the same sequence is free text again", async () => {
    // One sequence: all three requests run on it, greedily.
    const freeText = async () => ((await (await postJson(`${url}/v1/completions`, { prompt: "x", max_tokens: 40, temperature: 0 })).json()) as any).choices[0].text;
    const before = await freeText();
    expect(() => JSON.parse(before)).toThrow();
    await postJson(`${url}/v1/completions`, { prompt: "x", response_format: schemaFormat, max_tokens: 200, temperature: 0 });
    expect(await freeText()).toBe(before);
  });

  it("refuses schema features the grammar cannot enforce, naming them", async () => {
    const response = await postJson(`${url}/v1/chat/completions`, {
      messages: [{ role: "user", content: "x" }],
      response_format: {
        type: "json_schema",
        json_schema: { name: "n", schema: { type: "object", properties: { a: { type: "integer", minimum: 3 }, b: { type: "string", pattern: "^x" } } } },
      },
    });
    expect(response.status).toBe(400);
    const { detail } = (await response.json()) as any;
    expect(detail).toContain("properties/a: minimum");
    expect(detail).toContain("properties/b: pattern");
    const badType = await postJson(`${url}/v1/chat/completions`, { messages: [{ role: "user", content: "x" }], response_format: { type: "grammar" } });
    expect(badType.status).toBe(400);
    expect(((await badType.json()) as any).detail).toContain("response_format.type");
  });

  it("refuses unsupported parameters with a 400 naming them", async () => {
    const chat = await postJson(`${url}/v1/chat/completions`, {
      messages: [{ role: "user", content: "x" }],
      logprobs: true,
      top_logprobs: 2,
      tools: [{ type: "function", function: { name: "f", parameters: {} } }],
      tool_choice: "auto",
      logit_bias: { "5": 10 },
    });
    expect(chat.status).toBe(400);
    expect(((await chat.json()) as any).detail).toMatch(/^unsupported parameters: logprobs, top_logprobs, tools, tool_choice, logit_bias \(/);
    for (const [field, value] of [["best_of", 2], ["suffix", "end"], ["echo", true], ["logprobs", 1], ["functions", [{ name: "f" }]]] as const) {
      const response = await postJson(`${url}/v1/completions`, { prompt: "x", max_tokens: 1, [field]: value });
      expect(response.status, field).toBe(400);
      expect(((await response.json()) as any).detail, field).toContain(field);
    }
    const n = await postJson(`${url}/v1/completions`, { prompt: "x", max_tokens: 1, n: 2 });
    expect(n.status).toBe(400);
    expect(((await n.json()) as any).detail).toBe("n: must be <= 1");
  });

  it("accepts the defaults clients send, through the official client too", async () => {
    const defaults = await postJson(`${url}/v1/completions`, {
      prompt: "x",
      max_tokens: 2,
      n: 1,
      echo: false,
      best_of: 1,
      logprobs: null,
      suffix: null,
      logit_bias: {},
      response_format: { type: "text" },
    });
    expect(defaults.status).toBe(200);
    const chatDefaults = await postJson(`${url}/v1/chat/completions`, {
      messages: [{ role: "user", content: "x" }],
      max_tokens: 2,
      logprobs: false,
      top_logprobs: null,
      tools: [],
      tool_choice: "none",
      parallel_tool_calls: true,
    });
    expect(chatDefaults.status).toBe(200);

    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused" });
    const chat = await client.chat.completions.create({
      model: "acme/tiny",
      messages: [{ role: "user", content: "x" }],
      max_tokens: 200,
      response_format: { type: "json_schema", json_schema: { name: "answer", schema: schemaFormat.json_schema.schema } },
    });
    expect(Number.isInteger(JSON.parse(chat.choices[0]!.message.content!).a)).toBe(true);
    await expect(client.chat.completions.create({ model: "acme/tiny", messages: [{ role: "user", content: "x" }], logprobs: true })).rejects.toMatchObject({
      status: 400,
    });
  });
});
