import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyServerOptions } from "fastify";
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import { randomUUID } from "node:crypto";
import type { Logger } from "./logger.js";
import { HttpError } from "./errors.js";

export interface HttpServerSettings {
  logger: Logger;
  bodyLimitBytes: number;
  /** Seconds a keep-alive connection may idle. */
  keepAliveSeconds?: number;
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

/**
 * A fastify instance with Corral's conventions: the shared logger, request ids from
 * `x-request-id`, strict JSON validation (no type coercion: a string temperature is a 400), and
 * one error handler that answers `{"detail": ...}` for every failure.
 */
export function createHttpServer(settings: HttpServerSettings, extra: Partial<FastifyServerOptions> = {}) {
  const app = Fastify({
    loggerInstance: settings.logger,
    // Corral logs one line per request itself (no prompt text), so fastify's own are off.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: settings.bodyLimitBytes,
    keepAliveTimeout: (settings.keepAliveSeconds ?? 65) * 1000,
    requestIdHeader: "x-request-id",
    genReqId: () => randomUUID(),
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: true, allErrors: false } },
    schemaErrorFormatter: (errors) => new Error(describeValidationErrors(errors as AjvError[])),
    ...extra,
  }).withTypeProvider<TypeBoxTypeProvider>();
  installErrorHandler(app);
  return app;
}

export function installErrorHandler(app: FastifyInstance<any, any, any, any, any>): void {
  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send({ detail: `no route for ${request.method} ${request.url.split("?")[0]}` });
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
