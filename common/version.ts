import { readFileSync } from "node:fs";

/** The package version, read once from package.json (two levels up from dist/common or common). */
function readVersion(): string {
  for (const candidate of ["../package.json", "../../package.json"]) {
    try {
      const parsed = JSON.parse(readFileSync(new URL(candidate, import.meta.url), "utf8")) as { name?: string; version?: string };
      if (parsed.name === "corral" && parsed.version) return parsed.version;
    } catch {
      // try the next location
    }
  }
  return "0.0.0";
}

export const VERSION = readVersion();
