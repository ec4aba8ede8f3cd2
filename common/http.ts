import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyServerOptions } from "fastify";
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import { randomUUID } from "node:crypto";
import http from "node:http";
import type { Duplex } from "node:stream";
import type { Logger } from "./logger.js";
import { badRequest, HttpError } from "./errors.js";

export interface HttpServerSettings {
  logger: Logger;
  bodyLimitBytes: number;
  /** Seconds a keep-alive connection may idle. */
  keepAliveSeconds?: number;
  /** Seconds a client has to send a whole request, headers and body (0: no bound); beyond it: 408. */
  requestTimeoutSeconds?: number;
  /** Open connections allowed from one client address (0 or absent: no bound); beyond it: 429 and closed. */
  maxConnectionsPerClient?: number;
}

interface AjvError {
  instancePath?: string;
  keyword?: string;
  message?: string;
  params?: Record<string, unknown>;
}

/** `messages/1/role: must be one of ...` — names the field a client got wrong. */
export function describeValidationErrors(errors: readonly AjvError[]): string {
  const first = errors[0];
  if (!first) return "invalid request";
  const path = (first.instancePath ?? "").replace(/^\//, "");
  const params = first.params ?? {};
  if (first.keyword === "required" && typeof params.missingProperty === "string") {
    return `${path ? `${path}/` : ""}${params.missingProperty}: field required`;
  }
  if (first.keyword === "enum" && Array.isArray(params.allowedValues)) {
    return `${path}: must be one of ${params.allowedValues.join(", ")}`;
  }
  if (first.keyword === "additionalProperties" && typeof params.additionalProperty === "string") {
    return `${path ? `${path}/` : ""}${params.additionalProperty}: unknown field`;
  }
  if (first.keyword === "type" && path === "") return "request body must be a JSON object";
  if ((first.keyword === "minLength" || first.keyword === "minItems") && params.limit === 1) return `${path}: must not be empty`;
  return `${path || "body"}: ${first.message ?? "is invalid"}`;
}

/** Keys that would set an object's prototype if a body were ever merged into an object. */
const POISON_KEYS = new Set(["__proto__"]);

/**
 * Parses a JSON request body; a body with a `__proto__` key is refused with a 400 that says so
 * (rather than fastify's "not valid JSON"), and invalid JSON names the parser's complaint.
 */
export function parseJsonBody(raw: string | Buffer): unknown {
  const text = typeof raw === "string" ? raw : raw.toString("utf8");
  if (text.trim() === "") throw badRequest("request body is empty; send a JSON object");
  // Only bodies that could hold the key (maybe escaped) pay for the reviver.
  const suspicious = text.includes("proto") || text.includes("\\u");
  try {
    return suspicious
      ? JSON.parse(text, (key, value: unknown) => {
          if (POISON_KEYS.has(key)) throw new PoisonedKey(key);
          return value;
        })
      : JSON.parse(text);
  } catch (error) {
    if (error instanceof PoisonedKey) {
      throw badRequest(`request body: the key ${JSON.stringify(error.key)} is not allowed (it could change an object's prototype); rename or remove it`);
    }
    throw badRequest(`request body is not valid JSON: ${(error as Error).message}`);
  }
}

class PoisonedKey extends Error {
  constructor(readonly key: string) {
    super(`forbidden key ${key}`);
  }
}

/**
 * A fastify instance with Corral's conventions: the shared logger, request ids from
 * `x-request-id`, strict JSON validation (no type coercion: a string temperature is a 400), and
 * one error handler that answers `{"detail": ...}` for every failure.
 */
export function createHttpServer(settings: HttpServerSettings, extra: Partial<FastifyServerOptions> = {}) {
  const requestTimeoutMs = Math.round((settings.requestTimeoutSeconds ?? 0) * 1000);
  const app = Fastify({
    loggerInstance: settings.logger,
    // Slow clients (a trickled body) give up their connection: node answers through clientErrorHandler.
    requestTimeout: requestTimeoutMs,
    http: requestTimeoutMs > 0 ? { requestTimeout: requestTimeoutMs, headersTimeout: requestTimeoutMs, connectionsCheckingInterval: Math.min(30_000, Math.max(50, Math.round(requestTimeoutMs / 10))) } : {},
    // Corral logs one line per request itself (no prompt text), so fastify's own are off.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: settings.bodyLimitBytes,
    keepAliveTimeout: (settings.keepAliveSeconds ?? 65) * 1000,
    requestIdHeader: "x-request-id",
    genReqId: () => randomUUID(),
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: true, allErrors: false } },
    schemaErrorFormatter: (errors) => new Error(describeValidationErrors(errors as AjvError[])),
    // Requests node's parser rejects, and URLs fastify cannot decode, answer {"detail"} too.
    clientErrorHandler: answerClientError,
    frameworkErrors: (error, _request, reply: FastifyReply) => {
      const status = error.statusCode ?? 400;
      void reply.code(status).send({ detail: status < 500 ? error.message : "internal server error" });
    },
    ...extra,
  }).withTypeProvider<TypeBoxTypeProvider>();
  app.removeContentTypeParser("application/json");
  app.addContentTypeParser("application/json", { parseAs: "string" }, (_request, body, done) => {
    try {
      done(null, parseJsonBody(body as string));
    } catch (error) {
      done(error as Error, undefined);
    }
  });
  installErrorHandler(app);
  if (settings.maxConnectionsPerClient) limitConnectionsPerClient(app.server, settings.maxConnectionsPerClient, settings.logger);
  return app;
}

/** Answers 429 and closes a connection beyond `limit` open ones from the same address. */
function limitConnectionsPerClient(server: http.Server, limit: number, logger: Logger): void {
  const open = new Map<string, number>();
  server.on("connection", (socket: Duplex & { remoteAddress?: string }) => {
    const address = socket.remoteAddress ?? "unknown";
    const count = (open.get(address) ?? 0) + 1;
    if (count > limit) {
      logger.debug({ client: address, limit }, "connection refused: too many from one client");
      const body = JSON.stringify({ detail: `too many connections from ${address}: at most ${limit} at once` });
      socket.end(`HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`, () => socket.destroy());
      return;
    }
    open.set(address, count);
    socket.once("close", () => {
      const left = (open.get(address) ?? 1) - 1;
      if (left <= 0) open.delete(address);
      else open.set(address, left);
    });
  });
}

/** The status and detail of a request node's HTTP parser (or its timers) refused. */
export function clientErrorAnswer(error: Error & { code?: string; reason?: string; rawPacket?: Buffer }): { status: number; detail: string } {
  const reason = (error.reason ?? error.message).replace(/^Parse Error: /, "");
  switch (error.code) {
    case "ERR_HTTP_REQUEST_TIMEOUT":
      return { status: 408, detail: "the request took too long to arrive" };
    case "HPE_HEADER_OVERFLOW":
      return { status: 431, detail: `request headers are too large (at most ${http.maxHeaderSize} bytes)` };
    case "HPE_CHUNK_EXTENSIONS_OVERFLOW":
      return { status: 413, detail: "chunk extensions are too large" };
    case "HPE_INVALID_METHOD": {
      // A method-shaped first word is a method this server does not know; anything else is garbage.
      const method = /^([A-Za-z0-9!#$%&'*+.^_`|~-]{1,32}) /.exec(error.rawPacket?.toString("latin1") ?? "")?.[1];
      if (method) return { status: 501, detail: `method ${JSON.stringify(method)} is not implemented` };
      return { status: 400, detail: `malformed HTTP request: ${reason}` };
    }
    case "HPE_INVALID_CONTENT_LENGTH":
    case "HPE_UNEXPECTED_CONTENT_LENGTH":
      return { status: 400, detail: `invalid Content-Length: ${reason}` };
    case "HPE_INVALID_CHUNK_SIZE":
      return { status: 400, detail: `invalid chunk size in a chunked body: ${reason}` };
    default:
      return { status: 400, detail: `malformed HTTP request: ${reason}` };
  }
}

/** fastify's clientErrorHandler: the answer is written on the socket, which is then closed. */
function answerClientError(this: FastifyInstance, error: Error & { code?: string }, socket: Duplex): void {
  if (error.code === "ECONNRESET" || socket.destroyed) return;
  const { status, detail } = clientErrorAnswer(error);
  this.log.debug({ err: error, status }, "malformed request refused");
  if (socket.writable) {
    const body = JSON.stringify({ detail });
    socket.write(
      `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ""}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

export function installErrorHandler(app: FastifyInstance<any, any, any, any, any>): void {
  // Every route's path pattern and methods, so that a wrong method is a 405 with Allow, not a 404.
  const routes: { pattern: RegExp; methods: Set<string> }[] = [];
  app.addHook("onRoute", (route) => {
    const source = route.url
      .split("/")
      .map((part) => (part === "*" ? ".*" : part.startsWith(":") ? "[^/]+" : part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))
      .join("/");
    const methods = (Array.isArray(route.method) ? route.method : [route.method]).map(String);
    const existing = routes.find((known) => known.pattern.source === `^${source}$`);
    if (existing) for (const method of methods) existing.methods.add(method);
    else routes.push({ pattern: new RegExp(`^${source}$`), methods: new Set(methods) });
  });
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split("?")[0]!;
    const allowed = new Set(routes.filter((route) => route.pattern.test(path)).flatMap((route) => [...route.methods]));
    if (allowed.size > 0 && !allowed.has(request.method)) {
      const allow = [...allowed].sort().join(", ");
      reply.code(405).header("allow", allow).send({ detail: `method ${request.method} is not allowed on ${path}; allowed: ${allow}` });
      return;
    }
    reply.code(404).send({ detail: `no route for ${request.method} ${path}` });
  });
  app.setErrorHandler((error: FastifyError | HttpError | Error, request, reply) => {
    if (error instanceof HttpError) {
      reply.headers(error.headers).code(error.statusCode).send({ detail: error.message });
      return;
    }
    const fastifyError = error as FastifyError;
    if (fastifyError.validation) {
      reply.code(400).send({ detail: error.message });
      return;
    }
    switch (fastifyError.code) {
      case "FST_ERR_CTP_BODY_TOO_LARGE":
        reply.code(413).send({ detail: `request body is larger than the limit of ${request.routeOptions.bodyLimit ?? "the configured"} bytes` });
        return;
      case "FST_ERR_CTP_EMPTY_JSON_BODY":
        reply.code(400).send({ detail: "request body is empty; send a JSON object" });
        return;
      case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
        reply.code(415).send({ detail: `unsupported content type ${JSON.stringify(request.headers["content-type"] ?? "")}; send application/json` });
        return;
    }
    const status = fastifyError.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      const detail = error instanceof SyntaxError || fastifyError.code === "FST_ERR_CTP_INVALID_JSON_BODY"
        ? `request body is not valid JSON: ${error.message}`
        : error.message;
      reply.code(status).send({ detail });
      return;
    }
    request.log.error({ err: error }, "request failed");
    reply.code(status >= 500 && status < 600 ? status : 500).send({ detail: "internal server error" });
  });
}

/** The fastify instance type every Corral HTTP process builds on. */
export type CorralApp = ReturnType<typeof createHttpServer>;
