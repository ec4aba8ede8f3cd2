import { readFileSync } from "node:fs";
import os from "node:os";

/**
 * CPUs this process may really use: the cgroup CPU quota (a pod's CPU limit) when there is one,
 * never more than the cores it is allowed to run on. node-llama-cpp's own default oversubscribes
 * small machines and generation then collapses.
 */
export function usableCpus(readFile: (path: string) => string | undefined = tryRead): number {
  const cores = Math.max(1, os.availableParallelism());
  const quota = cgroupQuota(readFile);
  return quota === undefined ? cores : Math.max(1, Math.min(cores, quota));
}

function cgroupQuota(readFile: (path: string) => string | undefined): number | undefined {
  // cgroup v2: "max 100000" or "<quota> <period>".
  const v2 = readFile("/sys/fs/cgroup/cpu.max");
  if (v2 !== undefined) {
    const [quota, period] = v2.trim().split(/\s+/);
    if (quota === "max" || !quota || !period) return undefined;
    return Math.ceil(Number(quota) / Number(period)) || undefined;
  }
  // cgroup v1.
  const quota = Number(readFile("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")?.trim());
  const period = Number(readFile("/sys/fs/cgroup/cpu/cpu.cfs_period_us")?.trim());
  if (quota > 0 && period > 0) return Math.ceil(quota / period);
  return undefined;
}

function tryRead(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}
