import http from "node:http";
import type { AddressInfo } from "node:net";
import { USAGE_HEADER } from "../../common/usage.js";

/** What the fake saw of one request. */
export interface SeenRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/**
 * A stand-in for `corral runtime` in router unit tests: answers the seed endpoints with echoes,
 * streams SSE on demand, and can be told to fail in the ways the router must survive.
 */
export class FakeRuntime {
  readonly seen: SeenRequest[] = [];
  /** `reset`: drop the connection before answering. `midstream`: drop it after the first event. */
  failures: ("reset" | "midstream")[] = [];
  /** Milliseconds between streamed events. */
  eventDelayMs = 5;
  /** Events streamed before [DONE]. */
  events = ["Hel", "lo", " world"];
  /** Streams abandoned because the client went away. */
  aborted = 0;
  active = 0;
  private server: http.Server;
  url = "";

  constructor(readonly name = "fake") {
    this.server = http.createServer((req, res) => this.handle(req, res));
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      this.seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      if (req.url === "/readyz") return json(res, 200, { status: "ready" });
      if (req.url === "/info") return json(res, 200, { model_id: this.name, context_size: 512, parallel: 2, slots_busy: this.active, defaults: { temperature: 0.7 }, size_bytes: 1234 });
      const failure = req.method === "POST" ? this.failures.shift() : undefined;
      if (failure === "reset") {
        req.socket.destroy();
        return;
      }
      let parsed: Record<string, unknown> = {};
      try {
        parsed = JSON.parse(body.toString("utf8")) as Record<string, unknown>;
      } catch {
        return json(res, 400, { detail: "bad json" });
      }
      if (parsed.stream === true) return this.stream(req, res, failure === "midstream");
      if (req.url === "/generate") {
        return json(res, 200, { response: `${this.name}:${String(parsed.prompt)}`, finish_reason: "stop", usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 } }, {
          [USAGE_HEADER]: "prompt=3, completion=2",
        });
      }
      return json(res, 200, { from: this.name, url: req.url, usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 } }, { [USAGE_HEADER]: "prompt=1, completion=1" });
    });
  }

  private stream(req: http.IncomingMessage, res: http.ServerResponse, breakMidway: boolean): void {
    this.active++;
    // As the runtime does: what the stream used comes as a trailer (the router counts it for budgets).
    res.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", trailer: USAGE_HEADER });
    let index = 0;
    let finished = false;
    const finish = () => {
      if (finished) return;
      finished = true;
      this.active--;
    };
    res.on("close", () => {
      if (!res.writableFinished) this.aborted++;
      finish();
    });
    const next = () => {
      if (res.destroyed) return;
      if (index < this.events.length) {
        res.write(`data: ${this.events[index++]}\n\n`);
        if (breakMidway) {
          setTimeout(() => req.socket.destroy(), 5);
          return;
        }
        setTimeout(next, this.eventDelayMs);
        return;
      }
      res.addTrailers({ [USAGE_HEADER]: `prompt=3, completion=${this.events.length}` });
      res.end("data: [DONE]\n\n");
      finish();
    };
    next();
  }
}

function json(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { ...headers, "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(text) });
  res.end(text);
}
