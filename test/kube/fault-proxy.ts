// A fault-injecting reverse proxy in front of the test control plane's kube-apiserver (http-proxy
// does the forwarding). Clients get a kubeconfig that points at it; it forwards every request to
// the real server as the admin user (the control plane's admin client certificate) and can, for
// requests that match a verb/resource/namespace/name, answer with a Kubernetes Status of a given
// code instead of forwarding (N times; for a watch, also as the ERROR event in a 200 stream that
// kube-apiserver sends when a resourceVersion's history is gone), and it can cut open watch streams, abruptly (the TCP connection reset) or cleanly (the chunked
// response ended). It keeps a log of the requests it saw, so a test can count what a client sent.
// Everything not matched is the real server's answer.

import { readFileSync } from "node:fs";
import { Agent, createServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import httpProxy from "http-proxy";
import { KubeConfig } from "@kubernetes/client-node";

export type Verb = "get" | "list" | "watch" | "create" | "update" | "patch" | "delete" | "deletecollection";

/** One request as RBAC and the audit log name it: `deployments.apps`, `pods`, `leases.coordination.k8s.io`. */
export interface RequestInfo {
  verb: Verb;
  /** `plural` for the core group, `plural.group` otherwise; undefined for non-resource paths (/version). */
  resource?: string;
  namespace?: string;
  name?: string;
  subresource?: string;
  path: string;
  query: URLSearchParams;
}

interface Match {
  verb?: Verb;
  resource?: string;
  namespace?: string;
  name?: string;
  /** A subresource to match; null matches only requests on the object itself. Unset matches both. */
  subresource?: string | null;
  /** How many matching requests it affects (default 1). */
  times?: number;
}

/** Answer matching requests with this Status instead of forwarding them. */
export interface StatusFault extends Match {
  status: number;
  reason?: string;
  message?: string;
  /** Sent as Retry-After. */
  retryAfterSeconds?: number;
  /**
   * For a watch: answer 200 and send the Status as one ERROR event, then end the stream. This is
   * how kube-apiserver says a watch's resourceVersion is too old (410 Expired) once etcd has
   * compacted it, which a test cannot make it do on demand (it compacts every 5 minutes).
   */
  asWatchEvent?: boolean;
}

export type Fault = StatusFault;

export interface FaultProxy {
  /** https://127.0.0.1:<port> */
  url: string;
  /** The given kubeconfig's user and CA, with the server replaced by this proxy. */
  kubeConfig: KubeConfig;
  injectFault(fault: Fault): void;
  clearFaults(): void;
  /** Ends the open watch streams (of one resource, if given); returns how many. */
  dropWatches(opts?: { abrupt?: boolean; resource?: string }): number;
  /** Watch streams open through the proxy now (of one resource, if given). */
  openWatches(resource?: string): number;
  /** The requests seen since the start or the last reset (watches when they start). */
  readonly requestLog: readonly RequestInfo[];
  resetRequestLog(): void;
  close(): Promise<void>;
}

const REASONS: Record<number, string> = {
  400: "BadRequest",
  401: "Unauthorized",
  403: "Forbidden",
  404: "NotFound",
  409: "Conflict",
  410: "Expired",
  422: "Invalid",
  429: "TooManyRequests",
  500: "InternalError",
  503: "ServiceUnavailable",
  504: "Timeout",
};

/** Names a request the way kube-apiserver's RequestInfo does (enough of it for tests). */
export function requestInfo(method: string, url: string): RequestInfo {
  const parsed = new URL(url, "https://proxy.invalid");
  const query = parsed.searchParams;
  const segments = parsed.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  let group = "";
  let rest: string[] | undefined;
  if (segments[0] === "api" && segments.length >= 2) rest = segments.slice(2);
  else if (segments[0] === "apis" && segments.length >= 3) {
    group = segments[1]!;
    rest = segments.slice(3);
  }
  let namespace: string | undefined;
  if (rest && rest[0] === "namespaces" && rest.length >= 3 && !(rest.length === 3 && ["status", "finalize"].includes(rest[2]!))) {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  const [plural, name, subresource] = rest ?? [];
  const watch = query.get("watch") === "true" || query.get("watch") === "1";
  const verb: Verb =
    method === "GET" ? (watch ? "watch" : name ? "get" : "list")
    : method === "POST" ? "create"
    : method === "PUT" ? "update"
    : method === "PATCH" ? "patch"
    : method === "DELETE" ? (name ? "delete" : "deletecollection")
    : "get";
  return {
    verb,
    resource: plural ? (group ? `${plural}.${group}` : plural) : undefined,
    namespace: namespace ?? (plural === "namespaces" ? name : undefined),
    name,
    subresource,
    path: parsed.pathname,
    query,
  };
}

function matches(m: Match, r: RequestInfo): boolean {
  return (
    (m.verb === undefined || m.verb === r.verb) &&
    (m.resource === undefined || m.resource === r.resource) &&
    (m.namespace === undefined || m.namespace === r.namespace) &&
    (m.name === undefined || m.name === r.name) &&
    (m.subresource === undefined || (m.subresource ?? undefined) === r.subresource)
  );
}

interface OpenWatch {
  resource?: string;
  req: IncomingMessage;
  res: ServerResponse;
  upstream: IncomingMessage;
}

/**
 * Starts a proxy for the control plane in `dir` (its apiserver.crt/key serve, its admin.crt/key
 * and ca.crt reach `server`). `kubeConfig` supplies the user and CA of the returned kubeconfig.
 */
export async function startFaultProxy(plane: { dir: string; server: string; kubeConfig: KubeConfig }): Promise<FaultProxy> {
  const file = (name: string) => readFileSync(path.join(plane.dir, name), "utf8");
  const [ca, cert, key] = [file("ca.crt"), file("admin.crt"), file("admin.key")];
  const target = new URL(plane.server);
  const agent = new Agent({ keepAlive: true, ca, cert, key });
  const proxy = httpProxy.createProxyServer({
    target: { protocol: "https:", host: target.hostname, port: Number(target.port), ca, cert, key },
    agent,
    secure: true,
  });
  const faults: (Fault & { left: number })[] = [];
  const watches = new Set<OpenWatch>();
  const log: RequestInfo[] = [];

  proxy.on("proxyRes", (upstream, req, res) => {
    const info = (req as IncomingMessage & { info?: RequestInfo }).info;
    if (info?.verb !== "watch") return;
    if (res.destroyed || res.writableEnded) return upstream.destroy(); // the client left first
    const open: OpenWatch = { resource: info.resource, req, res, upstream };
    watches.add(open);
    res.once("close", () => watches.delete(open));
    upstream.once("close", () => watches.delete(open));
  });
  proxy.on("error", (error, _req, res) => {
    // The upstream connection failed or was cut: the client sees a 502, or a reset mid-stream.
    if (!("writeHead" in res)) return void res.destroy();
    if (res.headersSent) return void res.destroy();
    res.writeHead(502, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message: `fault proxy: ${error.message}`, reason: "InternalError", code: 502 }));
  });

  const server: Server = createServer({ cert: file("apiserver.crt"), key: file("apiserver.key") }, (req, res) => {
    const info = requestInfo(req.method ?? "GET", req.url ?? "/");
    (req as IncomingMessage & { info?: RequestInfo }).info = info;
    log.push(info);
    const index = faults.findIndex((f) => f.left > 0 && matches(f, info));
    const fault = index >= 0 ? faults[index]! : undefined;
    if (fault) {
      fault.left--;
      if (fault.left === 0) faults.splice(index, 1);
    }
    if (!fault) return void proxy.web(req, res);
    const headers: Record<string, string> = { "Content-Type": "application/json" };
    if (fault.retryAfterSeconds !== undefined) headers["Retry-After"] = String(fault.retryAfterSeconds);
    const reason = fault.reason ?? REASONS[fault.status] ?? "Unknown";
    const message = fault.message ?? `injected by the fault proxy: ${fault.status} ${reason}`;
    const status = { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code: fault.status };
    req.resume();
    if (fault.asWatchEvent && info.verb === "watch") {
      res.writeHead(200, headers);
      res.end(`${JSON.stringify({ type: "ERROR", object: status })}\n`);
    } else {
      res.writeHead(fault.status, headers);
      res.end(JSON.stringify(status));
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const cluster = plane.kubeConfig.getCurrentCluster()!;
  const user = plane.kubeConfig.getCurrentUser()!;
  const context = plane.kubeConfig.getContextObject(plane.kubeConfig.getCurrentContext());
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromOptions({
    clusters: [{ ...cluster, name: "fault-proxy", server: url }],
    users: [user],
    contexts: [{ name: "fault-proxy", cluster: "fault-proxy", user: user.name, namespace: context?.namespace }],
    currentContext: "fault-proxy",
  });

  const selected = (resource?: string) => [...watches].filter((w) => resource === undefined || w.resource === resource);
  return {
    url,
    kubeConfig,
    injectFault: (fault) => void faults.push({ ...fault, left: fault.times ?? 1 }),
    clearFaults: () => void faults.splice(0),
    dropWatches({ abrupt = false, resource } = {}) {
      const cut = selected(resource);
      for (const w of cut) {
        watches.delete(w);
        w.upstream.unpipe(w.res);
        w.upstream.destroy();
        // Abrupt: the client's connection is reset mid-stream. Clean: the chunked response ends.
        if (abrupt) w.req.socket.destroy();
        else w.res.end();
      }
      return cut.length;
    },
    openWatches: (resource) => selected(resource).length,
    get requestLog() {
      return log;
    },
    resetRequestLog: () => void log.splice(0),
    async close() {
      for (const w of watches) w.req.socket.destroy();
      watches.clear();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      proxy.close();
      agent.destroy();
    },
  };
}
