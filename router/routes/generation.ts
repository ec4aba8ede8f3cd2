import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import { BatchRequest, BatchResponse, ChatRequest, ChatResponse, GenerateRequest, GenerateResponse } from "../../common/api.js";
import { proxiedRoute, type ForwardOptions } from "./forward.js";

/** The seed API's generation endpoints, relayed to a runtime of the model they name. */
export const generationRoutes: FastifyPluginAsyncTypebox<ForwardOptions> = async (app, options) => {
  const tags = ["generation"];
  proxiedRoute(app, options, { path: "/generate", body: GenerateRequest, response: GenerateResponse, summary: "Generate text", modelField: "model_id", tags });
  proxiedRoute(app, options, { path: "/chat", body: ChatRequest, response: ChatResponse, summary: "Chat completion", modelField: "model_id", tags });
  proxiedRoute(app, options, { path: "/generate/batch", body: BatchRequest, response: BatchResponse, summary: "Generate for several prompts in parallel", modelField: "model_id", tags, batch: true });
};
