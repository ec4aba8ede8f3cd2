/**
 * Typed HTTP errors. Handlers throw these; the one error handler in `http.ts` turns them into
 * `{"detail": "..."}` answers with the right status code and headers.
 */
export class HttpError extends Error {
  readonly statusCode: number;
  readonly headers: Record<string, string>;

  constructor(statusCode: number, detail: string, headers: Record<string, string> = {}, options?: ErrorOptions) {
    super(detail, options);
    this.name = "HttpError";
    this.statusCode = statusCode;
    this.headers = headers;
  }
}

export const badRequest = (detail: string) => new HttpError(400, detail);
export const unauthorized = (detail: string) =>
  new HttpError(401, detail, { "www-authenticate": 'Bearer realm="corral"' });
export const forbidden = (detail: string) => new HttpError(403, detail);
export const notFound = (detail: string) => new HttpError(404, detail);
export const payloadTooLarge = (detail: string) => new HttpError(413, detail);
export const tooManyRequests = (detail: string, retryAfterSeconds: number, headers: Record<string, string> = {}) =>
  new HttpError(429, detail, { "retry-after": String(Math.max(1, Math.ceil(retryAfterSeconds))), ...headers });
export const serviceUnavailable = (detail: string, retryAfterSeconds?: number) =>
  new HttpError(503, detail, retryAfterSeconds === undefined ? {} : { "retry-after": String(Math.max(1, Math.ceil(retryAfterSeconds))) });
export const gatewayTimeout = (detail: string) => new HttpError(504, detail);

/** Thrown when a configuration cannot be built; main() prints the message and exits 2. */
export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** The wire shape of every error answer. */
export interface ErrorBody {
  detail: string;
}
