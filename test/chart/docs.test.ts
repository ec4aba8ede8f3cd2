// docs/configuration.md lists every chart value and every flag and environment variable of every
// command; its tables are generated (test/chart/config-docs.ts) and must be up to date:
//   CORRAL_UPDATE_DOCS=1 npx vitest run test/chart/docs.test.ts   rewrites them.
// values.yaml and values.schema.json must describe the same values.

import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { makeTestModelCommand } from "../../common/testmodels/command.js";
import { operatorCommand } from "../../operator/main.js";
import { routerCommand, serveCommand } from "../../router/main.js";
import { runtimeCommand } from "../../runtime/main.js";
import { chartValues, commandDoc, commandsMarkdown, generated, replaceGenerated, valuesMarkdown } from "./config-docs.js";
import { CHART_DIR, ROOT } from "./helm.js";

const DOC = path.join(ROOT, "docs", "configuration.md");
const valuesYaml = readFileSync(path.join(CHART_DIR, "values.yaml"), "utf8");
const schema = JSON.parse(readFileSync(path.join(CHART_DIR, "values.schema.json"), "utf8")) as SchemaNode;
const commands = () => [serveCommand(), routerCommand(), operatorCommand(), runtimeCommand(), makeTestModelCommand()];

interface SchemaNode {
  type?: string | string[];
  properties?: Record<string, SchemaNode>;
  additionalProperties?: boolean | SchemaNode;
}

/** Paths of the schema's values: a closed object (additionalProperties: false) is walked, anything else is one value. */
function schemaLeaves(node: SchemaNode, prefix = ""): string[] {
  return Object.entries(node.properties ?? {}).flatMap(([key, child]) =>
    child.properties && child.additionalProperties === false ? schemaLeaves(child, `${prefix}${key}.`) : [`${prefix}${key}`],
  );
}

function schemaHas(path: string): boolean {
  let node: SchemaNode | undefined = schema;
  for (const key of path.split(".")) node = node?.properties?.[key];
  return node !== undefined;
}

describe("docs/configuration.md", () => {
  it("is up to date with values.yaml and the commands' settings", () => {
    let text = readFileSync(DOC, "utf8");
    const values = valuesMarkdown(valuesYaml);
    const settings = commandsMarkdown(commands());
    if (process.env.CORRAL_UPDATE_DOCS === "1") {
      text = replaceGenerated(replaceGenerated(text, "values", values), "commands", settings);
      writeFileSync(DOC, text);
    }
    const hint = "docs/configuration.md is out of date: run CORRAL_UPDATE_DOCS=1 npx vitest run test/chart/docs.test.ts";
    expect(generated(text, "values"), hint).toBe(values);
    expect(generated(text, "commands"), hint).toBe(settings);
  });

  it("names every flag and environment variable of every command", () => {
    const text = readFileSync(DOC, "utf8");
    for (const command of commands()) {
      for (const option of commandDoc(command).options) {
        // In a table cell, "|" is written "\\|".
        expect(text, `corral ${command.name()} ${option.flags}`).toContain(`\`${option.flags.replace(/\|/g, "\\|")}\``);
        if (option.env) expect(text, `corral ${command.name()} ${option.env}`).toContain(`\`${option.env}\``);
      }
    }
  });
});

describe("values.yaml and values.schema.json", () => {
  it("every value has a description (a `# --` comment above it)", () => {
    expect(chartValues(valuesYaml).filter((value) => !value.description).map((value) => value.path)).toEqual([]);
  });

  it("describe the same values", () => {
    const values = chartValues(valuesYaml).map((value) => value.path);
    expect(values.filter((path) => !schemaHas(path)), "in values.yaml, not in the schema").toEqual([]);
    const uncovered = schemaLeaves(schema).filter((leaf) => leaf !== "global" && !values.some((path) => leaf === path || leaf.startsWith(`${path}.`)));
    expect(uncovered, "in the schema, not in values.yaml").toEqual([]);
  });
});
