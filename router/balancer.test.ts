import { afterEach, describe, expect, it, vi } from "vitest";
import { StaticBackend } from "./backends/static.js";
import { ModelStartError, type Backend, type Endpoint } from "./backends/types.js";
import { Balancer, NoEndpointError, SUSPECT_MS } from "./balancer.js";

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
    expect(balancer.tryAcquire("m", a)!.endpoint.id).toBe("a");
    const both = new Balancer(new StaticBackend([{ modelId: "m", endpoints: [a, b] }]));
    expect(both.tryAcquire("m", a)!.endpoint.id).toBe("b");
    expect(both.tryAcquire("m", b)!.endpoint.id).toBe("a");
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
