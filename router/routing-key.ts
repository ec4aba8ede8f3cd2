import { finishHash, hashPart, HASH_SEED } from "./prefix-ring.js";

/**
 * What prefix-aware routing hashes for a request: text that is the same for every request whose
 * prompt starts the same way, so they land where that start is already in a runtime's KV cache.
 *
 * - A plain prompt (`/generate`, `/v1/completions`; the first prompt of a batch): its first
 *   PROMPT_KEY_CHARS characters. A client that sends a growing transcript as the prompt keeps one
 *   key for as long as the transcript's start is that long.
 * - A conversation (`/chat`, `/v1/chat/completions`): its system (and developer) messages and its
 *   first user message, each cut to CONVERSATION_PART_CHARS. Every turn of a conversation has the
 *   same opening, so the whole conversation stays on one runtime, whose cache holds its history;
 *   conversations that share a long system prompt still spread by their first question (each
 *   runtime then caches that system prompt once).
 *
 * The parts are hashed where they lie, never joined, and the cuts bound the cost (about a
 * nanosecond a character).
 */
export const PROMPT_KEY_CHARS = 2048;
export const CONVERSATION_PART_CHARS = 1024;
/** System messages beyond this many add nothing to a conversation's key. */
const MAX_SYSTEM_PARTS = 4;
/** Between parts, so that ["ab", "c"] and ["a", "bc"] hash apart. */
const SEPARATOR = "\u0000";

interface MessageLike {
  role?: unknown;
  content?: unknown;
}

/** A message's text (OpenAI's content parts included) added to the hash, cut to `limit` characters. */
function hashContent(hash: number, content: unknown, limit: number): number {
  if (typeof content === "string") return hashPart(hash, content, 0, Math.min(content.length, limit));
  if (!Array.isArray(content)) return hash;
  let left = limit;
  for (const part of content as { text?: unknown }[]) {
    if (left <= 0) break;
    const text = part?.text;
    if (typeof text !== "string") continue;
    const end = Math.min(text.length, left);
    hash = hashPart(hash, text, 0, end);
    left -= end;
  }
  return hash;
}

/** The routing key (a 32-bit ring position) of a validated request body; undefined when it has nothing to key on. */
export function routingKey(body: Record<string, unknown>): number | undefined {
  const messages = body.messages;
  if (Array.isArray(messages)) return conversationKey(messages as MessageLike[]);
  const prompt = body.prompt ?? (Array.isArray(body.prompts) ? body.prompts[0] : undefined);
  const text = Array.isArray(prompt) ? prompt[0] : prompt;
  if (typeof text !== "string" || text.length === 0) return undefined;
  return finishHash(hashPart(HASH_SEED, text, 0, Math.min(text.length, PROMPT_KEY_CHARS)));
}

function conversationKey(messages: readonly MessageLike[]): number | undefined {
  let hash = HASH_SEED;
  let parts = 0;
  let systemParts = 0;
  for (const message of messages) {
    const role = message.role;
    if (role === "system" || role === "developer") {
      if (systemParts++ < MAX_SYSTEM_PARTS) {
        hash = hashPart(hashContent(hash, message.content, CONVERSATION_PART_CHARS), SEPARATOR);
        parts++;
      }
      continue;
    }
    if (role === "user") return finishHash(hashContent(hash, message.content, CONVERSATION_PART_CHARS));
  }
  return parts > 0 ? finishHash(hash) : undefined;
}
