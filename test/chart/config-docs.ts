// The generated parts of docs/configuration.md: the chart's values (from the `# --` comments of
// charts/corral/values.yaml) and every command's flags and environment variables (from the
// commander commands themselves, so the table is what `corral <command> --help` prints).
// test/chart/docs.test.ts checks that the file is up to date; CORRAL_UPDATE_DOCS=1 rewrites it.

import type { Command, Option } from "commander";
import { isMap, isScalar, parseDocument, type Pair, type YAMLMap } from "yaml";

export interface ValueDoc {
  path: string;
  /** The default, as compact JSON. */
  defaultJson: string;
  description: string | undefined;
}

/** The `-- ` description in a comment (the last one: the file's header may come before it). */
function docComment(comment: string | undefined | null): string | undefined {
  if (!comment) return undefined;
  const lines = comment.split("\n").map((line) => line.trim());
  const start = lines.map((line) => line.startsWith("--")).lastIndexOf(true);
  if (start < 0) return undefined;
  return lines
    .slice(start)
    .join(" ")
    .replace(/^--\s*/, "")
    .trim();
}

/**
 * Every value of values.yaml: a key with a `-- ` comment is one value (whatever its type); a map
 * without one is a section whose keys are walked; anything else is reported with no description.
 */
export function chartValues(valuesYaml: string): ValueDoc[] {
  const document = parseDocument(valuesYaml);
  const out: ValueDoc[] = [];
  const walk = (map: YAMLMap, prefix: string) => {
    map.items.forEach((item, index) => {
      const pair = item as Pair;
      const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
      const path = prefix + key;
      const description = docComment((isScalar(pair.key) ? pair.key.commentBefore : undefined) ?? (index === 0 ? map.commentBefore : undefined));
      if (description === undefined && isMap(pair.value) && pair.value.items.length > 0) {
        walk(pair.value, `${path}.`);
        return;
      }
      const value = (pair.value as { toJSON?: () => unknown } | null)?.toJSON?.() ?? null;
      out.push({ path, defaultJson: JSON.stringify(value), description });
    });
  };
  if (isMap(document.contents)) walk(document.contents, "");
  return out;
}

const cell = (text: string) => text.replace(/\|/g, "\\|").replace(/\n/g, " ");

export function valuesMarkdown(valuesYaml: string): string {
  const rows = chartValues(valuesYaml).map((value) => `| \`${value.path}\` | \`${cell(value.defaultJson)}\` | ${cell(value.description ?? "")} |`);
  return ["| Value | Default | Description |", "|---|---|---|", ...rows].join("\n");
}

export interface CommandDoc {
  name: string;
  description: string;
  options: { flags: string; env: string | undefined; defaultText: string | undefined; description: string; choices: readonly string[] | undefined; required: boolean }[];
}

/** The options of a commander command as `--help` shows them (Corral's settings put their default in the description). */
export function commandDoc(command: Command): CommandDoc {
  return {
    name: command.name(),
    description: command.description(),
    options: (command.options as Option[]).map((option) => {
      const match = /^(.*) \(default: (.*)\)$/s.exec(option.description);
      return {
        flags: option.flags,
        env: option.envVar,
        defaultText: match ? match[2] : option.defaultValue === undefined ? undefined : String(option.defaultValue),
        description: match ? match[1]! : option.description,
        choices: option.argChoices,
        required: option.mandatory,
      };
    }),
  };
}

export function commandsMarkdown(commands: readonly Command[]): string {
  const sections = commands.map((command) => {
    const doc = commandDoc(command);
    const rows = doc.options.map((option) => {
      const description = option.choices ? `${option.description} (one of ${option.choices.map((c) => `\`${c}\``).join(", ")})` : option.description;
      // A literal default in code style; a description of one ("the runtime's default") as text.
      const literal = (text: string) => (/\s/.test(text) ? cell(text) : `\`${cell(text)}\``);
      const defaultText = option.required ? "(required)" : option.defaultText === undefined ? "" : literal(option.defaultText);
      return `| \`${cell(option.flags)}\` | ${option.env ? `\`${option.env}\`` : ""} | ${defaultText} | ${cell(description)} |`;
    });
    return [`### \`corral ${doc.name}\``, "", `${doc.description}.`, "", "| Flag | Environment variable | Default | Description |", "|---|---|---|---|", ...rows].join("\n");
  });
  return sections.join("\n\n");
}

/** Replaces the text between `<!-- BEGIN GENERATED: name -->` and `<!-- END GENERATED: name -->`. */
export function replaceGenerated(text: string, name: string, content: string): string {
  const begin = `<!-- BEGIN GENERATED: ${name} -->`;
  const end = `<!-- END GENERATED: ${name} -->`;
  const from = text.indexOf(begin);
  const to = text.indexOf(end);
  if (from < 0 || to < from) throw new Error(`docs/configuration.md has no "${begin}" ... "${end}" block`);
  return `${text.slice(0, from + begin.length)}\n${content}\n${text.slice(to)}`;
}

export function generated(text: string, name: string): string | undefined {
  const begin = `<!-- BEGIN GENERATED: ${name} -->`;
  const end = `<!-- END GENERATED: ${name} -->`;
  const from = text.indexOf(begin);
  const to = text.indexOf(end);
  if (from < 0 || to < from) return undefined;
  return text.slice(from + begin.length, to).replace(/^\n/, "").replace(/\n$/, "");
}
