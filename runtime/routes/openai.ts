import { randomUUID } from "node:crypto";
import type { FastifyPluginAsyncTypebox } from "@fastify/type-provider-typebox";
import { OpenAiChatRequest, OpenAiCompletionRequest } from "../../common/api.js";
import { openAiChatFormat, openAiCompletionFormat } from "../formats.js";
import { checkOpenAiParameters, openAiChatTurns, openAiSampling, parseResponseFormat } from "../openai.js";
import { errorResponses, requireEngine, serve, type GenerationContext } from "./serve.js";

/** Unix seconds, as OpenAI's `created`. */
const created = () => Math.floor(Date.now() / 1000);

/** The OpenAI-compatible API: /v1/completions and /v1/chat/completions, streamed or not. */
export const openAiRoutes: FastifyPluginAsyncTypebox<GenerationContext> = async (app, options) => {
  const { state } = options;

  app.post(
    "/v1/completions",
    { schema: { body: OpenAiCompletionRequest, response: errorResponses } },
    async (request, reply) => {
      const body = request.body;
      checkOpenAiParameters(body);
      const text = typeof body.prompt === "string" ? body.prompt : body.prompt[0]!;
      const engine = requireEngine(state);
      const prompt = engine.preparePrompt(text);
      const grammar = await engine.grammarFor(parseResponseFormat((body as Record<string, unknown>).response_format));
      const format = openAiCompletionFormat({
        id: `cmpl-${randomUUID()}`,
        created: created(),
        model: state.modelId,
        includeUsage: body.stream_options?.include_usage === true,
      });
      return serve(options, request, reply, { endpoint: "/v1/completions", prompt, sampling: openAiSampling(body, 16), stream: body.stream === true, format, grammar });
    },
  );

  app.post(
    "/v1/chat/completions",
    { schema: { body: OpenAiChatRequest, response: errorResponses } },
    async (request, reply) => {
      const body = request.body;
      checkOpenAiParameters(body);
      const responseFormat = parseResponseFormat((body as Record<string, unknown>).response_format);
      const messages = openAiChatTurns(body.messages);
      const engine = requireEngine(state);
      const prompt = engine.prepareChat(messages);
      const grammar = await engine.grammarFor(responseFormat);
      const format = openAiChatFormat({
        id: `chatcmpl-${randomUUID()}`,
        created: created(),
        model: state.modelId,
        includeUsage: body.stream_options?.include_usage === true,
      });
      const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? undefined;
      const sampling = openAiSampling({ ...body, max_tokens: maxTokens });
      return serve(options, request, reply, { endpoint: "/v1/chat/completions", prompt, sampling, stream: body.stream === true, format, grammar });
    },
  );
};
