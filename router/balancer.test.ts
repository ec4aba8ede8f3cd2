import { afterEach, describe, expect, it, vi } from "vitest";
import { StaticBackend } from "./backends/static.js";
import { ModelStartError, type Backend, type Endpoint } from "./backends/types.js";
import { Balancer, NoEndpointError, SUSPECT_MS } from "./balancer.js";
import { hashKey } from "./prefix-ring.js";
import type { RoutingStrategy } from "../common/routing.js";

const a: Endpoint = { id: "a", url: "http://127.0.0.1:1" };
const b: Endpoint = { id: "b", url: "http://127.0.0.1:2" };
const c: Endpoint = { id: "c", url: "http://127.0.0.1:3" };
const refused = Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" });

afterEach(() => {
  vi.useRealTimers();
});

describe("Balancer", () => {
  it("gives each request the endpoint with the fewest in flight, and counts leases until released", () => {
    const balancer = new Balancer(new StaticBackend([{ modelId: "m", endpoints: [a, b, c] }]));
    const first = balancer.tryAcquire("m")!;
    const second = balancer.tryAcquire("m")!;
    const third = balancer.tryAcquire("m")!;
    expect(new Set([first, second, third].map((lease) => lease.endpoint.id))).toEqual(new Set(["a", "b", "c"]));
    second.release();
    second.release(); // idempotent: a second release does not free someone else's count
    expect(balancer.inFlightTo(second.endpoint)).toBe(0);
    expect(balancer.tryAcquire("m")!.endpoint.id).toBe(second.endpoint.id);
    expect(balancer.inFlightTo(first.endpoint)).toBe(1);
  });

  it("leaves an endpoint that just failed out while others are ready, and takes it back after SUSPECT_MS", () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    const backend: Backend = new StaticBackend([{ modelId: "m", endpoints: [a, b] }]);
    const reported: string[] = [];
    backend.reportFailure = (_model: string, endpoint: Endpoint) => void reported.push(endpoint.id);
    const balancer = new Balancer(backend);
    balancer.reportFailure("m", a, refused);
    expect(reported).toEqual(["a"]);
    for (let i = 0; i < 6; i++) balancer.tryAcquire("m")!.release();
    expect(Array.from({ length: 4 }, () => balancer.tryAcquire("m")!.endpoint.id)).toEqual(["b", "b", "b", "b"]);
    vi.setSystemTime(Date.now() + SUSPECT_MS + 1);
    expect(balancer.tryAcquire("m")!.endpoint.id).toBe("a");
  });

  it("still serves from a suspect or avoided endpoint when it is the only one", () => {
    const balancer = new Balancer(new StaticBackend([{ modelId: "m", endpoints: [a] }]));
    balancer.reportFailure("m", a, refused);
    expect(balancer.tryAcquire("m", { avoid: a })!.endpoint.id).toBe("a");
    const both = new Balancer(new StaticBackend([{ modelId: "m", endpoints: [a, b] }]));
    expect(both.tryAcquire("m", { avoid: a })!.endpoint.id).toBe("b");
    expect(both.tryAcquire("m", { avoid: b })!.endpoint.id).toBe("a");
  });

  it("starts a model with no ready endpoint and waits for it; the backend's refusal and the caller's abort pass through", async () => {
    const backend = new StaticBackend([{ modelId: "m", endpoints: [] }]);
    let ready: (() => void) | undefined;
    backend.ensureReady = (modelId, signal) =>
      new Promise<void>((resolve, reject) => {
        ready = () => {
          backend.setEndpoints(modelId, [b]);
          resolve();
        };
        signal.addEventListener("abort", () => reject(signal.reason), { once: true });
      });
    const balancer = new Balancer(backend);
    expect(balancer.tryAcquire("m")).toBeUndefined();
    const pending = balancer.acquire("m", new AbortController().signal);
    ready!();
    expect((await pending).endpoint.id).toBe("b");

    const aborted = new AbortController();
    backend.setEndpoints("m", []);
    const waiting = balancer.acquire("m", aborted.signal);
    aborted.abort(new Error("client went away"));
    await expect(waiting).rejects.toThrow("client went away");

    backend.ensureReady = (modelId) => Promise.reject(new ModelStartError(modelId, "model m could not be started: no such file"));
    await expect(balancer.acquire("m", new AbortController().signal)).rejects.toBeInstanceOf(ModelStartError);
  });

  it("a model that was ready and is not any more when the wait ends is NoEndpointError", async () => {
    const backend = new StaticBackend([{ modelId: "m", endpoints: [] }]);
    backend.ensureReady = async () => undefined;
    await expect(new Balancer(backend).acquire("m", new AbortController().signal)).rejects.toBeInstanceOf(NoEndpointError);
  });

  it("tells a backend that makes room how busy each endpoint is", () => {
    const backend: Backend = new StaticBackend([{ modelId: "m", endpoints: [a] }]);
    let inFlight: ((endpoint: Endpoint) => number) | undefined;
    backend.trackInFlight = (count: (endpoint: Endpoint) => number) => void (inFlight = count);
    const balancer = new Balancer(backend);
    const lease = balancer.tryAcquire("m")!;
    expect(inFlight!(a)).toBe(1);
    lease.release();
    expect(inFlight!(a)).toBe(0);
  });
});

describe("Balancer with prefix routing", () => {
  const endpoints = Array.from({ length: 4 }, (_, i): Endpoint => ({ id: `pod-${i}`, url: `http://127.0.0.1:${1000 + i}` }));

  it("sends every request with one key to one endpoint while loads stay within the bound, and different keys across endpoints", () => {
    const balancer = new Balancer(new StaticBackend([{ modelId: "m", endpoints }]), { strategy: "prefix" });
    const homes = new Map<number, string>();
    for (let conversation = 0; conversation < 200; conversation++) {
      const key = hashKey(`system prompt\u0000question ${conversation}`);
      const seen = new Set(Array.from({ length: 5 }, () => {
        const lease = balancer.tryAcquire("m", { key })!;
        lease.release();
        return lease.endpoint.id;
      }));
      expect(seen.size).toBe(1);
      homes.set(key, [...seen][0]!);
    }
    const share = new Map<string, number>();
    for (const home of homes.values()) share.set(home, (share.get(home) ?? 0) + 1);
    expect(share.size).toBe(4);
    for (const count of share.values()) expect(count).toBeGreaterThan(20);
  });

  it("passes over an endpoint at its bound to the next one on the ring, and never lets one exceed it", () => {
    const picks: string[] = [];
    const balancer = new Balancer(new StaticBackend([{ modelId: "m", endpoints }]), { strategy: "prefix", loadFactor: 1.25, onPrefixPick: (outcome) => picks.push(outcome) });
    const held = Array.from({ length: 40 }, () => balancer.tryAcquire("m", { key: hashKey("one hot prefix") })!);
    const loads = endpoints.map((endpoint) => balancer.inFlightTo(endpoint));
    expect(loads.reduce((a, b) => a + b)).toBe(40);
    // The bound for the 40th request: ceil(1.25 * 40 / 4) = 13.
    for (const load of loads) expect(load).toBeLessThanOrEqual(13);
    expect(Math.max(...loads)).toBe(13);
    expect(picks[0]).toBe("hit");
    expect(picks).toContain("spill");
    for (const lease of held) lease.release();
    expect(endpoints.map((endpoint) => balancer.inFlightTo(endpoint))).toEqual([0, 0, 0, 0]);
  });

  it("moves only the keys of an endpoint that goes away, and leaves out a suspect one without moving the others", () => {
    const backend = new StaticBackend([{ modelId: "m", endpoints }]);
    const balancer = new Balancer(backend, { strategy: "prefix" });
    const home = (key: string) => {
      const lease = balancer.tryAcquire("m", { key: hashKey(key) })!;
      lease.release();
      return lease.endpoint.id;
    };
    const keys = Array.from({ length: 400 }, (_, i) => `conversation ${i}`);
    const before = new Map(keys.map((key) => [key, home(key)]));
    backend.setEndpoints("m", endpoints.slice(0, 3));
    const moved = keys.filter((key) => home(key) !== before.get(key));
    expect(moved.every((key) => before.get(key) === "pod-3")).toBe(true);
    backend.setEndpoints("m", endpoints);
    balancer.reportFailure("m", endpoints[0]!, refused);
    for (const key of keys) {
      const now = home(key);
      if (before.get(key) === "pod-0") expect(now).not.toBe("pod-0");
      else expect(now).toBe(before.get(key));
    }
  });

  it("a model's own strategy (a Model's spec.routing) overrides the router's, both ways", () => {
    const own: Record<string, RoutingStrategy> = { embed: "least-load" };
    const backend = Object.assign(
      new StaticBackend([
        { modelId: "chat", endpoints },
        { modelId: "embed", endpoints },
      ]),
      { routingOf: (modelId: string): RoutingStrategy | undefined => own[modelId] },
    );
    const spread = (balancer: Balancer, modelId: string) => {
      const held = Array.from({ length: 8 }, () => balancer.tryAcquire(modelId, { key: hashKey("one prompt") })!);
      const homes = new Set(held.map((lease) => lease.endpoint.id));
      for (const lease of held) lease.release();
      return homes.size;
    };
    // A prefix router: chat keeps one prompt together (within the bound), embed spreads evenly.
    const prefixRouter = new Balancer(backend, { strategy: "prefix", loadFactor: 2 });
    expect(spread(prefixRouter, "chat")).toBeLessThan(4);
    expect(spread(prefixRouter, "embed")).toBe(4);
    // A least-load router: a Model that asks for prefix gets it.
    own.chat = "prefix";
    const leastLoadRouter = new Balancer(backend, { strategy: "least-load", loadFactor: 2 });
    expect(spread(leastLoadRouter, "chat")).toBeLessThan(4);
    delete own.chat;
    expect(spread(leastLoadRouter, "chat")).toBe(4);
  });

  it("without a key, or with least-load, picks the least loaded endpoint", () => {
    const balancer = new Balancer(new StaticBackend([{ modelId: "m", endpoints }]), { strategy: "prefix" });
    const held = Array.from({ length: 8 }, () => balancer.tryAcquire("m")!);
    expect(endpoints.map((endpoint) => balancer.inFlightTo(endpoint))).toEqual([2, 2, 2, 2]);
    for (const lease of held) lease.release();
    expect(() => new Balancer(new StaticBackend([]), { loadFactor: 1 })).toThrow(/greater than 1/);
  });
});
