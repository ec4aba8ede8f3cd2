import fp from "fastify-plugin";
import { parseJsonBody } from "../../common/http.js";
import type { App } from "../app.js";
import { contextOf } from "../request-context.js";

/**
 * JSON bodies are parsed for validation and their bytes kept, so the runtime gets the body
 * exactly as sent (no re-encoding). Only JSON is accepted: anything else is a 415 rather than a
 * string that fails validation.
 */
export const jsonBody = fp(
  async function jsonBody(app: App): Promise<void> {
    app.removeContentTypeParser("application/json");
    app.removeContentTypeParser("text/plain");
    app.addContentTypeParser("application/json", { parseAs: "buffer" }, (request, body, done) => {
      const raw = body as Buffer;
      contextOf(request).rawBody = raw;
      if (raw.length === 0) {
        done(null, undefined);
        return;
      }
      try {
        done(null, parseJsonBody(raw));
      } catch (error) {
        done(error as Error, undefined);
      }
    });
  },
  { name: "corral-json-body" },
);
