import type { FastifyReply, FastifyRequest } from "fastify";
import type { LlamaGrammar } from "node-llama-cpp";
import { ErrorResponse } from "../../common/api.js";
import { HttpError, serviceUnavailable } from "../../common/errors.js";
import { SSE_DONE, SSE_HEADERS, sseError } from "../../common/sse.js";
import { USAGE_HEADER, formatUsage } from "../../common/usage.js";
import type { Engine, GenerationResult, PreparedPrompt } from "../engine.js";
import type { OutputFormat } from "../formats.js";
import type { RuntimeMetrics } from "../metrics.js";
import { setStreamedStatus } from "../plugins/accounting.js";
import { planSampling, type SamplingRequest } from "../sampling.js";
import type { RuntimeState } from "../state.js";

/** What the generation routes share: the runtime's state and its metrics. */
export interface GenerationContext {
  state: RuntimeState;
  metrics: RuntimeMetrics;
}

/** The error answers every generation route documents. */
export const errorResponses = { 400: ErrorResponse, 413: ErrorResponse, 429: ErrorResponse, 503: ErrorResponse };

/** The engine, or a 503 that says why there is none yet (with progress) or any more. */
export function requireEngine(state: RuntimeState): Engine {
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

/** One generation a route asks for, and how its answer is written. */
export interface Generation {
  endpoint: string;
  prompt: PreparedPrompt;
  sampling: SamplingRequest;
  stream: boolean;
  format: OutputFormat;
  grammar?: LlamaGrammar;
}

/**
 * Runs one generation for a request, plain or streamed. The request's AbortController fires
 * when the client goes away, so its sequence is freed within a token or two.
 */
export async function serve(
  context: GenerationContext,
  request: FastifyRequest,
  reply: FastifyReply,
  generation: Generation,
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the body type is the route's
): Promise<any> {
  const { state, metrics } = context;
  const { endpoint, prompt, sampling, stream, format, grammar } = generation;
  state.settle(request);
  const engine = requireEngine(state);
  const plan = planSampling(sampling, state.defaults, engine.tokensLeft(prompt));
  const controller = new AbortController();
  const res = reply.raw;
  const onClose = () => {
    if (!res.writableFinished) controller.abort(new Error("client disconnected"));
  };
  res.on("close", onClose);
  state.activeRequests.add(controller);
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
            res.writeHead(200, { ...SSE_HEADERS, "x-request-id": String(request.id), trailer: USAGE_HEADER });
            const first = format.start?.();
            if (first) res.write(first);
            else res.flushHeaders();
          }
        : undefined,
      onText: stream ? (text) => res.write(format.chunk(text)) : undefined,
    });
    recordResult(metrics, endpoint, result, started);
    if (result.aborted) {
      const clientGone = res.destroyed;
      request.log.info({ endpoint, completionTokens: result.completionTokens, clientGone }, "generation aborted");
      if (!streaming) {
        throw clientGone ? new HttpError(499, "client closed the request") : serviceUnavailable("generation stopped: runtime is shutting down", 1);
      }
      // Counted as the 503 a plain request gets (a client that went away counts as 499).
      setStreamedStatus(request, 503);
      if (!res.writableEnded) {
        res.addTrailers({ [USAGE_HEADER]: formatUsage(result) });
        res.end(clientGone ? undefined : sseError("generation stopped: runtime is shutting down") + SSE_DONE);
      }
      return reply;
    }
    if (!streaming) {
      reply.header(USAGE_HEADER, formatUsage(result));
      return format.body(result);
    }
    res.addTrailers({ [USAGE_HEADER]: formatUsage(result) });
    res.end(format.end(result) + SSE_DONE);
    logDone(request, endpoint, 200, started, result);
    return reply;
  } catch (error) {
    if (!streaming) throw error;
    // After the first byte the status code is gone: send the documented error event.
    request.log.error({ err: error, endpoint }, "stream failed");
    setStreamedStatus(request, 500);
    const detail = error instanceof HttpError ? error.message : "generation failed";
    if (!res.writableEnded) res.end(sseError(detail) + SSE_DONE);
    return reply;
  } finally {
    res.off("close", onClose);
    state.activeRequests.delete(controller);
    state.leave();
  }
}

/** A finished generation's tokens, speed and duration in the metrics. */
export function recordResult(metrics: RuntimeMetrics, endpoint: string, result: GenerationResult, started: number): void {
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
