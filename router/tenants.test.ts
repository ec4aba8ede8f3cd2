import { createHash } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { waitFor } from "../test/helpers/wait.js";
import { KeyStore, Tenants } from "./tenants.js";

let dir = "";
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = "";
});

function file(name: string, text: string): string {
  dir ||= mkdtempSync(path.join(os.tmpdir(), "corral-keys-"));
  const at = path.join(dir, name);
  writeFileSync(at, text);
  return at;
}

const KEYS_FILE = `
keys:
  - name: team-a
    key: sk-team-a-0123456789
    scopes: [generate]
    models: ["Qwen/*", tiny]
    limits: { requestsPerMinute: 120, tokensPerMinute: 5000, tokensPerDay: 100000 }
    weight: 3
  - name: ops
    sha256: ${createHash("sha256").update("sk-ops-0123456789abcdef").digest("hex")}
    scopes: [generate, models:manage, admin]
`;

describe("plain key lists", () => {
  it("read keys from a file and a list, and check Bearer headers; a key is known by a short digest", () => {
    const keys = Tenants.load({ apiKeysFile: file("keys", "# team keys\nkey-one\n\n  key-two  # the CI key\n"), apiKeys: ["key-three"] });
    expect(keys.count).toBe(3);
    expect(keys.verify("Bearer key-two")?.name).toMatch(/^key:[0-9a-f]{16}$/);
    expect(keys.verify("bearer key-three")).toBe(keys.verify("Bearer key-three"));
    expect(keys.verify("Bearer key-tw")).toBeNull();
    expect(keys.verify("Basic key-one")).toBeNull();
    expect(keys.verify(undefined)).toBeNull();
    expect(keys.verify("Bearer key-one")).not.toBe(keys.verify("Bearer key-two"));
    // Without admin keys a plain key may do everything (as before scopes); with them, only generate.
    expect([...keys.verify("Bearer key-one")!.scopes]).toEqual(["generate", "models:manage", "admin"]);
    const withAdmins = Tenants.load({ apiKeys: ["user"], adminKeys: ["root"] });
    expect([...withAdmins.verify("Bearer user")!.scopes]).toEqual(["generate"]);
    expect([...withAdmins.verify("Bearer root")!.scopes]).toEqual(["generate", "models:manage", "admin"]);
    expect(withAdmins.adminOnly).toBe(false);
    expect(Tenants.load({ adminKeys: ["root"] }).adminOnly).toBe(true);
  });

  it("are off without keys, and a file without keys is an error naming it", () => {
    expect(Tenants.load({}).enabled).toBe(false);
    const empty = file("empty", "# nothing\n");
    expect(() => Tenants.load({ apiKeysFile: empty })).toThrow(`API keys file ${empty} holds no key`);
    expect(() => Tenants.load({ adminKeysFile: empty })).toThrow(`admin keys file ${empty} holds no key`);
    expect(() => Tenants.load({ apiKeysFile: path.join(os.tmpdir(), "corral-no-such-file") })).toThrow(/cannot be read/);
  });
});

describe("the keys file", () => {
  it("gives each key a name, scopes, allowed models, limits and a weight; a digest stands for a key", () => {
    const keys = Tenants.load({ keysFile: file("keys.yaml", KEYS_FILE) });
    const a = keys.verify("Bearer sk-team-a-0123456789")!;
    expect(a).toMatchObject({ name: "team-a", models: ["Qwen/*", "tiny"], requests: { perMinute: 120, burst: 20 }, tokensPerMinute: 5000, tokensPerDay: 100000, weight: 3 });
    expect([...a.scopes]).toEqual(["generate"]);
    expect(keys.mayUse(a, "Qwen/Qwen2.5-0.5B-Instruct")).toBe(true);
    expect(keys.mayUse(a, "tiny")).toBe(true);
    expect(keys.mayUse(a, "tiny-2")).toBe(false);
    expect(keys.mayUse(a, "Qwen")).toBe(false);
    const ops = keys.verify("Bearer sk-ops-0123456789abcdef")!;
    expect(ops.name).toBe("ops");
    expect(keys.mayUse(ops, "anything")).toBe(true);
    expect(keys.list().map((t) => t.name)).toEqual(["team-a", "ops"]);
  });

  it.each([
    ["not YAML", "keys: [", /is not valid YAML or JSON/],
    ["no keys list", "users: []", /expected \{ keys: \[/],
    ["an unknown scope", "keys: [{name: a, key: sk-0123456789abcdef, scopes: [root]}]", /keys\.0\.scopes\.0/],
    ["a short key", "keys: [{name: a, key: short}]", /keys\.0\.key/],
    ["both key and sha256", `keys: [{name: a, key: sk-0123456789abcdef, sha256: '${"0".repeat(64)}'}]`, /keys\.0 \(a\): give exactly one of key and sha256/],
    ["neither", "keys: [{name: a}]", /give exactly one of key and sha256/],
    ["a duplicate name", "keys: [{name: a, key: sk-0123456789abcdef}, {name: a, key: sk-fedcba9876543210}]", /two keys are named "a"/],
    ["a duplicate key", "keys: [{name: a, key: sk-0123456789abcdef}, {name: b, key: sk-0123456789abcdef}]", /key "b" is the same key as another entry/],
    ["an unknown field", "keys: [{name: a, key: sk-0123456789abcdef, quota: 5}]", /keys\.0/],
    ["a bad name", "keys: [{name: 'a b', key: sk-0123456789abcdef}]", /keys\.0\.name/],
  ])("refuses %s, naming the file and the entry", (_what, text, message) => {
    const at = file("bad.yaml", text);
    expect(() => Tenants.load({ keysFile: at })).toThrow(message);
    expect(() => Tenants.load({ keysFile: at })).toThrow(`keys file ${at}`);
  });
});

describe("KeyStore", () => {
  it("reloads a changed file, rotating keys without a restart, and keeps the keys in force when the new file is bad or empty", async () => {
    const at = file("keys.yaml", "keys: [{name: a, key: sk-first-0123456789}]");
    const outcomes: string[] = [];
    const store = new KeyStore({ keysFile: at }, { logger: pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" }), onReload: (o) => outcomes.push(o) });
    store.watch(50);
    try {
      expect(store.current.verify("Bearer sk-first-0123456789")?.name).toBe("a");
      writeFileSync(at, "keys: [{name: a, key: sk-second-0123456789}]");
      await waitFor(() => store.current.verify("Bearer sk-second-0123456789") !== null, { message: "the new key was not loaded", timeoutMs: 5000 });
      expect(store.current.verify("Bearer sk-first-0123456789")).toBeNull();
      writeFileSync(at, "keys: [");
      await waitFor(() => outcomes.includes("failure"), { message: "the bad file was not noticed", timeoutMs: 5000 });
      expect(store.current.verify("Bearer sk-second-0123456789")?.name).toBe("a");
      writeFileSync(at, "keys: []");
      await waitFor(() => outcomes.filter((o) => o === "failure").length >= 2, { message: "the empty file was not noticed", timeoutMs: 5000 });
      expect(store.current.enabled).toBe(true);
    } finally {
      store.close();
    }
  });
});
