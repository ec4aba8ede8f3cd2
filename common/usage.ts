/**
 * How a runtime tells the router what a request used, so token budgets count streams too: the
 * header `x-corral-usage: prompt=<n>, completion=<m>` on JSON answers, and the same as an HTTP
 * trailer at the end of a stream (the router reads it and never passes it on to the client).
 */
export const USAGE_HEADER = "x-corral-usage";

export interface TokenUsage {
  promptTokens: number;
  completionTokens: number;
}

export function formatUsage(usage: TokenUsage): string {
  return `prompt=${usage.promptTokens}, completion=${usage.completionTokens}`;
}

/** The usage a header or trailer carries, or undefined when it is absent or malformed. */
export function parseUsage(value: string | string[] | undefined): TokenUsage | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  const match = text ? /^\s*prompt=(\d+),\s*completion=(\d+)\s*$/.exec(text) : null;
  return match ? { promptTokens: Number(match[1]), completionTokens: Number(match[2]) } : undefined;
}
