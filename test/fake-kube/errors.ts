// Status objects and field errors, formatted the way kube-apiserver formats them
// (k8s.io/apimachinery/pkg/api/errors and pkg/util/validation/field).

export interface StatusCause {
  reason?: string;
  message?: string;
  field?: string;
}

export interface StatusDetails {
  name?: string;
  group?: string;
  kind?: string;
  uid?: string;
  causes?: StatusCause[];
  retryAfterSeconds?: number;
}

export interface Status {
  kind: "Status";
  apiVersion: "v1";
  metadata: Record<string, never>;
  status: "Failure" | "Success";
  message?: string;
  reason?: string;
  details?: StatusDetails;
  code: number;
}

export interface GroupResource {
  group: string;
  resource: string;
}

/** An error that the server answers with a Status body. */
export class ApiError extends Error {
  readonly status: Status;
  readonly headers: Record<string, string>;
  constructor(status: Status, headers: Record<string, string> = {}) {
    super(status.message ?? status.reason ?? `HTTP ${status.code}`);
    this.status = status;
    this.headers = headers;
  }
  get code(): number {
    return this.status.code;
  }
}

function cleanDetails(details: StatusDetails | undefined): StatusDetails | undefined {
  if (details === undefined) return undefined;
  const out: StatusDetails = {};
  if (details.name) out.name = details.name;
  if (details.group) out.group = details.group;
  if (details.kind) out.kind = details.kind;
  if (details.uid) out.uid = details.uid;
  if (details.causes && details.causes.length > 0) out.causes = details.causes;
  if (details.retryAfterSeconds) out.retryAfterSeconds = details.retryAfterSeconds;
  return out;
}

export function failure(
  code: number,
  reason: string,
  message: string,
  details?: StatusDetails,
): Status {
  // key order as the real server writes it: kind, apiVersion, metadata, status, message, reason, details, code
  const d = cleanDetails(details);
  if (d === undefined) return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code };
  return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, details: d, code };
}

export function success(details: StatusDetails): Status {
  return { kind: "Status", apiVersion: "v1", metadata: {}, status: "Success", details: cleanDetails(details), code: 200 };
}

/** `deployments.apps` or `pods`. */
export function qualifiedResource(gr: GroupResource): string {
  return gr.group ? `${gr.resource}.${gr.group}` : gr.resource;
}

export function notFound(gr: GroupResource, name: string): ApiError {
  return new ApiError(
    failure(404, "NotFound", `${qualifiedResource(gr)} ${goQuote(name)} not found`, {
      name,
      group: gr.group,
      kind: gr.resource,
    }),
  );
}

export function alreadyExists(gr: GroupResource, name: string): ApiError {
  return new ApiError(
    failure(409, "AlreadyExists", `${qualifiedResource(gr)} ${goQuote(name)} already exists`, {
      name,
      group: gr.group,
      kind: gr.resource,
    }),
  );
}

export const MODIFIED_MESSAGE =
  "the object has been modified; please apply your changes to the latest version and try again";

export function conflict(gr: GroupResource, name: string, message: string = MODIFIED_MESSAGE): ApiError {
  return new ApiError(
    failure(409, "Conflict", `Operation cannot be fulfilled on ${qualifiedResource(gr)} ${goQuote(name)}: ${message}`, {
      name,
      group: gr.group,
      kind: gr.resource,
    }),
  );
}

export function badRequest(message: string): ApiError {
  return new ApiError(failure(400, "BadRequest", message));
}

export function forbidden(gr: GroupResource, name: string, message: string): ApiError {
  return new ApiError(
    failure(403, "Forbidden", `${qualifiedResource(gr)} ${goQuote(name)} is forbidden: ${message}`, {
      name,
      group: gr.group,
      kind: gr.resource,
    }),
  );
}

export function methodNotAllowed(): ApiError {
  return new ApiError(
    failure(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {}),
  );
}

export function notFoundResource(): ApiError {
  return new ApiError(failure(404, "NotFound", "the server could not find the requested resource", {}));
}

export function unsupportedMediaType(accepted: string[]): ApiError {
  return new ApiError(
    failure(
      415,
      "UnsupportedMediaType",
      `the body of the request was in an unknown format - accepted media types include: ${accepted.join(", ")}`,
    ),
  );
}

export function tooManyRequests(message: string, retryAfterSeconds: number): ApiError {
  return new ApiError(failure(429, "TooManyRequests", message, { retryAfterSeconds }), {
    "Retry-After": String(retryAfterSeconds),
  });
}

export function expired(message: string): ApiError {
  return new ApiError(failure(410, "Expired", message));
}

export function internalError(message: string): ApiError {
  return new ApiError(
    failure(500, "InternalError", `Internal error occurred: ${message}`, { causes: [{ message }] }),
  );
}

/** NewGenericServerResponse(422, ...) as used for JSON patch failures. */
export function unprocessable(serverMessage: string): ApiError {
  return new ApiError(
    failure(422, "Invalid", "the server rejected our request due to an error in our request", {
      causes: [{ reason: "UnexpectedServerResponse", message: serverMessage }],
    }),
  );
}

// ---------------------------------------------------------------------------
// Field errors (k8s.io/apimachinery/pkg/util/validation/field)

export type FieldErrorType =
  | "FieldValueNotFound"
  | "FieldValueRequired"
  | "FieldValueDuplicate"
  | "FieldValueInvalid"
  | "FieldValueNotSupported"
  | "FieldValueForbidden"
  | "FieldValueTooLong"
  | "FieldValueTooMany"
  | "InternalError"
  | "FieldValueTypeInvalid";

const TYPE_TEXT: Record<FieldErrorType, string> = {
  FieldValueNotFound: "Not found",
  FieldValueRequired: "Required value",
  FieldValueDuplicate: "Duplicate value",
  FieldValueInvalid: "Invalid value",
  FieldValueNotSupported: "Unsupported value",
  FieldValueForbidden: "Forbidden",
  FieldValueTooLong: "Too long",
  FieldValueTooMany: "Too many",
  InternalError: "Internal error",
  FieldValueTypeInvalid: "Invalid value",
};

/** Marks a field error whose value is not printed. */
export const OMIT: unique symbol = Symbol("omit");

/** A value already rendered the way Go's fmt renders it (used for Go structs). */
export class GoRendered {
  constructor(readonly text: string) {}
}

export class FieldError {
  constructor(
    readonly type: FieldErrorType,
    readonly field: string,
    readonly badValue: unknown,
    readonly detail: string,
  ) {}

  errorBody(): string {
    let s: string;
    const t = TYPE_TEXT[this.type];
    if (
      this.type === "FieldValueRequired" ||
      this.type === "FieldValueForbidden" ||
      this.type === "FieldValueTooLong" ||
      this.type === "InternalError" ||
      this.badValue === OMIT
    ) {
      s = t;
    } else {
      s = `${t}: ${goValueV(this.badValue)}`;
    }
    if (this.detail.length > 0) s += `: ${this.detail}`;
    return s;
  }

  toString(): string {
    return `${this.field}: ${this.errorBody()}`;
  }
}

export const fieldErr = {
  required: (field: string, detail = "") => new FieldError("FieldValueRequired", field, "", detail),
  invalid: (field: string, value: unknown, detail: string) => new FieldError("FieldValueInvalid", field, value, detail),
  typeInvalid: (field: string, value: unknown, detail: string) =>
    new FieldError("FieldValueTypeInvalid", field, value, detail),
  notSupported: (field: string, value: unknown, valid: string[]) =>
    new FieldError(
      "FieldValueNotSupported",
      field,
      value,
      valid.length > 0 ? `supported values: ${valid.map(goQuote).join(", ")}` : "",
    ),
  forbidden: (field: string, detail: string) => new FieldError("FieldValueForbidden", field, "", detail),
  duplicate: (field: string, value: unknown) => new FieldError("FieldValueDuplicate", field, value, ""),
  tooLongMaxLength: (field: string, value: unknown, max: number) =>
    new FieldError("FieldValueTooLong", field, value, max >= 0 ? `may not be longer than ${max}` : "value is too long"),
  tooMany: (field: string, actual: number, max: number) =>
    new FieldError(
      "FieldValueTooMany",
      field,
      actual >= 0 ? actual : OMIT,
      max >= 0 ? `must have at most ${max} items` : "has too many items",
    ),
  internal: (field: string, detail: string) => new FieldError("InternalError", field, null, detail),
};

/** utilerrors.NewAggregate(errs).Error() after field.ErrorList.ToAggregate() de-duplication. */
export function aggregateMessage(errs: FieldError[]): string {
  const seen = new Set<string>();
  const msgs: string[] = [];
  for (const e of errs) {
    const m = e.toString();
    if (seen.has(m)) continue;
    seen.add(m);
    msgs.push(m);
  }
  if (msgs.length === 1) return msgs[0]!;
  return `[${msgs.join(", ")}]`;
}

/** errors.NewInvalid(qualifiedKind, name, errs). */
export function invalid(kind: { group: string; kind: string }, name: string, errs: FieldError[]): ApiError {
  const qualifiedKind = kind.group ? `${kind.kind}.${kind.group}` : kind.kind;
  const causes = errs.map((e) => ({ reason: e.type, message: e.errorBody(), field: e.field }));
  const message =
    errs.length === 0
      ? `${qualifiedKind} ${goQuote(name)} is invalid`
      : `${qualifiedKind} ${goQuote(name)} is invalid: ${aggregateMessage(errs)}`;
  return new ApiError(failure(422, "Invalid", message, { name, group: kind.group, kind: kind.kind, causes }));
}

// ---------------------------------------------------------------------------
// Go fmt rendering

/** strconv.Quote / %q. */
export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\t") out += "\\t";
    else if (ch === "\r") out += "\\r";
    else if (c < 0x20 || c === 0x7f) out += `\\x${c.toString(16).padStart(2, "0")}`;
    else out += ch;
  }
  return out + '"';
}

/** strconv.FormatFloat(f, 'g', -1, 64), which is what %v prints for a float64. */
export function goFloat(x: number): string {
  if (Number.isNaN(x)) return "NaN";
  if (x === Infinity) return "+Inf";
  if (x === -Infinity) return "-Inf";
  if (x === 0) return Object.is(x, -0) ? "-0" : "0";
  const exp = Math.floor(Math.log10(Math.abs(x)));
  // JS and Go both print the shortest round-trip digits; Go switches to %e when the
  // exponent is < -4 or >= 6 (the precision used for "shortest").
  if (exp < -4 || exp >= 6) return jsExpToGo(x.toExponential());
  return String(x);
}

function jsExpToGo(s: string): string {
  const [mant, e] = s.split("e") as [string, string];
  const sign = e.startsWith("-") ? "-" : "+";
  const digits = e.replace(/^[+-]/, "").padStart(2, "0");
  return `${mant}e${sign}${digits}`;
}

/** A JSON number as Go sees it after decoding into interface{} via the unstructured converter. */
function goNumber(n: number): string {
  return Number.isInteger(n) && Math.abs(n) < 2 ** 63 ? String(n) : goFloat(n);
}

/** %v-like rendering used by field.Error.ErrorBody for the bad value. */
export function goValueV(v: unknown): string {
  if (v instanceof GoRendered) return v.text;
  if (v === null || v === undefined) return goQuote("null");
  if (typeof v === "string") return goQuote(v);
  if (typeof v === "number") return goNumber(v);
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "boolean") return v ? "true" : "false";
  return goSharpV(v);
}

/** %#v of a decoded JSON value (map[string]interface {} / []interface {}). */
export function goSharpV(v: unknown): string {
  if (v instanceof GoRendered) return v.text;
  if (v === null || v === undefined) return "interface {}(nil)";
  if (typeof v === "string") return goQuote(v);
  if (typeof v === "number") return goNumber(v);
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "boolean") return v ? "true" : "false";
  if (Array.isArray(v)) return `[]interface {}{${v.map(goSharpV).join(", ")}}`;
  const obj = v as Record<string, unknown>;
  const keys = Object.keys(obj).sort();
  return `map[string]interface {}{${keys.map((k) => `${goQuote(k)}:${goSharpV(obj[k])}`).join(", ")}}`;
}

/** %#v of a map[string]string. */
export function goStringMap(m: Record<string, string> | undefined): string {
  if (m === undefined) return "map[string]string(nil)";
  const keys = Object.keys(m).sort();
  return `map[string]string{${keys.map((k) => `${goQuote(k)}:${goQuote(String(m[k]))}`).join(", ")}}`;
}
