import { readdirSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { DEFAULT_SAMPLING, MAX_LENGTH_LIMIT, MAX_TEMPERATURE } from "../common/api.js";
import { packagePath } from "../common/package-root.js";
import { loadCatalog, parseCatalog } from "./catalog.js";

const withDefaults = (defaults: string) => `models:\n  - id: a\n    source: s\n    defaults: ${defaults}\n`;

describe("a catalog model's sampling defaults", () => {
  it("take the API's names and bounds", () => {
    expect(parseCatalog(withDefaults(JSON.stringify(DEFAULT_SAMPLING)), "x.yaml").models[0]!.defaults).toEqual(DEFAULT_SAMPLING);
    expect(parseCatalog(withDefaults(`{max_length: ${MAX_LENGTH_LIMIT}, temperature: ${MAX_TEMPERATURE}}`), "x.yaml").models[0]!.defaults).toEqual({
      max_length: MAX_LENGTH_LIMIT,
      temperature: MAX_TEMPERATURE,
    });
  });

  it.each([
    ["a max_length above the API's", `{max_length: ${MAX_LENGTH_LIMIT + 1}}`, /models\.0\.defaults\.max_length/],
    ["a temperature above the API's", `{temperature: ${MAX_TEMPERATURE + 0.5}}`, /models\.0\.defaults\.temperature/],
    ["a repetition_penalty of 0", "{repetition_penalty: 0}", /models\.0\.defaults\.repetition_penalty/],
    ["an unknown knob", "{temprature: 1}", /temprature/],
  ])("refuse %s, naming the field", (_what, defaults, message) => {
    expect(() => parseCatalog(withDefaults(defaults), "x.yaml")).toThrow(message);
  });

  it("of every bundled catalog are valid", () => {
    const files = readdirSync(packagePath("catalog")).filter((file) => file.endsWith(".yaml"));
    expect(files.length).toBeGreaterThan(0);
    for (const file of files) expect(() => loadCatalog(packagePath("catalog", file)), file).not.toThrow();
  });
});
