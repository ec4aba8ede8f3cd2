import type { FastifyRequest } from "fastify";
import { tooManyRequests } from "../../common/errors.js";
import { USAGE_HEADER, parseUsage, type TokenUsage } from "../../common/usage.js";
import type { RouterMetrics } from "../metrics.js";
import type { UpstreamEnd } from "../proxy.js";
import { contextOf } from "../request-context.js";
import type { KeyStore } from "../tenants.js";
import { describeRefusal, promptBound, tokenBound, type Reservation, type TokenBudgets } from "../token-budget.js";
import { checkModelAccess } from "./access.js";

export interface QuotaOptions {
  keys: KeyStore;
  budgets: TokenBudgets;
  metrics: RouterMetrics;
}

/** What one admitted request settles when its answer ends (at most once). */
export interface Admission {
  settle(end: UpstreamEnd | undefined): void;
}

const NOTHING_TO_SETTLE: Admission = { settle: () => undefined };

/**
 * What a request to a model passes after the guard: the key may use the model (403), and its
 * token budgets have room (429 with Retry-After naming the budget); the request then holds a
 * reservation until `settle` counts what the runtime reports it used.
 */
export async function admit(options: QuotaOptions, request: FastifyRequest, body: Record<string, unknown>, modelId: string): Promise<Admission> {
  const { keys, budgets, metrics } = options;
  checkModelAccess(keys, request, modelId);
  const tenant = contextOf(request).tenant;
  // Clients without a key have no budget, and their address is no label.
  if (!tenant || tenant.anonymous) return NOTHING_TO_SETTLE;
  let reservation: Reservation | undefined;
  if (tenant.tokensPerMinute !== undefined || tenant.tokensPerDay !== undefined) {
    const outcome = await budgets.reserve(tenant, tokenBound(body));
    if ("window" in outcome) {
      metrics.budgetRejections.inc({ key: tenant.name, window: outcome.window });
      throw tooManyRequests(describeRefusal(tenant, outcome), outcome.retryAfterSeconds);
    }
    reservation = outcome;
  }
  let settled = false;
  return {
    settle(end) {
      if (settled) return;
      settled = true;
      const usage = usageOf(end, body);
      metrics.keyTokens.inc({ key: tenant.name, kind: "prompt" }, usage.promptTokens);
      metrics.keyTokens.inc({ key: tenant.name, kind: "completion" }, usage.completionTokens);
      const used = usage.promptTokens + usage.completionTokens;
      const write = reservation ? budgets.settle(reservation, used) : used > 0 ? budgets.record(tenant, used) : Promise.resolve();
      write.catch((error: unknown) => request.log.warn({ err: (error as Error).message }, "token usage not counted"));
    },
  };
}

/**
 * What a request used: the runtime's figure (a header on JSON answers, a trailer on streams); for
 * a stream cut short, what the router can tell (the prompt's bytes / 4, an event per token); none
 * when no answer came or the runtime refused the request.
 */
function usageOf(end: UpstreamEnd | undefined, body: Record<string, unknown>): TokenUsage {
  if (!end || end.status !== 200) return { promptTokens: 0, completionTokens: 0 };
  const reported = parseUsage(end.trailers[USAGE_HEADER]) ?? parseUsage(end.headers[USAGE_HEADER]);
  if (reported) return reported;
  return { promptTokens: Math.ceil(promptBound(body) / 4), completionTokens: end.events };
}
