// Configurations for tests, built through each process's real parser and validation (so a test
// cannot run with settings the process would refuse): ephemeral loopback ports, quiet logs,
// short timings.
import { operatorConfig, type OperatorConfig } from "../../operator/config.js";
import { routerConfig, type RouterConfig } from "../../router/config.js";

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
