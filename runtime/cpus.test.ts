import os from "node:os";
import { describe, expect, it } from "vitest";
import { usableCpus } from "./cpus.js";

const files = (entries: Record<string, string>) => (path: string) => entries[path];

describe("usableCpus", () => {
  const cores = os.availableParallelism();

  it("follows a cgroup v2 quota, rounded up", () => {
    expect(usableCpus(files({ "/sys/fs/cgroup/cpu.max": "50000 100000\n" }))).toBe(1);
  });

  it("never exceeds the cores", () => {
    expect(usableCpus(files({ "/sys/fs/cgroup/cpu.max": "6400000 100000" }))).toBe(cores);
  });

  it("uses the cores when there is no limit", () => {
    expect(usableCpus(files({ "/sys/fs/cgroup/cpu.max": "max 100000" }))).toBe(cores);
    expect(usableCpus(files({}))).toBe(cores);
  });

  it("reads cgroup v1 quotas", () => {
    expect(
      usableCpus(files({ "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "100000", "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000" })),
    ).toBe(1);
  });
});
