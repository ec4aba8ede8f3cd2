import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { loadCatalog, parseCatalog } from "./catalog.js";
import { parseUpstream, routerConfig, RouterConfigSchema } from "./config.js";
import { packagePath } from "../common/package-root.js";

let dir = "";
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = "";
});

describe("routerConfig", () => {
  it("has the documented defaults", () => {
    const config = routerConfig({});
    expect(config).toMatchObject({
      host: "127.0.0.1",
      port: 8000,
      backend: "local",
      rateLimitPoints: 60,
      rateLimitDuration: 60,
      rateLimitBurst: 10,
      bodyLimitBytes: 1_048_576,
      maxBatchPrompts: 64,
      readyWaitSeconds: 60,
      trustedProxies: [],
      apiKeys: [],
      adminApiKeys: [],
      authFailureLimit: 10,
      authFailureWindowSeconds: 60,
      metricsPort: 0,
    });
    expect(config.catalog).toBe(packagePath("catalog", "models.yaml"));
    expect(config.runtimeEntry).toBe(packagePath("dist", "bin", "corral.js"));
  });

  it("listens on loopback in local mode and on every address in cluster mode, unless --host says otherwise", () => {
    expect(routerConfig({ backend: "local" }).host).toBe("127.0.0.1");
    expect(routerConfig({ backend: "kubernetes" }).host).toBe("0.0.0.0");
    expect(routerConfig({ backend: "static", upstream: "m=http://127.0.0.1:1" }).host).toBe("0.0.0.0");
    expect(routerConfig({ backend: "local", host: "0.0.0.0" }).host).toBe("0.0.0.0");
    expect(routerConfig({ backend: "kubernetes", host: "127.0.0.1" }).host).toBe("127.0.0.1");
  });

  it("converts flag and env strings, lists included", () => {
    const config = routerConfig({ port: "9000", rateLimitBurst: "5", trustedProxies: "10.0.0.0/8, 127.0.0.1", apiKeys: "a,b", redisUrl: "redis://x:6379" });
    expect(config).toMatchObject({ port: 9000, rateLimitBurst: 5, trustedProxies: ["10.0.0.0/8", "127.0.0.1"], apiKeys: ["a", "b"], redisUrl: "redis://x:6379" });
  });

  it("fails with a message naming the flag and the env var", () => {
    expect(() => routerConfig({ port: "eighty" })).toThrow(/--port \(CORRAL_PORT\)/);
    expect(() => routerConfig({ rateLimitPoints: "600", rateLimitDuration: "1", rateLimitBurst: "10" })).toThrow(/--rate-limit-burst \(CORRAL_RATE_LIMIT_BURST\) must be at least/);
    expect(() => routerConfig({ upstream: "no-url" })).toThrow(/--upstream/);
    expect(() => routerConfig({ port: "9000", metricsPort: "9000" })).toThrow(/--metrics-port \(CORRAL_METRICS_PORT\) must differ from --port/);
    expect(() => routerConfig({ authFailureWindowSeconds: "0" })).toThrow(/--auth-failure-window-seconds \(CORRAL_AUTH_FAILURE_WINDOW_SECONDS\)/);
  });

  it("converts the auth and metrics settings from strings", () => {
    const config = routerConfig({ adminApiKeys: "root-a, root-b", adminApiKeysFile: "/etc/admin", authFailureLimit: "5", authFailureWindowSeconds: "30", metricsPort: "9090" });
    expect(config).toMatchObject({ adminApiKeys: ["root-a", "root-b"], adminApiKeysFile: "/etc/admin", authFailureLimit: 5, authFailureWindowSeconds: 30, metricsPort: 9090 });
  });

  it("has the fair-queueing settings: one request waiting at each runtime, 32 per key in the router", () => {
    expect(routerConfig({})).toMatchObject({ endpointQueue: 1, queuePerKey: 32 });
    expect(routerConfig({ endpointQueue: "0", queuePerKey: "100" })).toMatchObject({ endpointQueue: 0, queuePerKey: 100 });
    expect(() => routerConfig({ endpointQueue: "-1" })).toThrow(/--endpoint-queue \(CORRAL_ENDPOINT_QUEUE\)/);
    expect(() => routerConfig({ queuePerKey: "many" })).toThrow(/--queue-per-key \(CORRAL_QUEUE_PER_KEY\)/);
  });

  it("parses upstreams with slashes in the model id", () => {
    expect(parseUpstream("microsoft/phi-2=http://10.0.0.7:8080/")).toEqual({ modelId: "microsoft/phi-2", url: "http://10.0.0.7:8080" });
  });
});

describe("the model catalog", () => {
  it("ships a default catalog whose default model is generated with no network", () => {
    const catalog = loadCatalog(packagePath("catalog", "models.yaml"));
    expect(catalog.defaultModel).toBe("tiny");
    expect(catalog.models.find((model) => model.id === "tiny")!.source).toBe("builtin:successor");
    expect(catalog.models.filter((model) => model.source.startsWith("hf:")).length).toBeGreaterThanOrEqual(2);
    expect(catalog.models.some((model) => model.id === "microsoft/phi-2")).toBe(true);
  });

  it("reports mistakes with the file and the field", () => {
    expect(() => parseCatalog("models: []", "x.yaml")).toThrow(/x\.yaml: models/);
    expect(() => parseCatalog("models:\n  - id: a\n", "x.yaml")).toThrow(/x\.yaml: .*source/);
    expect(() => parseCatalog("models:\n  - id: a\n    source: s\n    colour: red\n", "x.yaml")).toThrow(/colour/);
    expect(() => parseCatalog("default: b\nmodels:\n  - id: a\n    source: s\n", "x.yaml")).toThrow(/default "b" is not one of its models/);
    expect(() => parseCatalog("models:\n  - {id: a, source: s}\n  - {id: a, source: t}\n", "x.yaml")).toThrow(/appears twice/);
    expect(() => parseCatalog("models: [", "x.yaml")).toThrow(/not valid YAML/);
  });
});



describe("the commands", () => {
  it("store every setting under its config key (commander's name for the flag)", async () => {
    const { routerCommand, serveCommand } = await import("./main.js");
    for (const command of [routerCommand(), serveCommand()]) {
      for (const option of command.options) {
        const key = option.attributeName();
        expect(Object.keys(RouterConfigSchema.properties), `${command.name()} ${option.long}`).toContain(key);
      }
    }
  });
});

describe("flags through commander", () => {
  it("corral serve defaults to 127.0.0.1 and corral router to 0.0.0.0", async () => {
    const { routerCommand, serveCommand } = await import("./main.js");
    const { settingsFromOptions } = await import("../common/config.js");
    const { ROUTER_HOST_SETTING, SERVE_HOST_SETTING } = await import("./config.js");
    const serve = serveCommand();
    expect(serve.helpInformation()).toMatch(/--host <host>[^-]*\(default:\s+127\.0\.0\.1\)/);
    serve.parseOptions([]);
    expect(routerConfig({ ...settingsFromOptions(serve.opts(), [SERVE_HOST_SETTING]), backend: "local" }).host).toBe("127.0.0.1");
    const router = routerCommand();
    expect(router.helpInformation()).toMatch(/--host <host>\s+address to listen on\s+\(default:\s+0\.0\.0\.0\)/);
    router.parseOptions([]);
    expect(routerConfig({ ...settingsFromOptions(router.opts(), [ROUTER_HOST_SETTING]), backend: "kubernetes" }).host).toBe("0.0.0.0");
  });

  it("read several upstreams from one --upstream flag", async () => {
    const { routerCommand } = await import("./main.js");
    const { settingsFromOptions } = await import("../common/config.js");
    const { ROUTER_SETTINGS, STATIC_SETTINGS } = await import("./config.js");
    const command = routerCommand();
    command.parseOptions(["--upstream", "tiny=http://127.0.0.1:1,org/m=http://127.0.0.1:2", "--port", "0"]);
    const config = routerConfig({ ...settingsFromOptions(command.opts(), [...ROUTER_SETTINGS, ...STATIC_SETTINGS]), backend: "static" });
    expect(config.upstream.map(parseUpstream)).toEqual([
      { modelId: "tiny", url: "http://127.0.0.1:1" },
      { modelId: "org/m", url: "http://127.0.0.1:2" },
    ]);
  });
});
