/**
 * Server-Sent Events framing. A chunk that holds line breaks goes out as several `data:` lines of
 * one event: a spec-compliant parser joins them with "\n" and so gets the text back exactly.
 */
const LINE_BREAK = /\r\n|\r|\n/;

export function sseEvent(data: string, event?: string): string {
  let out = event === undefined ? "" : `event: ${event}\n`;
  if (!LINE_BREAK.test(data)) return `${out}data: ${data}\n\n`;
  for (const line of data.split(LINE_BREAK)) out += `data: ${line}\n`;
  return out + "\n";
}

export const SSE_DONE = "data: [DONE]\n\n";

/** The documented error event sent when a stream fails after its first chunk. */
export function sseError(detail: string): string {
  return sseEvent(JSON.stringify({ detail }), "error");
}

export const SSE_HEADERS: Record<string, string> = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache, no-transform",
  connection: "keep-alive",
  // Tells nginx-style proxies not to buffer the stream.
  "x-accel-buffering": "no",
};
