import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import Type from "typebox";
import { OpenAiChatRequest, OpenAiCompletionRequest } from "../../common/api.js";
import { OpenAiModelList } from "../schemas.js";
import { proxiedRoute, type ForwardOptions } from "./forward.js";
import { errors } from "./responses.js";
import { modelFilter } from "./access.js";
import type { KeyStore } from "../tenants.js";

/** The OpenAI-compatible endpoints: existing OpenAI clients work unchanged. */
export const openAiRoutes: FastifyPluginAsyncTypebox<ForwardOptions & { startedAt: Date; keys: KeyStore }> = async (app, options) => {
  const { backend, startedAt, keys } = options;
  const tags = ["openai"];
  proxiedRoute(app, options, { path: "/v1/completions", body: OpenAiCompletionRequest, response: Type.Unknown(), summary: "OpenAI-compatible completions", modelField: "model", tags });
  proxiedRoute(app, options, { path: "/v1/chat/completions", body: OpenAiChatRequest, response: Type.Unknown(), summary: "OpenAI-compatible chat completions", modelField: "model", tags });

  app.get(
    "/v1/models",
    { schema: { summary: "OpenAI-compatible list of models", tags, response: { 200: OpenAiModelList, ...errors(401, 429) } } },
    async (request) => ({
      object: "list" as const,
      data: backend.list().filter((entry) => modelFilter(keys, request)(entry.model_id)).map((entry) => ({ id: entry.model_id, object: "model" as const, created: Math.floor(startedAt.getTime() / 1000), owned_by: "corral" })),
    }),
  );
};
