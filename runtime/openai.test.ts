import { describe, expect, it } from "vitest";
import { checkOpenAiParameters, openAiChatTurns, openAiSampling, parseResponseFormat, supportedSchema } from "./openai.js";
import { boundedNumbers } from "./engine.js";

describe("checkOpenAiParameters", () => {
  it("accepts the values that mean off, and absent or null ones", () => {
    expect(() =>
      checkOpenAiParameters({ n: 1, echo: false, best_of: 1, logprobs: null, top_logprobs: 0, tools: [], tool_choice: "none", logit_bias: {}, suffix: "", modalities: ["text"] }),
    ).not.toThrow();
  });

  it("names every parameter it refuses", () => {
    expect(() => checkOpenAiParameters({ echo: true, logprobs: 2, function_call: "auto" })).toThrow(/^unsupported parameters: logprobs, function_call, echo \(/);
    expect(() => checkOpenAiParameters({ suffix: "x" })).toThrow(/^unsupported parameter: suffix \(/);
  });
});

describe("parseResponseFormat", () => {
  it("reads text, json_object and json_schema", () => {
    expect(parseResponseFormat(undefined)).toEqual({ type: "text" });
    expect(parseResponseFormat({ type: "text" })).toEqual({ type: "text" });
    expect(parseResponseFormat({ type: "json_object" })).toEqual({ type: "json_object" });
    expect(parseResponseFormat({ type: "json_schema", json_schema: { name: "x" } })).toEqual({ type: "json_object" });
    expect(parseResponseFormat({ type: "json_schema", json_schema: { name: "x", strict: true, schema: { type: "string", title: "T" } } })).toEqual({
      type: "json_schema",
      schema: { type: "string" },
    });
  });

  it("refuses what it cannot read", () => {
    expect(() => parseResponseFormat("json")).toThrow("response_format must be an object");
    expect(() => parseResponseFormat({ type: "regex" })).toThrow('response_format.type must be "text", "json_object" or "json_schema", not "regex"');
    expect(() => parseResponseFormat({ type: "json_schema" })).toThrow("response_format.json_schema must be an object");
  });
});

describe("supportedSchema", () => {
  it("turns anyOf into oneOf and keeps what node-llama-cpp supports", () => {
    const schema = {
      type: "object",
      properties: {
        name: { type: "string", maxLength: 20, description: "who" },
        when: { anyOf: [{ type: "string", format: "date" }, { type: "null" }] },
        tags: { type: "array", items: { $ref: "#/$defs/tag" }, maxItems: 3 },
      },
      $defs: { tag: { enum: ["a", "b"] } },
      required: ["name"],
      additionalProperties: false,
    };
    expect(supportedSchema(schema, "s")).toEqual({
      ...schema,
      properties: { ...schema.properties, when: { oneOf: [{ type: "string", format: "date" }, { type: "null" }] } },
    });
  });

  it("names unsupported keywords with their place", () => {
    const schema = { type: "object", properties: { n: { type: "number", minimum: 0 }, e: { type: "string", format: "email" } }, allOf: [], patternProperties: {} };
    expect(() => supportedSchema(schema, "s")).toThrow(
      's uses JSON Schema features Corral cannot enforce: s/properties/n: minimum; s/properties/e: format "email" (only date-time, date, time); s: allOf; s: patternProperties',
    );
    expect(() => supportedSchema({ $ref: "#/definitions/x" }, "s")).toThrow('$ref "#/definitions/x"');
  });
});

describe("boundedNumbers", () => {
  it("drops exponents from integers and bounds them on numbers", () => {
    const grammar = [
      'root ::= "{" integer-number-rule fractional-number-rule "}"',
      'integer-number-rule ::= "-"? ("0" | [1-9] [0-9]{0,15}) ([eE] [-+]? ("0" | [1-9] [0-9]{0,15}))?',
      'fractional-number-rule ::= "-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? ("0" | [1-9] [0-9]{0,15}))?',
    ].join("\n");
    expect(boundedNumbers(grammar).split("\n")).toEqual([
      'root ::= "{" integer-number-rule fractional-number-rule "}"',
      'integer-number-rule ::= "-"? ("0" | [1-9] [0-9]{0,15})',
      'fractional-number-rule ::= "-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,2})?',
    ]);
  });
});

describe("openAiSampling", () => {
  it("maps OpenAI names onto the seed's; no repetition penalty unless asked, and the caller's token default", () => {
    expect(openAiSampling({ temperature: 0.5, stop: "x", seed: 3 }, 16)).toEqual({
      max_length: 16,
      temperature: 0.5,
      top_p: null,
      top_k: null,
      repetition_penalty: 1,
      presence_penalty: null,
      frequency_penalty: null,
      seed: 3,
      stop: ["x"],
    });
    expect(openAiSampling({ max_tokens: 4, repetition_penalty: 1.2, stop: null })).toMatchObject({ max_length: 4, repetition_penalty: 1.2, stop: [] });
    expect(openAiSampling({})).toMatchObject({ max_length: null });
  });
});

describe("openAiChatTurns", () => {
  it("makes developer messages system ones and joins content parts", () => {
    expect(
      openAiChatTurns([
        { role: "developer", content: "be brief" },
        { role: "user", content: [{ type: "text", text: "a" }, { type: "text", text: "b" }] },
        { role: "assistant", content: null },
      ]),
    ).toEqual([
      { role: "system", content: "be brief" },
      { role: "user", content: "ab" },
      { role: "assistant", content: "" },
    ]);
  });
});
