// HTTP front of the fake: routing, discovery, watch streams, request log, fault injection,
// and the handle returned by startFakeKube().

import { randomUUID } from "node:crypto";
import { type IncomingMessage, type Server, type ServerResponse, createServer } from "node:http";
import type { AddressInfo, Socket } from "node:net";

import { KubeConfig } from "@kubernetes/client-node";

import { ApiServer, type ApiResult, type CallContext } from "./apiserver.js";
import { Controllers } from "./controllers.js";
import { ApiError, type Status, expired, failure, methodNotAllowed, notFoundResource } from "./errors.js";
import { type ResourceType, apiGroup, apiGroupList, apiResourceList, apiVersionOf, openApiV3Doc, openApiV3Root } from "./registry.js";
import { type LabelRequirement, type FieldRequirement, matchesFields, matchesLabels, parseFieldSelector, parseLabelSelector } from "./selectors.js";
import type { Obj, StoreEvent } from "./store.js";

export type Verb =
  | "get"
  | "list"
  | "watch"
  | "create"
  | "update"
  | "patch"
  | "delete"
  | "deletecollection"
  | "discovery"
  | "other";

export interface FakeKubeOptions {
  /**
   * How long list and watch of a freshly established CRD's resources answer
   * 429 TooManyRequests "storage is (re)initializing" (Retry-After: 1). Default 1000; 0 disables.
   */
  crdInitDelayMs?: number;
  /**
   * Delay between creating a CRD and establishing it (until then its resources answer 404,
   * as in a real cluster for a short moment). Default 0: established on the next tick.
   */
  crdEstablishDelayMs?: number;
  /** Interval of BOOKMARK events for watches that asked for them. Default 60000 (about what kube-apiserver does). */
  bookmarkIntervalMs?: number;
  /** Number of events kept for watches that resume from a resourceVersion. Default 1000. */
  historySize?: number;
  /** Run the simplified Deployment controller (pods owned directly by the Deployment). Default false. */
  deploymentController?: boolean;
  /** Namespaces to create at start besides default, kube-system, kube-public and kube-node-lease. */
  namespaces?: string[];
  /** Upper bound of a watch without timeoutSeconds, in seconds; the server picks a random time in [max/2, max]. Default 3600. */
  maxWatchSeconds?: number;
  /** Reported by /version. Default 1.33. */
  version?: { major: string; minor: string };
  /** Receives one line per request and controller failures. Default: silent. */
  log?: (line: string) => void;
  /** Port on 127.0.0.1. Default 0 (random). */
  port?: number;
}

export interface RequestLogEntry {
  method: string;
  path: string;
  verb: Verb;
  /** "deployments.apps", "pods", "models.corral.dev" ... */
  resource?: string;
  namespace?: string;
  name?: string;
  subresource?: string;
  status: number;
  durationMs: number;
  at: number;
}

export interface Fault {
  verb?: Verb;
  /** "pods", "deployments.apps", "models.corral.dev" */
  resource?: string;
  namespace?: string;
  name?: string;
  subresource?: string;
  /** HTTP status to answer with; the body is a matching Status. */
  status: number;
  reason?: string;
  message?: string;
  retryAfterSeconds?: number;
  /** How many matching requests fail (default 1). */
  times?: number;
}

export interface DropWatchesOptions {
  /** Destroy the sockets instead of ending the responses cleanly (the client sees an error). */
  abrupt?: boolean;
}

export interface FakeKube {
  /** http://127.0.0.1:PORT */
  readonly url: string;
  /** A KubeConfig for @kubernetes/client-node pointing at the fake (namespace "default"). */
  readonly kubeConfig: KubeConfig;
  /** The same as a kubeconfig YAML document, for kubectl or KUBECONFIG. */
  readonly kubeconfigYaml: string;
  close(): Promise<void>;

  /** Objects as stored, in the version `resource` names. `resource`: "pods", "deployments.apps", "Model", "models.corral.dev". */
  get(resource: string, namespace: string | undefined, name: string): Obj | undefined;
  list(resource: string, namespace?: string): Obj[];
  /** Creates through admission (defaults, validation) as field manager "fake-kube". Throws ApiError. */
  create(obj: Obj): Obj;
  /** Updates through admission; `subresource: "status"` writes only the status. Throws ApiError. */
  update(obj: Obj, opts?: { subresource?: "status"; manager?: string }): Obj;
  /** Writes an object exactly as given (no admission); bumps the resourceVersion and notifies watches. */
  put(obj: Obj): Obj;
  /** Deletes like the API would (finalizers, cascade). Returns false when it did not exist. */
  delete(resource: string, namespace: string | undefined, name: string, propagationPolicy?: "Background" | "Foreground" | "Orphan"): boolean;
  /** Marks a pod Running and Ready (or not ready), optionally with an IP, through the status subresource. */
  setPodReady(namespace: string, name: string, ready?: boolean, opts?: { podIP?: string }): Obj;
  /** The current resourceVersion (the etcd revision). */
  resourceVersion(): string;
  /** Drops the watch history: resuming a watch from any resourceVersion issued so far answers 410 Gone. */
  compactHistory(): void;
  /** Ends all open watch streams; returns how many. */
  dropWatches(opts?: DropWatchesOptions): number;
  readonly openWatches: number;
  /** Requests answered so far (watch requests count when they start). */
  readonly requestCount: number;
  readonly requestLog: readonly RequestLogEntry[];
  /** Requests per verb, optionally only for one resource ("pods", "deployments.apps"). */
  requestCounts(resource?: string): Record<string, number>;
  resetRequestLog(): void;
  /** Makes matching requests fail with the given status, `times` times. */
  injectFault(fault: Fault): void;
  clearFaults(): void;
  /** Runs queued controller work (GC, namespace, CRD, deployments) now. */
  flushControllers(): void;
  /** The underlying server, for advanced tests. */
  readonly api: ApiServer;
}

const MAX_BODY = 3 * 1024 * 1024;

interface Route {
  verb: Verb;
  rt?: ResourceType;
  namespace?: string;
  name?: string;
  subresource?: string;
  watchName?: string;
  handler: () => ApiResult | "stream";
}

function resourceLabel(rt: ResourceType): string {
  return rt.group ? `${rt.resource}.${rt.group}` : rt.resource;
}

class WatchStream {
  private readonly unsubscribe: (() => void)[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  private closed = false;

  constructor(
    private readonly res: ServerResponse,
    private readonly api: ApiServer,
    private readonly rt: ResourceType,
    private readonly namespace: string | undefined,
    private readonly labels: LabelRequirement[],
    private readonly fields: FieldRequirement[],
    private readonly onClose: (w: WatchStream) => void,
  ) {}

  private matches(obj: Obj | undefined): boolean {
    if (!obj) return false;
    if (this.rt.namespaced && this.namespace !== undefined && obj.metadata?.namespace !== this.namespace) return false;
    return matchesLabels(obj.metadata?.labels, this.labels) && matchesFields(obj, this.fields);
  }

  private write(type: string, object: unknown): void {
    if (this.closed) return;
    this.res.write(`${JSON.stringify({ type, object })}\n`);
  }

  private deliver(e: StoreEvent): void {
    if (e.storageKey !== this.rt.storageKey) return;
    const cur = this.matches(e.obj);
    const prev = this.matches(e.old);
    const obj = this.api.present(this.rt, e.obj);
    if (e.type === "ADDED") {
      if (cur) this.write("ADDED", obj);
    } else if (e.type === "MODIFIED") {
      if (cur && prev) this.write("MODIFIED", obj);
      else if (cur) this.write("ADDED", obj);
      else if (prev) this.write("DELETED", obj);
    } else if (cur || prev) {
      this.write("DELETED", obj);
    }
  }

  start(opts: {
    resourceVersion: string | null;
    sendInitialEvents: boolean;
    bookmarks: boolean;
    bookmarkIntervalMs: number;
    timeoutMs: number;
  }): void {
    this.res.writeHead(200, {
      "Content-Type": "application/json",
      "Cache-Control": "no-cache, private",
      "Transfer-Encoding": "chunked",
      "Audit-Id": randomUUID(),
    });
    // flush the headers so that the client's fetch resolves right away
    this.res.flushHeaders();
    const rvParam = opts.resourceVersion;
    if (rvParam === null || rvParam === "" || rvParam === "0" || opts.sendInitialEvents) {
      for (const s of this.api.select(this.rt, this.namespace, { query: new URLSearchParams() })) {
        if (this.matches(s.obj)) this.write("ADDED", this.api.present(this.rt, s.obj));
      }
      if (opts.sendInitialEvents && opts.bookmarks) this.bookmark(true);
    } else {
      const rv = Number(rvParam);
      const events = this.api.store.eventsSince(rv, this.rt.storageKey);
      if (events === "expired") {
        const err = expired(`too old resource version: ${rv} (${this.api.store.oldestWatchableRv()})`);
        this.write("ERROR", err.status);
        this.close();
        return;
      }
      for (const e of events) this.deliver(e);
    }
    this.unsubscribe.push(this.api.store.subscribe((e) => this.deliver(e)));
    if (opts.bookmarks && opts.bookmarkIntervalMs > 0) {
      this.timers.push(setInterval(() => this.bookmark(false), opts.bookmarkIntervalMs));
    }
    this.timers.push(setTimeout(() => this.close(), opts.timeoutMs));
  }

  private bookmark(initialEnd: boolean): void {
    const metadata: Obj = { resourceVersion: String(this.api.store.currentRv()) };
    if (initialEnd) metadata.annotations = { "k8s.io/initial-events-end": "true" };
    if (!this.rt.custom) metadata.creationTimestamp = null;
    this.write("BOOKMARK", { kind: this.rt.kind, apiVersion: apiVersionOf(this.rt), metadata });
  }

  close(abrupt = false): void {
    if (this.closed) return;
    this.closed = true;
    for (const u of this.unsubscribe) u();
    for (const t of this.timers) clearTimeout(t);
    if (abrupt) this.res.socket?.destroy();
    else this.res.end();
    this.onClose(this);
  }
}

class FakeKubeServer {
  readonly api: ApiServer;
  readonly controllers: Controllers;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly watches = new Set<WatchStream>();
  readonly log: RequestLogEntry[] = [];
  count = 0;
  private faults: (Fault & { left: number })[] = [];
  private readonly opts: Required<Omit<FakeKubeOptions, "namespaces" | "log" | "port">> & { log: (l: string) => void };
  url = "";

  constructor(options: FakeKubeOptions) {
    this.opts = {
      crdInitDelayMs: options.crdInitDelayMs ?? 1000,
      crdEstablishDelayMs: options.crdEstablishDelayMs ?? 0,
      bookmarkIntervalMs: options.bookmarkIntervalMs ?? 60_000,
      historySize: options.historySize ?? 1000,
      deploymentController: options.deploymentController ?? false,
      maxWatchSeconds: options.maxWatchSeconds ?? 3600,
      version: options.version ?? { major: "1", minor: "33" },
      log: options.log ?? (() => {}),
    };
    this.api = new ApiServer({ crdInitDelayMs: this.opts.crdInitDelayMs, historySize: this.opts.historySize });
    this.controllers = new Controllers(this.api, {
      deploymentController: this.opts.deploymentController,
      crdEstablishDelayMs: this.opts.crdEstablishDelayMs,
      log: this.opts.log,
    });
    const nsRt = this.api.registry.find("", "v1", "namespaces")!;
    for (const ns of ["default", "kube-system", "kube-public", "kube-node-lease", ...(options.namespaces ?? [])]) {
      if (!this.api.store.get("/namespaces", undefined, ns)) {
        this.api.createAs(nsRt, { apiVersion: "v1", kind: "Namespace", metadata: { name: ns } }, "fake-kube");
      }
    }
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((e: unknown) => {
        this.opts.log(`request failed: ${(e as Error).stack ?? String(e)}`);
        if (!res.headersSent) this.send(res, { status: 500, body: failure(500, "InternalError", `Internal error occurred: ${(e as Error).message}`) });
        else res.destroy();
      });
    });
    this.server.keepAliveTimeout = 5000;
    this.server.on("connection", (s: Socket) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
  }

  async listen(port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, "127.0.0.1", () => resolve());
    });
    const addr = this.server.address() as AddressInfo;
    this.url = `http://127.0.0.1:${addr.port}`;
  }

  async close(): Promise<void> {
    this.controllers.stop();
    for (const w of [...this.watches]) w.close();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
      for (const s of this.sockets) s.destroy();
    });
  }

  get openWatches(): number {
    return this.watches.size;
  }

  dropWatches(opts: DropWatchesOptions = {}): number {
    const n = this.watches.size;
    for (const w of [...this.watches]) w.close(opts.abrupt === true);
    return n;
  }

  injectFault(f: Fault): void {
    this.faults.push({ ...f, left: f.times ?? 1 });
  }

  clearFaults(): void {
    this.faults = [];
  }

  private send(res: ServerResponse, r: ApiResult): void {
    const body = JSON.stringify(r.body);
    res.writeHead(r.status, {
      "Content-Type": "application/json",
      "Cache-Control": "no-cache, private",
      "Audit-Id": randomUUID(),
      "Content-Length": Buffer.byteLength(body),
      ...(r.headers ?? {}),
    });
    res.end(body);
  }

  private async readBody(req: IncomingMessage): Promise<string | undefined> {
    if (req.method === "GET" || req.method === "HEAD") {
      req.resume();
      return undefined;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req) {
      const b = c as Buffer;
      size += b.length;
      if (size > MAX_BODY) throw new ApiError(failure(413, "RequestEntityTooLarge", `Request entity too large: limit is ${MAX_BODY}`));
      chunks.push(b);
    }
    return chunks.length === 0 ? undefined : Buffer.concat(chunks).toString("utf8");
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    this.count++;
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const method = (req.method ?? "GET").toUpperCase();
    const entry: RequestLogEntry = { method, path: url.pathname + url.search, verb: "other", status: 0, durationMs: 0, at: Date.now() };
    this.log.push(entry);
    const finish = (status: number) => {
      entry.status = status;
      entry.durationMs = performance.now() - started;
      this.opts.log(`${method} ${entry.path} -> ${status}`);
    };
    let raw: string | undefined;
    try {
      raw = await this.readBody(req);
    } catch (e) {
      if (e instanceof ApiError) {
        this.send(res, { status: e.code, body: e.status });
        finish(e.code);
        return;
      }
      throw e;
    }
    const ctx: CallContext = { query: url.searchParams, ...(req.headers["user-agent"] ? { userAgent: req.headers["user-agent"] } : {}) };
    let route: Route | undefined;
    try {
      route = this.route(method, url, raw, req.headers["content-type"], ctx, res);
      if (!route) {
        res.writeHead(404, { "Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff" });
        res.end("404 page not found\n");
        finish(404);
        return;
      }
      entry.verb = route.verb;
      if (route.rt) entry.resource = resourceLabel(route.rt);
      if (route.namespace !== undefined) entry.namespace = route.namespace;
      if (route.name !== undefined) entry.name = route.name;
      if (route.subresource !== undefined) entry.subresource = route.subresource;
      this.checkFaults(entry);
      const result = route.handler();
      if (result === "stream") {
        finish(200);
        return;
      }
      this.send(res, result);
      finish(result.status);
    } catch (e) {
      if (e instanceof ApiError) {
        this.send(res, { status: e.code, body: e.status, headers: e.headers });
        finish(e.code);
        return;
      }
      throw e;
    }
  }

  private checkFaults(entry: RequestLogEntry): void {
    for (const f of this.faults) {
      if (f.left <= 0) continue;
      if (f.verb !== undefined && f.verb !== entry.verb) continue;
      if (f.resource !== undefined && f.resource !== entry.resource && f.resource !== entry.resource?.split(".")[0]) continue;
      if (f.namespace !== undefined && f.namespace !== entry.namespace) continue;
      if (f.name !== undefined && f.name !== entry.name) continue;
      if (f.subresource !== undefined && f.subresource !== entry.subresource) continue;
      f.left--;
      const reason = f.reason ?? defaultReason(f.status);
      const status: Status = failure(f.status, reason, f.message ?? `injected fault: ${reason}`, f.retryAfterSeconds ? { retryAfterSeconds: f.retryAfterSeconds } : undefined);
      throw new ApiError(status, f.retryAfterSeconds ? { "Retry-After": String(f.retryAfterSeconds) } : {});
    }
    this.faults = this.faults.filter((f) => f.left > 0);
  }

  private discovery(body: unknown): Route {
    return { verb: "discovery", handler: () => ({ status: 200, body }) };
  }

  private route(
    method: string,
    url: URL,
    raw: string | undefined,
    contentType: string | undefined,
    ctx: CallContext,
    res: ServerResponse,
  ): Route | undefined {
    const parts = url.pathname.split("/").filter((p) => p.length > 0).map(decodeURIComponent);
    const api = this.api;
    if (parts.length === 0) {
      return this.discovery({ paths: ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/version"] });
    }
    if (parts.length === 1 && ["healthz", "livez", "readyz"].includes(parts[0]!)) {
      return { verb: "other", handler: () => ({ status: 200, body: "ok" }) };
    }
    if (parts[0] === "version" && parts.length === 1) {
      const v = this.opts.version;
      return this.discovery({
        major: v.major,
        minor: v.minor,
        gitVersion: `v${v.major}.${v.minor}.0-fake`,
        gitCommit: "0000000000000000000000000000000000000000",
        gitTreeState: "clean",
        buildDate: "2025-01-01T00:00:00Z",
        goVersion: "go1.24.0",
        compiler: "gc",
        platform: "linux/amd64",
      });
    }
    if (parts[0] === "openapi" && parts[1] === "v3") {
      if (parts.length === 2) return this.discovery(openApiV3Root(api.registry));
      const doc = parts[2] === "api" ? openApiV3Doc(api.registry, "", parts[3] ?? "") : openApiV3Doc(api.registry, parts[3] ?? "", parts[4] ?? "");
      if (!doc) throw notFoundResource();
      return this.discovery(doc);
    }
    let group: string;
    let version: string;
    let rest: string[];
    if (parts[0] === "api") {
      if (parts.length === 1) {
        return this.discovery({
          kind: "APIVersions",
          versions: ["v1"],
          serverAddressByClientCIDRs: [{ clientCIDR: "0.0.0.0/0", serverAddress: this.url.replace(/^http:\/\//, "") }],
        });
      }
      if (parts[1] !== "v1") return undefined;
      group = "";
      version = "v1";
      rest = parts.slice(2);
    } else if (parts[0] === "apis") {
      if (parts.length === 1) return this.discovery(apiGroupList(api.registry));
      const g = apiGroup(api.registry, parts[1]!);
      if (parts.length === 2) {
        if (!g) throw notFoundResource();
        return this.discovery(g);
      }
      group = parts[1]!;
      version = parts[2]!;
      rest = parts.slice(3);
    } else {
      return undefined;
    }
    if (rest.length === 0) {
      if (!api.registry.all().some((t) => t.group === group && t.version === version)) throw notFoundResource();
      return this.discovery(apiResourceList(api.registry, group, version));
    }
    let legacyWatch = false;
    if (rest[0] === "watch") {
      legacyWatch = true;
      rest = rest.slice(1);
    }
    let namespace: string | undefined;
    let resource: string;
    let name: string | undefined;
    let sub: string | undefined;
    if (rest[0] === "namespaces" && rest.length >= 3 && rest[2] !== "status" && rest[2] !== "finalize") {
      if (rest.length > 5) throw notFoundResource();
      namespace = rest[1];
      resource = rest[2]!;
      name = rest[3];
      sub = rest[4];
    } else {
      if (rest.length > 3) throw notFoundResource();
      resource = rest[0]!;
      name = rest[1];
      sub = rest[2];
    }
    const rt = api.registry.find(group, version, resource);
    if (!rt) throw notFoundResource();
    if (!rt.namespaced && namespace !== undefined) throw notFoundResource();
    if (rt.namespaced && namespace === undefined && name !== undefined) throw notFoundResource();
    if (sub !== undefined) {
      const ok = (sub === "status" && rt.status) || (sub === "scale" && rt.scale) || (sub === "finalize" && rt.storageKey === "/namespaces");
      if (!ok) throw notFoundResource();
    }
    const base = { rt, ...(namespace !== undefined ? { namespace } : {}), ...(name !== undefined ? { name } : {}), ...(sub !== undefined ? { subresource: sub } : {}) };
    const isWatch = legacyWatch || ctx.query.get("watch") === "true" || ctx.query.get("watch") === "1";

    switch (method) {
      case "GET":
        if (isWatch) {
          return { ...base, verb: "watch", handler: () => this.startWatch(rt, namespace, name, ctx, res) };
        }
        if (name === undefined) return { ...base, verb: "list", handler: () => api.list(rt, namespace, ctx) };
        if (sub === "scale") return { ...base, verb: "get", handler: () => api.getScale(rt, namespace, name) };
        return { ...base, verb: "get", handler: () => api.get(rt, namespace, name) };
      case "POST":
        if (name !== undefined) throw methodNotAllowed();
        return { ...base, verb: "create", handler: () => api.create(rt, namespace, raw, contentType, ctx) };
      case "PUT":
        if (name === undefined) throw methodNotAllowed();
        if (sub === "finalize") return { ...base, verb: "update", handler: () => this.finalizeNamespace(name, raw) };
        return { ...base, verb: "update", handler: () => api.update(rt, namespace, name, sub, raw, contentType, ctx) };
      case "PATCH":
        if (name === undefined || sub === "finalize") throw methodNotAllowed();
        return { ...base, verb: "patch", handler: () => api.patch(rt, namespace, name, sub, raw, contentType, ctx) };
      case "DELETE":
        if (sub !== undefined) throw methodNotAllowed();
        if (name === undefined) return { ...base, verb: "deletecollection", handler: () => api.deleteCollection(rt, namespace, raw, ctx) };
        return { ...base, verb: "delete", handler: () => api.delete(rt, namespace, name, raw, ctx) };
      default:
        throw methodNotAllowed();
    }
  }

  private finalizeNamespace(name: string, raw: string | undefined): ApiResult {
    const rt = this.api.registry.find("", "v1", "namespaces")!;
    const stored = this.api.store.get("/namespaces", undefined, name);
    if (!stored) return this.api.get(rt, undefined, name);
    const body = JSON.parse(raw ?? "{}") as Obj;
    const obj = structuredClone(stored.obj);
    obj.spec = { ...(obj.spec ?? {}), finalizers: body.spec?.finalizers ?? [] };
    const out = this.api.store.write("/namespaces", obj, stored.managed);
    return { status: 200, body: this.api.present(rt, out) };
  }

  private startWatch(rt: ResourceType, namespace: string | undefined, name: string | undefined, ctx: CallContext, res: ServerResponse): "stream" {
    this.api.checkStorageReady(rt);
    const labels = parseLabelSelector(ctx.query.get("labelSelector"));
    const fields = parseFieldSelector(ctx.query.get("fieldSelector"), ["metadata.name", "metadata.namespace", ...rt.fieldLabels]);
    if (name !== undefined) fields.push({ field: "metadata.name", op: "=", value: name });
    const rv = ctx.query.get("resourceVersion");
    if (rv !== null && rv !== "" && !/^\d+$/.test(rv)) {
      throw new ApiError(failure(400, "BadRequest", `invalid resource version: ${rv}`));
    }
    if (rv !== null && rv !== "" && Number(rv) > this.api.store.currentRv()) {
      // the watch cache waits up to 3 s for a resourceVersion it has not seen, then gives up
      throw new ApiError(
        failure(504, "Timeout", `Too large resource version: ${rv}, current: ${this.api.store.currentRv()}`, {
          causes: [{ reason: "ResourceVersionTooLarge", message: "Too large resource version" }],
          retryAfterSeconds: 1,
        }),
        { "Retry-After": "1" },
      );
    }
    const timeoutSeconds = Number(ctx.query.get("timeoutSeconds") ?? "0");
    const max = this.opts.maxWatchSeconds;
    const timeoutMs = timeoutSeconds > 0 ? timeoutSeconds * 1000 : (max / 2 + Math.random() * (max / 2)) * 1000;
    const w = new WatchStream(res, this.api, rt, namespace, labels, fields, (x) => this.watches.delete(x));
    this.watches.add(w);
    res.on("close", () => w.close());
    w.start({
      resourceVersion: rv,
      sendInitialEvents: ctx.query.get("sendInitialEvents") === "true",
      bookmarks: ctx.query.get("allowWatchBookmarks") === "true",
      bookmarkIntervalMs: this.opts.bookmarkIntervalMs,
      timeoutMs,
    });
    return "stream";
  }
}

function defaultReason(status: number): string {
  switch (status) {
    case 400:
      return "BadRequest";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "NotFound";
    case 409:
      return "Conflict";
    case 410:
      return "Expired";
    case 422:
      return "Invalid";
    case 429:
      return "TooManyRequests";
    case 503:
      return "ServiceUnavailable";
    case 504:
      return "Timeout";
    default:
      return "InternalError";
  }
}

function kubeConfigFor(url: string): { kc: KubeConfig; yaml: string } {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: "fake-kube", server: url, skipTLSVerify: true }],
    users: [{ name: "fake-kube", token: "fake-kube-token" }],
    contexts: [{ name: "fake-kube", cluster: "fake-kube", user: "fake-kube", namespace: "default" }],
    currentContext: "fake-kube",
  });
  const yaml = [
    "apiVersion: v1",
    "kind: Config",
    "clusters:",
    "- name: fake-kube",
    "  cluster:",
    `    server: ${url}`,
    "    insecure-skip-tls-verify: true",
    "users:",
    "- name: fake-kube",
    "  user:",
    "    token: fake-kube-token",
    "contexts:",
    "- name: fake-kube",
    "  context:",
    "    cluster: fake-kube",
    "    user: fake-kube",
    "    namespace: default",
    "current-context: fake-kube",
    "",
  ].join("\n");
  return { kc, yaml };
}

/** Starts a fake kube-apiserver on 127.0.0.1 (random port unless `port` is given). */
export async function startFakeKube(options: FakeKubeOptions = {}): Promise<FakeKube> {
  const srv = new FakeKubeServer(options);
  await srv.listen(options.port ?? 0);
  const { kc, yaml } = kubeConfigFor(srv.url);
  const api = srv.api;
  const rtOf = (resource: string): ResourceType => {
    const rt = api.registry.lookup(resource);
    if (!rt) throw new Error(`fake-kube: unknown resource ${JSON.stringify(resource)}`);
    return rt;
  };
  const rtOfObject = (obj: Obj): ResourceType => {
    const av = String(obj.apiVersion ?? "");
    const [g, v] = av.includes("/") ? (av.split("/") as [string, string]) : ["", av];
    const rt = api.registry.all().find((t) => t.group === g && t.version === v && t.kind === obj.kind);
    if (!rt) throw new Error(`fake-kube: no resource serves ${av} ${String(obj.kind)}`);
    return rt;
  };
  let closed = false;
  const handle: FakeKube = {
    url: srv.url,
    kubeConfig: kc,
    kubeconfigYaml: yaml,
    async close() {
      if (closed) return;
      closed = true;
      await srv.close();
    },
    get(resource, namespace, name) {
      const rt = rtOf(resource);
      const s = api.store.get(rt.storageKey, rt.namespaced ? namespace : undefined, name);
      return s ? api.present(rt, s.obj) : undefined;
    },
    list(resource, namespace) {
      const rt = rtOf(resource);
      return api.store.list(rt.storageKey, rt.namespaced ? namespace : undefined).map((s) => api.present(rt, s.obj));
    },
    create(obj) {
      return api.createAs(rtOfObject(obj), obj, "fake-kube");
    },
    update(obj, opts = {}) {
      return api.updateAs(rtOfObject(obj), obj, opts.manager ?? "fake-kube", opts.subresource);
    },
    put(obj) {
      return api.putRaw(rtOfObject(obj), obj);
    },
    delete(resource, namespace, name, propagationPolicy) {
      const rt = rtOf(resource);
      const s = api.store.get(rt.storageKey, rt.namespaced ? namespace : undefined, name);
      if (!s) return false;
      api.deleteObject(rt, s, propagationPolicy);
      return true;
    },
    setPodReady(namespace, name, ready = true, opts = {}) {
      const rt = api.registry.find("", "v1", "pods")!;
      const s = api.store.get("/pods", namespace, name);
      if (!s) throw new Error(`fake-kube: pod ${namespace}/${name} not found`);
      const pod = api.present(rt, s.obj);
      const now = new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
      const st = ready ? "True" : "False";
      const prevConds = (pod.status?.conditions ?? []) as Obj[];
      const cond = (type: string, status: string): Obj => {
        const prev = prevConds.find((c) => c.type === type);
        return { type, status, lastProbeTime: null, lastTransitionTime: prev && prev.status === status ? prev.lastTransitionTime : now };
      };
      const containers = ((pod.spec?.containers ?? []) as Obj[]).map((c) => ({
        name: c.name,
        state: { running: { startedAt: pod.status?.startTime ?? now } },
        lastState: {},
        ready,
        restartCount: 0,
        image: c.image,
        imageID: "",
        started: true,
      }));
      const podIP = opts.podIP ?? pod.status?.podIP;
      pod.status = {
        ...(pod.status ?? {}),
        phase: "Running",
        conditions: [cond("PodReadyToStartContainers", "True"), cond("Initialized", "True"), cond("Ready", st), cond("ContainersReady", st), cond("PodScheduled", "True")],
        hostIP: pod.status?.hostIP ?? "10.0.0.1",
        hostIPs: pod.status?.hostIPs ?? [{ ip: "10.0.0.1" }],
        ...(podIP ? { podIP, podIPs: [{ ip: podIP }] } : {}),
        startTime: pod.status?.startTime ?? now,
        containerStatuses: containers,
      };
      return api.updateAs(rt, pod, "kubelet", "status");
    },
    resourceVersion() {
      return String(api.store.currentRv());
    },
    compactHistory() {
      api.store.compact();
    },
    dropWatches(opts) {
      return srv.dropWatches(opts);
    },
    get openWatches() {
      return srv.openWatches;
    },
    get requestCount() {
      return srv.count;
    },
    get requestLog() {
      return srv.log;
    },
    requestCounts(resource) {
      const out: Record<string, number> = {};
      for (const e of srv.log) {
        if (resource !== undefined && e.resource !== resource) continue;
        out[e.verb] = (out[e.verb] ?? 0) + 1;
      }
      return out;
    },
    resetRequestLog() {
      srv.log.length = 0;
      srv.count = 0;
    },
    injectFault(f) {
      srv.injectFault(f);
    },
    clearFaults() {
      srv.clearFaults();
    },
    flushControllers() {
      srv.controllers.flush();
    },
    api,
  };
  return handle;
}
