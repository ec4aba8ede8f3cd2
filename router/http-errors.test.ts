import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FakeRuntime } from "../test/router/fake-runtime.js";
import { StaticBackend } from "./backends/static.js";
import { run, type RouterHandle } from "./run.js";
import { parseAnswer, rawExchange, type RawAnswer } from "../test/helpers/raw-http.js";
import { testRouterConfig } from "../test/helpers/config.js";

let fake: FakeRuntime;
let router: RouterHandle;
beforeAll(async () => {
  fake = await new FakeRuntime("tiny").start();
  router = await run(testRouterConfig({ rateLimitPoints: 0 }), { backend: new StaticBackend([{ modelId: "tiny", endpoints: [{ id: "tiny", url: fake.url }] }]) });
});
afterAll(async () => {
  await router.close();
  await fake.close();
});

async function exchange(request: string): Promise<RawAnswer> {
  return parseAnswer(await rawExchange(router.port, request));
}

describe("malformed HTTP answers {\"detail\"}", () => {
  it("an unknown method is 501", async () => {
    const answer = await exchange("FROB /generate HTTP/1.1\r\nHost: localhost\r\n\r\n");
    expect(answer.status).toBe(501);
    expect(answer.headers["content-type"]).toBe("application/json");
    expect(JSON.parse(answer.body)).toEqual({ detail: 'method "FROB" is not implemented' });
  });

  it("conflicting or bad Content-Length is 400", async () => {
    const conflicting = await exchange("POST /generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\n{}");
    expect(conflicting.status).toBe(400);
    expect(JSON.parse(conflicting.body).detail).toMatch(/^invalid Content-Length: /);
    const bad = await exchange("POST /generate HTTP/1.1\r\nHost: localhost\r\nContent-Length: two\r\n\r\n{}");
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body).detail).toMatch(/^invalid Content-Length: /);
    const both = await exchange("POST /generate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n");
    expect(both.status).toBe(400);
    expect(Object.keys(JSON.parse(both.body))).toEqual(["detail"]);
  });

  it("a bad chunk size is 400", async () => {
    const answer = await exchange("POST /generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n");
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.body).detail).toMatch(/^invalid chunk size in a chunked body: /);
  });

  it("too many or too large headers are 431", async () => {
    const many = Array.from({ length: 2000 }, (_, i) => `X-Filler-${i}: ${"v".repeat(10)}\r\n`).join("");
    const answer = await exchange(`GET /health HTTP/1.1\r\nHost: localhost\r\n${many}\r\n`);
    expect(answer.status).toBe(431);
    expect(JSON.parse(answer.body)).toEqual({ detail: expect.stringMatching(/^request headers are too large/) });
    const large = await exchange(`GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: ${"v".repeat(20_000)}\r\n\r\n`);
    expect(large.status).toBe(431);
  });

  it("garbage is 400", async () => {
    const answer = await exchange("\x00\x01hello\r\n\r\n");
    expect(answer.status).toBe(400);
    expect(JSON.parse(answer.body).detail).toMatch(/^malformed HTTP request: /);
  });

  it("a URL fastify cannot decode is 400", async () => {
    const answer = await exchange("GET /models/%zz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    expect(answer.status).toBe(400);
    expect(Object.keys(JSON.parse(answer.body))).toEqual(["detail"]);
  });
});

describe("a wrong method on a known path", () => {
  it("is 405 with Allow", async () => {
    const response = await fetch(`${router.url}/generate`);
    expect(response.status).toBe(405);
    expect(response.headers.get("allow")).toBe("POST");
    expect(await response.json()).toEqual({ detail: "method GET is not allowed on /generate; allowed: POST" });
    const remove = await fetch(`${router.url}/models/current`, { method: "DELETE" });
    expect(remove.status).toBe(405);
    expect(remove.headers.get("allow")).toBe("GET, HEAD");
  });

  it("a method node knows but no route serves is 405 on a known path and 404 elsewhere", async () => {
    const known = await exchange("PROPFIND /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    expect(known.status).toBe(405);
    expect(known.headers.allow).toBe("GET, HEAD");
    const unknownPath = await fetch(`${router.url}/nope`, { method: "PUT" });
    expect(unknownPath.status).toBe(404);
    expect(await unknownPath.json()).toEqual({ detail: "no route for PUT /nope" });
  });
});

describe("JSON bodies of every Corral server (createHttpServer: runtime, operator)", () => {
  it("refuse a __proto__ key with a 400 that says so, and name the parser's complaint for invalid JSON", async () => {
    const { createHttpServer } = await import("../common/http.js");
    const { pino } = await import("pino");
    const app = createHttpServer({ logger: pino({ level: "silent" }), bodyLimitBytes: 65_536 });
    app.post("/echo", async (request) => request.body);
    const send = (payload: string) => app.inject({ method: "POST", url: "/echo", headers: { "content-type": "application/json" }, payload });
    const poisoned = await send('{"a":{"__proto__":{"x":1}}}');
    expect(poisoned.statusCode).toBe(400);
    expect(poisoned.json()).toEqual({ detail: 'request body: the key "__proto__" is not allowed (it could change an object\'s prototype); rename or remove it' });
    const invalid = await send("{bad");
    expect(invalid.statusCode).toBe(400);
    expect(invalid.json().detail).toMatch(/^request body is not valid JSON: /);
    expect((await send("")).json()).toEqual({ detail: "request body is empty; send a JSON object" });
    expect((await send('{"text":"__proto__"}')).json()).toEqual({ text: "__proto__" });
    await app.close();
  });
});

describe("Connection: close through the proxy", () => {
  it("a proxied request asking Connection: close gets Connection: close and the socket closes after the answer", async () => {
    const body = JSON.stringify({ prompt: "Hi" });
    const raw = await rawExchange(router.port, `POST /generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`, 3000);
    const answer = parseAnswer(raw);
    expect(answer.status).toBe(200);
    expect(answer.headers.connection).toBe("close");
  });

  it("a keep-alive request keeps its connection open", async () => {
    const body = JSON.stringify({ prompt: "Hi" });
    const closedEarly = await rawExchange(router.port, `POST /generate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`, 500).then(
      () => true,
      (error: Error) => {
        expect(error.message).toMatch(/HTTP\/1\.1 200 .*[Cc]onnection: keep-alive/s);
        return false;
      },
    );
    expect(closedEarly).toBe(false);
  });
});
