import Type, { type TSchema } from "typebox";
import { ErrorResponse } from "../../common/api.js";
import { notFound, type HttpError } from "../../common/errors.js";

/** Response schemas `{"detail": ...}` for the given status codes. */
export const errors = (...codes: number[]) => Object.fromEntries(codes.map((code) => [code, ErrorResponse]));

/** What a proxied route may answer besides 200. */
export const PROXY_ERRORS = errors(400, 401, 403, 404, 413, 415, 429, 503);

/** A 200 that is JSON, or an SSE stream when the request asked for one. */
export function streamable(schema: TSchema, description: string) {
  return {
    description,
    content: {
      "application/json": { schema },
      "text/event-stream": { schema: Type.String({ description: "With stream: true: `data: <chunk>` events, then `data: [DONE]`; a failure after the first chunk is `event: error` with `data: {\"detail\"}`." }) },
    },
  };
}

/** 404 for a model id the backend does not know. */
export function unknownModel(modelId: string): HttpError {
  return notFound(`model ${JSON.stringify(modelId)} is not available; GET /models/available lists the models`);
}
