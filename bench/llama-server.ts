/**
 * Builds llama.cpp's own HTTP server from the llama.cpp source that the node-llama-cpp package
 * ships (a git bundle), so both servers run the same engine. Built once into
 * .cache/llama-server/ (git-ignored); later calls reuse the binary.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import { packagePath } from "../common/package-root.js";

const CACHE = packagePath(".cache", "llama-server");
const SOURCE = path.join(CACHE, "src");
const BUILD = path.join(CACHE, "build");
export const LLAMA_SERVER = path.join(BUILD, "bin", "llama-server");

function has(command: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" }).status === 0;
}

/** Returns the llama-server binary, building it if needed; undefined (with a message) if it cannot. */
export function ensureLlamaServer(log: (line: string) => void = (line) => console.error(line)): string | undefined {
  if (existsSync(LLAMA_SERVER)) return LLAMA_SERVER;
  const missing = ["git", "cmake", "c++"].filter((tool) => !has(tool));
  if (missing.length > 0) {
    log(`llama-server comparison skipped: ${missing.join(", ")} not found (install cmake and a C++ compiler to build it)`);
    return undefined;
  }
  const bundle = packagePath("node_modules", "node-llama-cpp", "llama", "gitRelease.bundle");
  if (!existsSync(bundle)) {
    log(`llama-server comparison skipped: ${bundle} is missing`);
    return undefined;
  }
  mkdirSync(CACHE, { recursive: true });
  if (!existsSync(path.join(SOURCE, "CMakeLists.txt"))) {
    rmSync(SOURCE, { recursive: true, force: true });
    log("cloning llama.cpp from node-llama-cpp's bundle");
    execFileSync("git", ["clone", "--quiet", bundle, SOURCE], { stdio: "inherit" });
  }
  log("building llama-server (a few minutes on 2 cores)");
  execFileSync(
    "cmake",
    ["-S", SOURCE, "-B", BUILD, "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DGGML_OPENMP=OFF", "-DBUILD_SHARED_LIBS=OFF",
      "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_BUILD_TESTS=OFF",
      "-DLLAMA_BUILD_EXAMPLES=OFF"],
    { stdio: "inherit" },
  );
  execFileSync("cmake", ["--build", BUILD, "--config", "Release", "--target", "llama-server", "-j", "2"], { stdio: "inherit" });
  return LLAMA_SERVER;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const binary = ensureLlamaServer();
  if (binary) console.log(binary);
}
