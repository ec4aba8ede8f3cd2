import { describe, expect, it } from "vitest";
import type { Token } from "node-llama-cpp";
import { TextAssembler } from "./text-stream.js";
import { reusablePrefix } from "./decoder.js";

/** A byte-level vocabulary: token i is the i-th byte string, decoded the way llama.cpp does (invalid UTF-8 as U+FFFD). */
function vocabulary(pieces: (string | number[])[]) {
  const bytes = pieces.map((piece) => (typeof piece === "string" ? Buffer.from(piece, "utf8") : Buffer.from(piece)));
  const detokenize = (tokens: readonly Token[]) => Buffer.concat(tokens.map((t) => bytes[t]!)).toString("utf8");
  const tokens = pieces.map((_, i) => i as Token);
  return { detokenize, tokens };
}

function run(assembler: TextAssembler, tokens: readonly Token[]): string[] {
  const chunks = tokens.map((token) => assembler.push(token));
  chunks.push(assembler.finish());
  return chunks;
}

describe("TextAssembler", () => {
  it("passes text through token by token when there is nothing to hold", () => {
    const { detokenize, tokens } = vocabulary(["Hel", "lo", " world"]);
    const assembler = new TextAssembler(detokenize, [], []);
    expect(run(assembler, tokens)).toEqual(["Hel", "lo", " world", ""]);
    expect(assembler.text).toBe("Hello world");
  });

  it("holds a token that ends inside a character until the character is whole", () => {
    // "é" is C3 A9 and "€" is E2 82 AC, split over tokens.
    const { detokenize, tokens } = vocabulary(["caf", [0xc3], [0xa9, 0x20], [0xe2], [0x82], [0xac], "!"]);
    const assembler = new TextAssembler(detokenize, [], []);
    const chunks = run(assembler, tokens);
    expect(chunks).toEqual(["caf", "", "é ", "", "", "€", "!", ""]);
    expect(chunks.join("")).not.toContain("\uFFFD");
  });

  it("sends a broken character as U+FFFD at the end rather than losing the text", () => {
    const { detokenize, tokens } = vocabulary(["ok", [0xe2, 0x82]]);
    const assembler = new TextAssembler(detokenize, [], []);
    expect(run(assembler, tokens).join("")).toBe("ok\uFFFD");
  });

  it("gives up holding after four tokens of an invalid sequence", () => {
    const { detokenize, tokens } = vocabulary([[0xff], [0xff], [0xff], [0xff], "x"]);
    const assembler = new TextAssembler(detokenize, [], []);
    const chunks = run(assembler, tokens);
    expect(chunks.slice(0, 4)).toEqual(["", "", "", "\uFFFD\uFFFD\uFFFD\uFFFD"]);
    expect(chunks[4]).toBe("x");
  });

  it("ends before a stop string that spans tokens and never sends any part of it", () => {
    const { detokenize, tokens } = vocabulary(["The end", ". ##", "#", "# more"]);
    const assembler = new TextAssembler(detokenize, [], ["###"]);
    const chunks: string[] = [];
    for (const token of tokens) {
      chunks.push(assembler.push(token));
      if (assembler.stopped) break;
    }
    expect(chunks).toEqual(["The end", ". ", ""]);
    expect(assembler.stopped).toBe(true);
    expect(assembler.text).toBe("The end. ");
    expect(assembler.finish()).toBe("");
  });

  it("releases held text once it can no longer begin a stop string", () => {
    const { detokenize, tokens } = vocabulary(["a <", "/s", "x> b"]);
    const assembler = new TextAssembler(detokenize, [], ["</s>"]);
    expect(run(assembler, tokens)).toEqual(["a ", "", "</sx> b", ""]);
    expect(assembler.stopped).toBe(false);
  });

  it("stops at the earliest of several stop strings", () => {
    const { detokenize, tokens } = vocabulary(["one STOP two END"]);
    const assembler = new TextAssembler(detokenize, [], ["END", "STOP"]);
    expect(assembler.push(tokens[0]!)).toBe("one ");
    expect(assembler.stopped).toBe(true);
  });

  it("sends a held stop-string start when generation ends without the stop string", () => {
    const { detokenize, tokens } = vocabulary(["answer: 4", "\n\n"]);
    const assembler = new TextAssembler(detokenize, [], ["\n\nQ:"]);
    expect(run(assembler, tokens)).toEqual(["answer: 4", "", "\n\n"]);
  });

  it("decodes each token after the tokens before it, so context-dependent spaces survive", () => {
    const seen: (readonly Token[])[] = [];
    const detokenize = (tokens: readonly Token[], last: readonly Token[]) => {
      seen.push([...last]);
      return tokens.length === 1 ? `<${tokens[0]}>` : "";
    };
    const assembler = new TextAssembler(detokenize, [1, 2, 3, 4] as Token[], []);
    run(assembler, [10, 11] as Token[]);
    expect(seen.slice(0, 2)).toEqual([[2, 3, 4], [3, 4, 10]]);
  });
});

describe("reusablePrefix", () => {
  const t = (...values: number[]) => values as Token[];
  it("is the shared start of the cached tokens and the prompt", () => {
    expect(reusablePrefix(t(1, 2, 3, 9), t(1, 2, 3, 4, 5))).toBe(3);
    expect(reusablePrefix(t(), t(1, 2))).toBe(0);
    expect(reusablePrefix(t(5, 6), t(1, 2))).toBe(0);
  });

  it("always leaves the last prompt token to decode, so there are logits to sample", () => {
    expect(reusablePrefix(t(1, 2, 3), t(1, 2, 3))).toBe(2);
    expect(reusablePrefix(t(1, 2, 3, 4, 5), t(1, 2, 3))).toBe(2);
  });
});
