import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import { LoadModelRequest } from "../../common/api.js";
import { badRequest, gatewayTimeout, serviceUnavailable } from "../../common/errors.js";
import { ModelStartError, ModelsBusyError, type Backend } from "../backends/types.js";
import { RETRY_AFTER_SECONDS } from "../balancer.js";
import type { RouterConfig } from "../config.js";
import { CLIENT_CLOSED, clientGoneSignal, contextOf } from "../request-context.js";
import type { RuntimeInfoCache } from "../runtime-info.js";
import { AvailableModels, ModelInfo, UnloadResponse } from "../schemas.js";
import { errors, unknownModel } from "./responses.js";
import { checkModelAccess, modelFilter } from "./access.js";
import type { KeyStore } from "../tenants.js";

export interface ModelRouteOptions {
  config: RouterConfig;
  backend: Backend;
  runtimeInfo: RuntimeInfoCache;
  keys: KeyStore;
}

/** How old a runtime's /info may be in a model's description (its size, context and defaults do not change while it runs). */
const MODEL_INFO_MAX_AGE_MS = 60_000;

/** Model management: load (and make current), the current model, what can be loaded, unload. */
export const modelRoutes: FastifyPluginAsyncTypebox<ModelRouteOptions> = async (app, options) => {
  const { config, backend, runtimeInfo, keys } = options;
  const tags = ["models"];

  async function modelInfo(modelId: string | null) {
    if (modelId === null) {
      return {
        model_id: null,
        state: "not_loaded" as const,
        current: false,
        progress: null,
        message: "no model is loaded",
        source: null,
        description: null,
        size_bytes: null,
        context_size: null,
        parallel: null,
        defaults: null,
        endpoints: 0,
      };
    }
    const entry = backend.lookup(modelId);
    const status = backend.status(modelId);
    const endpoint = status.endpoints[0];
    const info = endpoint ? await runtimeInfo.get(endpoint, MODEL_INFO_MAX_AGE_MS) : null;
    const number = (value: unknown) => (typeof value === "number" ? value : null);
    return {
      model_id: modelId,
      state: status.state,
      current: backend.current() === modelId,
      progress: status.progress,
      message: status.message,
      source: entry?.source ?? null,
      description: entry?.description ?? null,
      size_bytes: number(info?.size_bytes) ?? entry?.size_bytes ?? null,
      context_size: number(info?.context_size),
      parallel: number(info?.parallel),
      defaults: (info?.defaults as Record<string, unknown> | undefined) ?? null,
      endpoints: status.endpoints.length,
    };
  }

  app.post(
    "/models/load",
    {
      schema: {
        summary: "Load a model and make it the current one; answers when it is ready",
        tags,
        body: LoadModelRequest,
        response: { 200: ModelInfo, ...errors(400, 401, 403, 404, 413, 415, 429, 503, 504) },
      },
      config: { scope: "models:manage" },
    },
    async (request, reply) => {
      const modelId = request.body.model_id;
      if (!backend.lookup(modelId)) throw unknownModel(modelId);
      checkModelAccess(keys, request, modelId);
      contextOf(request).model = modelId;
      const timeout = AbortSignal.timeout(config.loadTimeoutSeconds * 1000);
      const clientGone = clientGoneSignal(request, reply);
      try {
        await backend.load(modelId, AbortSignal.any([timeout, clientGone]));
      } catch (error) {
        if (error instanceof ModelStartError) throw serviceUnavailable(error.message, error instanceof ModelsBusyError ? RETRY_AFTER_SECONDS : undefined);
        if (clientGone.aborted) throw CLIENT_CLOSED;
        if (!timeout.aborted) throw error;
        throw gatewayTimeout(`model ${modelId} is not ready after ${config.loadTimeoutSeconds} s; it is still loading: GET /models/available shows its state`);
      }
      return await modelInfo(modelId);
    },
  );

  app.get(
    "/models/current",
    { schema: { summary: "The current model: state (with progress while loading), context size, defaults", tags, response: { 200: ModelInfo, ...errors(401, 429) } } },
    async () => await modelInfo(backend.current()),
  );

  app.get(
    "/models/available",
    { schema: { summary: "Models that can be loaded, with state, source and size", tags, response: { 200: AvailableModels, ...errors(401, 429) } } },
    async (request) => {
      const current = backend.current();
      const visible = modelFilter(keys, request);
      return {
        current,
        models: backend.list().filter((entry) => visible(entry.model_id)).map((entry) => {
          const status = backend.status(entry.model_id);
          const measured = status.endpoints[0] ? runtimeInfo.kept(status.endpoints[0])?.size_bytes : undefined;
          return {
            model_id: entry.model_id,
            source: entry.source,
            description: entry.description,
            size_bytes: typeof measured === "number" ? measured : entry.size_bytes,
            state: status.state,
            current: entry.model_id === current,
          };
        }),
      };
    },
  );

  app.post(
    "/models/unload",
    {
      schema: {
        summary: "Unload the current model (or the one named) and stop its runtimes",
        description: "The body is optional; without one the current model is unloaded. 400 when no model is loaded.",
        tags,
        response: { 200: UnloadResponse, ...errors(400, 401, 403, 404, 415, 429) },
      },
      config: { scope: "models:manage" },
    },
    async (request) => {
      const body = request.body as unknown;
      if (body !== undefined && body !== null && (typeof body !== "object" || Array.isArray(body))) throw badRequest("request body must be a JSON object");
      const named = (body as { model_id?: unknown } | undefined)?.model_id;
      if (named !== undefined && named !== null && (typeof named !== "string" || named.length === 0)) throw badRequest("model_id: must be a non-empty string");
      const modelId = (named as string | null | undefined) ?? backend.current();
      if (modelId === null) throw badRequest("no model is loaded");
      if (!backend.lookup(modelId)) throw unknownModel(modelId);
      checkModelAccess(keys, request, modelId);
      contextOf(request).model = modelId;
      await backend.unload(modelId);
      return { model_id: modelId, state: backend.status(modelId).state, detail: `model ${modelId} unloaded` };
    },
  );
};
