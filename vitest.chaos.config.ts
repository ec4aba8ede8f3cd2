import { defineConfig } from "vitest/config";

// `npm run test:chaos`: the reliability suite's fault injection (issue 14), minutes long, kept out
// of `npm test` (which runs **/*.test.ts; these files are *.chaos.ts). One file at a time: the
// faults kill and stop real processes and time their recovery.
export default defineConfig({
  test: {
    include: ["test/reliability/**/*.chaos.ts"],
    exclude: ["node_modules/**", "dist/**", ".cache/**"],
    maxWorkers: 1,
    testTimeout: 180_000,
    hookTimeout: 180_000,
    globalSetup: ["test/build-setup.ts", "test/global-setup.ts"],
  },
});
