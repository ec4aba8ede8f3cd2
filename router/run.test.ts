import { Writable } from "node:stream";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { FakeRuntime } from "../test/router/fake-runtime.js";
import { StaticBackend } from "./backends/static.js";
import { testRouterConfig, type RouterConfig } from "./config.js";
import { run, type RouterHandle } from "./run.js";

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A logger whose lines the test reads. */
function capturedLogger() {
  const lines: { level: number; msg: string }[] = [];
  const sink = new Writable({
    write(chunk, _encoding, callback) {
      for (const line of String(chunk).split("\n")) if (line) lines.push(JSON.parse(line));
      callback();
    },
  });
  return { logger: pino({ level: "info" }, sink), lines };
}

async function startRouter(overrides: Partial<RouterConfig> = {}, logger = capturedLogger().logger): Promise<RouterHandle> {
  const fake = await new FakeRuntime("tiny").start();
  cleanups.push(() => fake.close());
  const backend = new StaticBackend([{ modelId: "tiny", endpoints: [{ id: "tiny", url: fake.url }] }]);
  const handle = await run(testRouterConfig({ rateLimitPoints: 0, ...overrides }), { backend, logger });
  cleanups.push(() => handle.close());
  return handle;
}

describe("listen address (local mode)", () => {
  it("warns when corral serve listens beyond loopback without API keys", async () => {
    const open = capturedLogger();
    await startRouter({ host: "0.0.0.0" }, open.logger);
    expect(open.lines.filter((line) => line.level === 40).map((line) => line.msg)).toEqual([
      expect.stringMatching(/listening on 0\.0\.0\.0 without API keys.*--api-keys-file/),
    ]);

    const keyed = capturedLogger();
    await startRouter({ host: "0.0.0.0", apiKeys: ["sk-test"] }, keyed.logger);
    const loopback = capturedLogger();
    await startRouter({ host: "127.0.0.1" }, loopback.logger);
    const cluster = capturedLogger();
    await startRouter({ host: "0.0.0.0", backend: "static", upstream: ["tiny=http://127.0.0.1:1"] }, cluster.logger);
    for (const quiet of [keyed, loopback, cluster]) expect(quiet.lines.filter((line) => line.level === 40)).toEqual([]);
  });
});
