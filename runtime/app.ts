import { randomUUID } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import {
  BatchRequest,
  BatchResponse,
  ChatRequest,
  ChatResponse,
  ErrorResponse,
  GenerateRequest,
  GenerateResponse,
  OpenAiChatRequest,
  OpenAiCompletionRequest,
  openAiContentText,
  type FinishReason,
  type Usage,
} from "../common/api.js";
import { HttpError, payloadTooLarge, serviceUnavailable, tooManyRequests } from "../common/errors.js";
import { SSE_DONE, SSE_HEADERS, sseError, sseEvent } from "../common/sse.js";
import type { LlamaGrammar } from "node-llama-cpp";
import type { Engine, GenerationResult, PreparedPrompt } from "./engine.js";
import type { RuntimeMetrics } from "./metrics.js";
import { checkOpenAiParameters, parseResponseFormat } from "./openai.js";
import { planSampling, type SamplingRequest } from "./sampling.js";
import type { RuntimeState } from "./state.js";

export interface RuntimeAppOptions {
  state: RuntimeState;
  metrics: RuntimeMetrics;
  maxBatchPrompts: number;
  version: string;
}

type App = FastifyInstance<any, any, any, any, TypeBoxTypeProvider>;

const errorResponses = { 400: ErrorResponse, 413: ErrorResponse, 429: ErrorResponse, 503: ErrorResponse };

/** How a finished or streamed generation is written for one API flavour. */
interface OutputFormat {
  /** SSE bytes for one text chunk. */
  chunk(text: string): string;
  /** SSE bytes after the last chunk, before `[DONE]`. */
  end(result: GenerationResult): string;
  /** The JSON body of a non-streamed answer. */
  body(result: GenerationResult): unknown;
  /** SSE bytes written right after the headers, if any. */
  start?(): string;
}

function usageOf(result: { promptTokens: number; completionTokens: number }): Usage {
  return {
    prompt_tokens: result.promptTokens,
    completion_tokens: result.completionTokens,
    total_tokens: result.promptTokens + result.completionTokens,
  };
}

/** The runtime's HTTP API as a fastify plugin; `run.ts` builds the server and listens. */
export async function runtimeApp(app: App, options: RuntimeAppOptions): Promise<void> {
  const { state, metrics } = options;
  const activeRequests = state.activeRequests;

  app.addHook("onRequest", async (request, reply) => {
    if (state.phase === "draining" && request.method === "POST") {
      reply.header("connection", "close");
      throw serviceUnavailable("runtime is shutting down; retry on another replica", 1);
    }
  });

  // Arrivals (every POST route generates): see RuntimeState.arriving. Settled when the request
  // reaches the engine, or when it ends first (a validation error, a client that went away).
  app.addHook("preParsing", async (request) => {
    if (request.method === "POST") state.arrive(request);
  });
  app.addHook("onRequestAbort", async (request) => state.settle(request));

  app.addHook("onResponse", async (request, reply) => {
    state.settle(request);
    const endpoint = request.routeOptions.url;
    if (endpoint && request.method === "POST") metrics.requests.inc({ endpoint, status: String(reply.statusCode) });
  });

  function requireEngine(): Engine {
    if (state.ready) return state.engine!;
    if (state.phase === "draining") throw serviceUnavailable("runtime is shutting down; retry on another replica", 1);
    const progress =
      state.phase === "downloading" && state.download?.bytesTotal
        ? ` (${Math.floor((100 * state.download.bytesDone) / state.download.bytesTotal)}% downloaded)`
        : state.phase === "loading"
          ? ` (${Math.floor(state.loadFraction * 100)}% loaded)`
          : "";
    throw serviceUnavailable(`model ${state.modelId} is not ready: ${state.phase}${progress}`, 5);
  }

  /**
   * Runs one generation for a request, plain or streamed. The request's AbortController fires
   * when the client goes away, so its sequence is freed within a token or two.
   */
  async function serve(
    request: FastifyRequest,
    reply: FastifyReply,
    endpoint: string,
    prompt: PreparedPrompt,
    sampling: SamplingRequest,
    stream: boolean,
    format: OutputFormat,
    grammar?: LlamaGrammar,
    // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the body type is the route's
  ): Promise<any> {
    state.settle(request);
    const engine = requireEngine();
    const plan = planSampling(sampling, state.defaults, engine.tokensLeft(prompt));
    const controller = new AbortController();
    const res = reply.raw;
    const onClose = () => {
      if (!res.writableFinished) controller.abort(new Error("client disconnected"));
    };
    res.on("close", onClose);
    activeRequests.add(controller);
    state.enter();
    const started = performance.now();
    let streaming = false;
    try {
      const result = await engine.generate(prompt, plan, {
        signal: controller.signal,
        grammar,
        onStart: stream
          ? () => {
              // Headers go out once a sequence is ours: queue-full and other early failures
              // still answer with a real status code.
              streaming = true;
              reply.hijack();
              res.writeHead(200, { ...SSE_HEADERS, "x-request-id": String(request.id) });
              const first = format.start?.();
              if (first) res.write(first);
              else res.flushHeaders();
            }
          : undefined,
        onText: stream ? (text) => res.write(format.chunk(text)) : undefined,
      });
      record(endpoint, result, started);
      if (result.aborted) {
        const clientGone = res.destroyed;
        request.log.info({ endpoint, completionTokens: result.completionTokens, clientGone }, "generation aborted");
        if (!streaming) {
          throw clientGone ? new HttpError(499, "client closed the request") : serviceUnavailable("generation stopped: runtime is shutting down", 1);
        }
        if (!res.writableEnded) res.end(clientGone ? undefined : sseError("generation stopped: runtime is shutting down") + SSE_DONE);
        return reply;
      }
      if (!streaming) return format.body(result);
      res.end(format.end(result) + SSE_DONE);
      metrics.requests.inc({ endpoint, status: "200" });
      logDone(request, endpoint, 200, started, result);
      return reply;
    } catch (error) {
      if (!streaming) throw error;
      // After the first byte the status code is gone: send the documented error event.
      request.log.error({ err: error, endpoint }, "stream failed");
      metrics.requests.inc({ endpoint, status: "500" });
      const detail = error instanceof HttpError ? error.message : "generation failed";
      if (!res.writableEnded) res.end(sseError(detail) + SSE_DONE);
      return reply;
    } finally {
      res.off("close", onClose);
      activeRequests.delete(controller);
      state.leave();
    }
  }

  function record(endpoint: string, result: GenerationResult, started: number): void {
    metrics.promptTokens.inc(result.promptTokens);
    metrics.promptTokensReused.inc(result.reusedPromptTokens);
    metrics.completionTokens.inc(result.completionTokens);
    if (result.timeToFirstTokenSeconds !== undefined) metrics.timeToFirstToken.observe(result.timeToFirstTokenSeconds);
    if (result.decodeSeconds > 0 && result.completionTokens > 1) {
      metrics.tokensPerSecond.observe((result.completionTokens - 1) / result.decodeSeconds);
    }
    metrics.requestDuration.observe({ endpoint }, (performance.now() - started) / 1000);
  }

  function logDone(request: FastifyRequest, endpoint: string, status: number, started: number, result: GenerationResult): void {
    request.log.info(
      {
        endpoint,
        status,
        durationMs: Math.round(performance.now() - started),
        promptTokens: result.promptTokens,
        reusedPromptTokens: result.reusedPromptTokens,
        completionTokens: result.completionTokens,
        finishReason: result.finishReason,
      },
      "request completed",
    );
  }

  /* ----- health and introspection ----- */

  app.get("/healthz", async () => ({ status: "alive" }));

  app.get("/readyz", async (_request, reply) => {
    if (state.ready) return { status: "ready" };
    reply.code(503);
    return { detail: state.failure ? `model failed to load: ${state.failure}` : `model is ${state.phase}` };
  });

  app.get("/info", async () => {
    const engine = state.engine;
    const summary = state.summary;
    const llama = engine?.llama;
    const vram = llama && llama.gpu !== false ? await llama.getVramState().catch(() => undefined) : undefined;
    return {
      model_id: state.modelId,
      source: state.source,
      state: state.phase,
      failure: state.failure ?? null,
      file: summary?.path ?? null,
      size_bytes: summary?.fileSize ?? null,
      architecture: summary?.architecture ?? null,
      name: summary?.name ?? null,
      quantization: summary?.quantization ?? null,
      parameters: summary?.parameterCount ?? null,
      trained_context_size: summary?.contextLength ?? null,
      context_size: engine?.contextSize ?? null,
      chat_template: engine?.chatTemplateName ?? null,
      parallel: engine?.parallel ?? null,
      slots_busy: engine?.slotsBusy ?? 0,
      queue_depth: engine?.queueDepth ?? 0,
      in_flight: state.inFlight,
      arriving: state.arriving,
      threads: state.threads,
      backend: llama ? (llama.gpu === false ? "cpu" : llama.gpu) : null,
      llama_build: llama?.buildType ?? null,
      // What a decode step costs, as the batch loop has learned it (it decides how many waiting
      // prompts join a step); null until steps of different sizes have run.
      step_cost: stepCostOf(engine),
      devices: llama && llama.gpu !== false ? await llama.getGpuDeviceNames().catch(() => []) : [],
      memory: {
        rss_bytes: process.memoryUsage().rss,
        vram_used_bytes: vram?.used ?? null,
        vram_total_bytes: vram?.total ?? null,
      },
      progress: {
        bytes_done: state.download?.bytesDone ?? null,
        bytes_total: state.download?.bytesTotal ?? null,
        load_fraction: state.loadFraction,
      },
      defaults: state.defaults,
      version: options.version,
    };
  });

  app.get("/metrics", async (_request, reply) => {
    const engine = state.engine;
    metrics.slotsBusy.set(engine?.slotsBusy ?? 0);
    metrics.slotsTotal.set(engine?.parallel ?? 0);
    metrics.queueDepth.set(engine?.queueDepth ?? 0);
    reply.header("content-type", metrics.registry.contentType);
    return metrics.registry.metrics();
  });

  /* ----- the seed API ----- */

  const seedFormat = (body: (result: GenerationResult) => unknown): OutputFormat => ({
    chunk: (text) => sseEvent(text),
    end: () => "",
    body,
  });

  app.post(
    "/generate",
    { schema: { body: GenerateRequest, response: { 200: GenerateResponse, ...errorResponses } } },
    async (request, reply) => {
      const body = request.body;
      const prompt = requireEngine().preparePrompt(body.prompt);
      return serve(request, reply, "/generate", prompt, body, body.stream === true, seedFormat((result) => ({
        response: result.text,
        finish_reason: result.finishReason,
        usage: usageOf(result),
      })));
    },
  );

  app.post(
    "/chat",
    { schema: { body: ChatRequest, response: { 200: ChatResponse, ...errorResponses } } },
    async (request, reply) => {
      const body = request.body;
      const prompt = requireEngine().prepareChat(body.messages);
      return serve(request, reply, "/chat", prompt, body, body.stream === true, seedFormat((result) => ({
        choices: [{ message: { role: "assistant", content: result.text }, finish_reason: result.finishReason }],
        usage: usageOf(result),
      })));
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
      const engine = requireEngine();
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
      activeRequests.add(controller);
      state.enter();
      state.settle(request);
      const started = performance.now();
      try {
        const results = await Promise.all(
          prompts.map((prompt) =>
            engine.generate(prompt, planSampling(body, state.defaults, engine.tokensLeft(prompt)), { signal: controller.signal }, true),
          ),
        );
        for (const result of results) record("/generate/batch", result, started);
        const usage = usageOf({
          promptTokens: results.reduce((sum, r) => sum + r.promptTokens, 0),
          completionTokens: results.reduce((sum, r) => sum + r.completionTokens, 0),
        });
        return { responses: results.map((r) => r.text), usage };
      } finally {
        reply.raw.off("close", onClose);
        activeRequests.delete(controller);
        state.leave();
      }
    },
  );

  /* ----- OpenAI-compatible API ----- */

  const created = () => Math.floor(Date.now() / 1000);
  const toFinish = (reason: FinishReason) => reason;

  app.post(
    "/v1/completions",
    { schema: { body: OpenAiCompletionRequest, response: errorResponses } },
    async (request, reply) => {
      const body = request.body;
      checkOpenAiParameters(body);
      const text = typeof body.prompt === "string" ? body.prompt : body.prompt[0]!;
      const engine = requireEngine();
      const prompt = engine.preparePrompt(text);
      const grammar = await engine.grammarFor(parseResponseFormat((body as Record<string, unknown>).response_format));
      const id = `cmpl-${randomUUID()}`;
      const time = created();
      const includeUsage = body.stream_options?.include_usage === true;
      const frame = (choice: Record<string, unknown>, usage: Usage | null = null) =>
        `data: ${JSON.stringify({ id, object: "text_completion", created: time, model: state.modelId, choices: choice ? [choice] : [], usage })}\n\n`;
      return serve(request, reply, "/v1/completions", prompt, openAiSampling(body, 16), body.stream === true, {
        chunk: (chunk) => frame({ index: 0, text: chunk, logprobs: null, finish_reason: null }),
        end: (result) =>
          frame({ index: 0, text: "", logprobs: null, finish_reason: toFinish(result.finishReason) }) +
          (includeUsage ? `data: ${JSON.stringify({ id, object: "text_completion", created: time, model: state.modelId, choices: [], usage: usageOf(result) })}\n\n` : ""),
        body: (result) => ({
          id,
          object: "text_completion",
          created: time,
          model: state.modelId,
          choices: [{ index: 0, text: result.text, logprobs: null, finish_reason: toFinish(result.finishReason) }],
          usage: usageOf(result),
        }),
      }, grammar);
    },
  );

  app.post(
    "/v1/chat/completions",
    { schema: { body: OpenAiChatRequest, response: errorResponses } },
    async (request, reply) => {
      const body = request.body;
      checkOpenAiParameters(body);
      const responseFormat = parseResponseFormat((body as Record<string, unknown>).response_format);
      const messages = body.messages.map((message) => ({
        role: message.role === "developer" ? ("system" as const) : message.role,
        content: openAiContentText(message.content),
      }));
      const engine = requireEngine();
      const prompt = engine.prepareChat(messages);
      const grammar = await engine.grammarFor(responseFormat);
      const id = `chatcmpl-${randomUUID()}`;
      const time = created();
      const includeUsage = body.stream_options?.include_usage === true;
      const chunk = (delta: Record<string, unknown>, finish: FinishReason | null, usage?: Usage) =>
        `data: ${JSON.stringify({
          id,
          object: "chat.completion.chunk",
          created: time,
          model: state.modelId,
          system_fingerprint: null,
          choices: usage ? [] : [{ index: 0, delta, logprobs: null, finish_reason: finish }],
          ...(includeUsage ? { usage: usage ?? null } : {}),
        })}\n\n`;
      const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? undefined;
      return serve(request, reply, "/v1/chat/completions", prompt, openAiSampling({ ...body, max_tokens: maxTokens }), body.stream === true, {
        start: () => chunk({ role: "assistant", content: "" }, null),
        chunk: (text) => chunk({ content: text }, null),
        end: (result) => chunk({}, toFinish(result.finishReason)) + (includeUsage ? chunk({}, null, usageOf(result)) : ""),
        body: (result) => ({
          id,
          object: "chat.completion",
          created: time,
          model: state.modelId,
          system_fingerprint: null,
          choices: [
            { index: 0, message: { role: "assistant", content: result.text, refusal: null }, logprobs: null, finish_reason: toFinish(result.finishReason) },
          ],
          usage: usageOf(result),
        }),
      }, grammar);
    },
  );
}

interface OpenAiSamplingBody {
  max_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number;
  repetition_penalty?: number;
  presence_penalty?: number | null;
  frequency_penalty?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
}

/**
 * OpenAI names onto the seed's. Left-out values take the model's defaults, except that OpenAI
 * clients expect no repetition penalty unless they ask (they send presence/frequency instead),
 * and /v1/completions keeps OpenAI's 16-token default.
 */
function openAiSampling(body: OpenAiSamplingBody, defaultMaxTokens?: number): SamplingRequest {
  return {
    max_length: body.max_tokens ?? defaultMaxTokens ?? null,
    temperature: body.temperature ?? null,
    top_p: body.top_p ?? null,
    top_k: body.top_k ?? null,
    repetition_penalty: body.repetition_penalty ?? 1,
    presence_penalty: body.presence_penalty ?? null,
    frequency_penalty: body.frequency_penalty ?? null,
    seed: body.seed ?? null,
    stop: body.stop == null ? [] : typeof body.stop === "string" ? [body.stop] : body.stop,
  };
}

function stepCostOf(engine: Engine | undefined): { fixed_ms: number; per_token_ms: number } | null {
  const estimate = engine?.stepCost;
  if (estimate === undefined) return null;
  return { fixed_ms: Math.round(estimate.fixedSeconds * 1e6) / 1e3, per_token_ms: Math.round(estimate.secondsPerToken * 1e6) / 1e3 };
}
