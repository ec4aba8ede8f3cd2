import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import { USAGE_HEADER, formatUsage } from "../../common/usage.js";
import { BatchRequest, BatchResponse, ChatRequest, ChatResponse, GenerateRequest, GenerateResponse } from "../../common/api.js";
import { HttpError, payloadTooLarge, tooManyRequests } from "../../common/errors.js";
import { chatFormat, generateFormat, usageOf } from "../formats.js";
import { planSampling } from "../sampling.js";
import { errorResponses, recordResult, requireEngine, serve, type GenerationContext } from "./serve.js";

export interface GenerationRouteOptions extends GenerationContext {
  maxBatchPrompts: number;
}

/** The seed API: /generate, /chat (both may stream) and /generate/batch. */
export const generationRoutes: FastifyPluginAsyncTypebox<GenerationRouteOptions> = async (app, options) => {
  const { state, metrics } = options;

  app.post(
    "/generate",
    { schema: { body: GenerateRequest, response: { 200: GenerateResponse, ...errorResponses } } },
    async (request, reply) => {
      const body = request.body;
      const prompt = requireEngine(state).preparePrompt(body.prompt);
      return serve(options, request, reply, { endpoint: "/generate", prompt, sampling: body, stream: body.stream === true, format: generateFormat });
    },
  );

  app.post(
    "/chat",
    { schema: { body: ChatRequest, response: { 200: ChatResponse, ...errorResponses } } },
    async (request, reply) => {
      const body = request.body;
      const prompt = requireEngine(state).prepareChat(body.messages);
      return serve(options, request, reply, { endpoint: "/chat", prompt, sampling: body, stream: body.stream === true, format: chatFormat });
    },
  );

  app.post(
    "/generate/batch",
    { schema: { body: BatchRequest, response: { 200: BatchResponse, ...errorResponses } } },
    async (request, reply) => {
      const body = request.body;
      if (body.prompts.length > options.maxBatchPrompts) {
        throw payloadTooLarge(`batch has ${body.prompts.length} prompts; at most ${options.maxBatchPrompts} are allowed`);
      }
      const engine = requireEngine(state);
      const prompts = body.prompts.map((text, index) => {
        try {
          return engine.preparePrompt(text);
        } catch (error) {
          if (error instanceof HttpError) throw new HttpError(error.statusCode, `prompts/${index}: ${error.message}`);
          throw error;
        }
      });
      if (!engine.canAdmit(prompts.length)) {
        throw tooManyRequests(`the queue cannot take ${prompts.length} more prompts now; retry shortly`, 1);
      }
      const controller = new AbortController();
      const onClose = () => {
        if (!reply.raw.writableFinished) controller.abort(new Error("client disconnected"));
      };
      reply.raw.on("close", onClose);
      state.activeRequests.add(controller);
      state.enter();
      state.settle(request);
      const started = performance.now();
      try {
        const results = await Promise.all(
          prompts.map((prompt) =>
            engine.generate(prompt, planSampling(body, state.defaults, engine.tokensLeft(prompt)), { signal: controller.signal, admitted: true }),
          ),
        );
        for (const result of results) recordResult(metrics, "/generate/batch", result, started);
        const total = {
          promptTokens: results.reduce((sum, r) => sum + r.promptTokens, 0),
          completionTokens: results.reduce((sum, r) => sum + r.completionTokens, 0),
        };
        reply.header(USAGE_HEADER, formatUsage(total));
        return { responses: results.map((r) => r.text), usage: usageOf(total) };
      } finally {
        reply.raw.off("close", onClose);
        state.activeRequests.delete(controller);
        state.leave();
      }
    },
  );
};
