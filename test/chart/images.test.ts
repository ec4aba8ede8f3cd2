// The Dockerfile cannot be built here (no Docker engine), so what can go wrong without a build is
// checked against the project: every folder the build compiles and every file the package ships
// reaches the images (Dockerfile and .dockerignore), both images run as the model pods' user, and
// the `corral` launcher they put on the PATH starts the CLI.

import { spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { RUNTIME_UID } from "../../operator/desired.js";
import { ROOT } from "./helm.js";

const dockerfile = readFileSync(path.join(ROOT, "Dockerfile"), "utf8");
const dockerignore = readFileSync(path.join(ROOT, ".dockerignore"), "utf8");
const launcherPath = path.join(ROOT, "docker", "corral");
const pkg = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as { version: string; bin: Record<string, string>; files: string[] };
const buildInclude = (JSON.parse(readFileSync(path.join(ROOT, "tsconfig.build.json"), "utf8")) as { include: string[] }).include;

/** The instructions of each stage (continuation lines joined, comments dropped), by stage name. */
function stages(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let current: string[] | undefined;
  const lines = text.split("\n").filter((line) => !/^\s*#/.test(line));
  const joined = lines.join("\n").replace(/\\\n/g, " ").split("\n");
  for (const line of joined) {
    const from = /^FROM\s+(?:--platform=\S+\s+)?\S+\s+AS\s+(\S+)/i.exec(line);
    if (from) out.set(from[1]!, (current = []));
    else if (current && line.trim()) current.push(line.trim());
  }
  return out;
}

/** True when the .dockerignore allowlist lets a top-level path into the build context. */
function inContext(entry: string): boolean {
  let included = true;
  for (const raw of dockerignore.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const negate = line.startsWith("!");
    const pattern = (negate ? line.slice(1) : line).replace(/\/$/, "");
    if (pattern === "*" || pattern === entry) included = negate;
  }
  return included;
}

const all = stages(dockerfile);
const copies = (stage: string) => (all.get(stage) ?? []).filter((line) => line.startsWith("COPY ")).map((line) => line.split(/\s+/).filter((word) => !word.startsWith("--")));

describe("Dockerfile and .dockerignore", () => {
  it("has a build stage, a CPU image (the default: last) and a CUDA image", () => {
    expect([...all.keys()]).toEqual(expect.arrayContaining(["build", "deps", "deps-cpu", "deps-cuda", "cuda", "cpu"]));
    expect([...all.keys()].at(-1)).toBe("cpu");
  });

  it("compiles every folder tsconfig.build.json includes, and the context holds them", () => {
    const copied = copies("build").map((words) => words[1]);
    for (const folder of buildInclude) {
      expect(copied, folder).toContain(folder);
      expect(inContext(folder), `.dockerignore leaves out ${folder}`).toBe(true);
    }
    expect(all.get("build")!.some((line) => line.includes("tsc -p tsconfig.build.json"))).toBe(true);
  });

  it.each(["cpu", "cuda"])("%s: ships what the npm package ships, runs as the model pods' user, starts `corral`", (stage) => {
    const lines = all.get(stage)!;
    const destinations = copies(stage).map((words) => words.at(-1));
    for (const file of ["package.json", ...pkg.files.filter((f) => f !== "dist")]) {
      expect(destinations, `${stage} lacks ${file}`).toContain(file === "package.json" ? "./" : `./${file}`);
      expect(inContext(file), `.dockerignore leaves out ${file}`).toBe(true);
    }
    expect(copies(stage).some((words) => words[1] === "/src/dist" && words.at(-1) === "./dist")).toBe(true);
    expect(lines.filter((line) => line.startsWith("USER ")).at(-1)).toBe(`USER ${RUNTIME_UID}:${RUNTIME_UID}`);
    expect(lines).toContain('ENTRYPOINT ["corral"]');
    expect(lines.some((line) => line.startsWith("WORKDIR /app"))).toBe(true);
    expect(lines.some((line) => /HOME=\/tmp/.test(line))).toBe(true);
    expect(copies(stage).some((words) => words[1] === "docker/corral" && words.at(-1) === "/usr/local/bin/corral")).toBe(true);
    expect(inContext("docker/corral")).toBe(true);
  });

  // Each start loads the whole CLI (node-llama-cpp included): seconds apiece on a small machine.
  it("the launcher runs the CLI the package declares (with Node where the images have it)", { timeout: 180_000 }, () => {
    const launcher = readFileSync(launcherPath, "utf8");
    expect(launcher.split("\n")[0]).toBe("#!/nodejs/bin/node");
    expect(launcher).toContain(`import("/app/${pkg.bin.corral}")`);
    expect(statSync(launcherPath).mode & 0o111).not.toBe(0);
    // The same file with this machine's Node and checkout in place of the image's paths.
    const dir = mkdtempSync(path.join(tmpdir(), "corral-launcher-"));
    try {
      const local = path.join(dir, "corral");
      writeFileSync(local, launcher.replace("#!/nodejs/bin/node", `#!${process.execPath}`).replace("/app/", `${ROOT}/`));
      chmodSync(local, 0o755);
      // The commands the chart's pods run (router, operator) and the operator's model pods run (runtime).
      for (const command of ["router", "operator", "runtime"]) {
        const help = spawnSync(local, [command, "--help"], { encoding: "utf8" });
        expect(help.status, `corral ${command}: ${help.stderr}`).toBe(0);
        expect(help.stdout).toContain(`Usage: corral ${command}`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
