import type { Token } from "node-llama-cpp";

/** Text of `tokens` as they read after `lastTokens` (which give word-initial spaces their context). */
export type Detokenize = (tokens: readonly Token[], lastTokens: readonly Token[]) => string;

/** A token can end inside a multi-byte character; llama.cpp's tokens span at most 4 bytes of one. */
const MAX_TOKENS_PER_CHARACTER = 4;
const CONTEXT_TOKENS = 3;
const REPLACEMENT = "\uFFFD";

/**
 * Turns a generation's tokens into text chunks as they are sampled. It holds back a token that
 * ends in the middle of a UTF-8 character until the character is whole, and any tail that could
 * be the start of a stop string until that is decided, so a client never sees half a character
 * or part of a stop string. Text is decoded once per token group, never re-decoded.
 */
export class TextAssembler {
  private readonly pending: Token[] = [];
  private context: Token[];
  /** Decoded text not yet released (a possible stop-string start). */
  private held = "";
  /** Everything released so far. */
  text = "";
  /** Set once a stop string has appeared; the text ends before it. */
  stopped = false;

  constructor(
    private readonly detokenize: Detokenize,
    contextTokens: readonly Token[],
    private readonly stops: readonly string[],
  ) {
    this.context = contextTokens.slice(-CONTEXT_TOKENS);
  }

  /** Adds one sampled token; returns the text that may be sent now ("" when none). */
  push(token: Token): string {
    if (this.stopped) return "";
    this.pending.push(token);
    const piece = this.detokenize(this.pending, this.context);
    if (piece.endsWith(REPLACEMENT) && this.pending.length < MAX_TOKENS_PER_CHARACTER) return "";
    this.takePending();
    return this.release(piece, false);
  }

  /** Generation ended: releases what is still held (an unfinished character as U+FFFD). */
  finish(): string {
    if (this.stopped) return "";
    const piece = this.pending.length > 0 ? this.detokenize(this.pending, this.context) : "";
    this.takePending();
    return this.release(piece, true);
  }

  private takePending(): void {
    this.context = this.pending.length >= CONTEXT_TOKENS
      ? this.pending.slice(-CONTEXT_TOKENS)
      : [...this.context, ...this.pending].slice(-CONTEXT_TOKENS);
    this.pending.length = 0;
  }

  private release(piece: string, final: boolean): string {
    let out: string;
    if (this.stops.length === 0) {
      out = this.held + piece;
      this.held = "";
    } else {
      const text = this.held + piece;
      const stopAt = earliestStop(text, this.stops);
      if (stopAt >= 0) {
        out = text.slice(0, stopAt);
        this.held = "";
        this.stopped = true;
      } else {
        const keep = final ? 0 : longestStopPrefixSuffix(text, this.stops);
        out = text.slice(0, text.length - keep);
        this.held = text.slice(text.length - keep);
      }
    }
    this.text += out;
    return out;
  }
}

function earliestStop(text: string, stops: readonly string[]): number {
  let earliest = -1;
  for (const stop of stops) {
    const at = text.indexOf(stop);
    if (at >= 0 && (earliest < 0 || at < earliest)) earliest = at;
  }
  return earliest;
}

/** Length of the longest end of `text` that is a proper start of some stop string. */
function longestStopPrefixSuffix(text: string, stops: readonly string[]): number {
  let longest = 0;
  for (const stop of stops) {
    for (let length = Math.min(stop.length - 1, text.length); length > longest; length--) {
      if (text.endsWith(stop.slice(0, length))) {
        longest = length;
        break;
      }
    }
  }
  return longest;
}
