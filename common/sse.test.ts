import { describe, expect, it } from "vitest";
import { createParser, type EventSourceMessage } from "eventsource-parser";
import { SSE_DONE, sseError, sseEvent } from "./sse.js";

function parse(wire: string): EventSourceMessage[] {
  const events: EventSourceMessage[] = [];
  const parser = createParser({ onEvent: (event) => events.push(event) });
  parser.feed(wire);
  return events;
}

describe("SSE framing", () => {
  it.each([
    ["plain text", "hello"],
    ["leading space kept", " world"],
    ["one newline", "line one\nline two"],
    ["trailing newline", "end\n"],
    ["only newlines", "\n\n"],
    ["empty chunk", ""],
    ["colon and data-like text", "data: not a field"],
    ["unicode", "héllo ✓ 🚀"],
  ])("a compliant parser gets %s back exactly", (_name, text) => {
    const events = parse(sseEvent(text) + SSE_DONE);
    expect(events.map((e) => e.data)).toEqual([text, "[DONE]"]);
  });

  it("joins many chunks back into the original text", () => {
    const chunks = ["Hel", "lo\n", "\nwor", "ld", " \n "];
    const events = parse(chunks.map((c) => sseEvent(c)).join("") + SSE_DONE);
    expect(events.slice(0, -1).map((e) => e.data).join("")).toBe(chunks.join(""));
  });

  it("frames errors as a named event carrying a detail", () => {
    const [event] = parse(sseError("model crashed"));
    expect(event?.event).toBe("error");
    expect(JSON.parse(event!.data)).toEqual({ detail: "model crashed" });
  });
});
