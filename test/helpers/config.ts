// Configurations for tests, built through each process's real parser and validation (so a test
// cannot run with settings the process would refuse): ephemeral loopback ports, quiet logs,
// short timings.
import { operatorConfig, type OperatorConfig } from "../../operator/config.js";
import path from "node:path";
import { routerConfig, type RouterConfig } from "../../router/config.js";
import { REPO_ROOT } from "./test-models.js";

/** Where `corral serve` in tests keeps the models it makes or downloads (shared between runs). */
export const SERVE_MODEL_DIR = path.join(REPO_ROOT, ".cache", "router-test-models");

/** A configuration for tests: ephemeral loopback port, quiet logs, short timings. */
export function testOperatorConfig(overrides: Partial<OperatorConfig> = {}): OperatorConfig {
  return operatorConfig({
    host: "127.0.0.1",
    port: 0,
    logLevel: "silent",
    leaseDurationSeconds: 2,
    renewDeadlineSeconds: 1.5,
    retryPeriodSeconds: 0.25,
    progressSeconds: 0.5,
    retryMaxSeconds: 2,
    shutdownSeconds: 5,
    ...overrides,
  });
}

/** A configuration for tests: ephemeral loopback port, quiet logs, everything else default. */
export function testRouterConfig(overrides: Partial<RouterConfig> = {}): RouterConfig {
  return routerConfig({ host: "127.0.0.1", port: 0, logLevel: "silent", drainSeconds: 2, ...overrides });
}

/**
 * A configuration for `corral serve` in tests (router + local backend with real runtime
 * children) serving `catalog`: ephemeral loopback port, one thread and two sequences per runtime,
 * up to three models loaded, the shared test model folder, quiet logs (runtime warnings only),
 * no rate limit, 60 s to wait for a model to become ready, 2 s drain.
 */
export function testServeConfig(catalog: string, overrides: Partial<RouterConfig> = {}): RouterConfig {
  return routerConfig({
    backend: "local",
    host: "127.0.0.1",
    port: 0,
    catalog,
    threads: 1,
    parallel: 2,
    maxModels: 3,
    modelDir: SERVE_MODEL_DIR,
    logLevel: process.env.TEST_LOG_LEVEL ?? "silent",
    runtimeLogLevel: "warn",
    rateLimitPoints: 0,
    readyWaitSeconds: 60,
    drainSeconds: 2,
    ...overrides,
  });
}
