import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["**/*.test.ts"],
    exclude: ["node_modules/**", "dist/**", ".cache/**"],
    // Integration tests start real runtimes; two cores cannot run many at once.
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    globalSetup: ["test/build-setup.ts", "test/global-setup.ts", "test/kube/global-setup.ts"],
  },
});
