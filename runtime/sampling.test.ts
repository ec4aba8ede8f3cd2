import { describe, expect, it } from "vitest";
import { DEFAULT_SAMPLING } from "../common/api.js";
import { ConfigError } from "../common/errors.js";
import { parseDefaults, planSampling } from "./sampling.js";

describe("planSampling", () => {
  it("uses the API defaults for everything left out", () => {
    const plan = planSampling({}, { ...DEFAULT_SAMPLING }, 100_000);
    expect(plan).toMatchObject({ maxTokens: 8192, temperature: 0.7, topP: 0.9, topK: 80, repetitionPenalty: 1.15 });
  });

  it("is greedy when do_sample is false, whatever the temperature", () => {
    expect(planSampling({ do_sample: false, temperature: 1.5 }, { ...DEFAULT_SAMPLING }, 100).temperature).toBe(0);
  });

  it("clamps max_length to what the context leaves", () => {
    expect(planSampling({ max_length: 16384 }, { ...DEFAULT_SAMPLING }, 300).maxTokens).toBe(300);
    expect(planSampling({ max_length: 5 }, { ...DEFAULT_SAMPLING }, 300).maxTokens).toBe(5);
  });

  it("treats null as absent", () => {
    expect(planSampling({ max_length: null, temperature: null }, { ...DEFAULT_SAMPLING }, 10_000)).toMatchObject({ maxTokens: 8192, temperature: 0.7 });
  });
});

describe("parseDefaults", () => {
  it("overrides the API's defaults per model", () => {
    expect(parseDefaults('{"temperature":0.2,"max_length":256}')).toEqual({ ...DEFAULT_SAMPLING, temperature: 0.2, max_length: 256 });
  });

  it.each([
    ["not json", "{", /not valid JSON/],
    ["out of range", '{"top_p": 2}', /top_p: must be <= 1/],
    ["unknown key", '{"temprature": 1}', /defaults/],
  ])("rejects %s with a message naming the problem", (_name, json, message) => {
    expect(() => parseDefaults(json)).toThrow(ConfigError);
    expect(() => parseDefaults(json)).toThrow(message);
  });
});

describe("sampling bounds", () => {
  it("accept the API's defaults and refuse a temperature or repetition_penalty above 2, in requests and in --defaults", async () => {
    const Value = (await import("typebox/value")).default;
    const { ChatRequest, GenerateRequest, OpenAiCompletionRequest } = await import("../common/api.js");
    expect(Value.Check(GenerateRequest, { prompt: "x", ...DEFAULT_SAMPLING })).toBe(true);
    expect(Value.Check(ChatRequest, { messages: [{ role: "user", content: "x" }], temperature: 2, repetition_penalty: 2 })).toBe(true);
    expect(Value.Check(GenerateRequest, { prompt: "x", temperature: 1e308 })).toBe(false);
    expect(Value.Check(GenerateRequest, { prompt: "x", repetition_penalty: 2.5 })).toBe(false);
    expect(Value.Check(OpenAiCompletionRequest, { prompt: "x", repetition_penalty: 1e308 })).toBe(false);
    expect(() => parseDefaults('{"temperature":3}')).toThrow(/--defaults \(CORRAL_DEFAULTS\): temperature: /);
    expect(() => parseDefaults('{"repetition_penalty":1e308}')).toThrow(/--defaults \(CORRAL_DEFAULTS\): repetition_penalty: /);
  });
});
