import { readFileSync } from "node:fs";
import { ApiException, HttpMethod, IsomorphicFetchHttpLibrary, KubeConfig, RequestContext, Watch } from "@kubernetes/client-node";
import { ConfigError } from "../errors.js";
import type { KubeObject, KubeStatus } from "./types.js";

/**
 * A small dynamic Kubernetes client: plain JSON in, plain JSON out, on @kubernetes/client-node's
 * transport and authentication (KubeConfig, TLS, tokens, exec plugins) and its `Watch`.
 *
 * Why not the generated `AppsV1Api`/`CustomObjectsApi` classes: they turn answers into model
 * instances (Dates for timestamps, renamed keys) while watch events arrive as plain JSON, and the
 * caches, the desired-state builders and server-side apply all want one shape — the wire's. Every
 * request goes through `request()`, which throws client-node's `ApiException` (`code`, the
 * response text in `body`, `headers`) with a message that says what failed.
 */

/** One API resource: enough to build its paths. */
export interface ResourceType {
  /** "" for the core group. */
  group: string;
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
}

export const RESOURCES = {
  namespaces: { group: "", version: "v1", plural: "namespaces", kind: "Namespace", namespaced: false },
  pods: { group: "", version: "v1", plural: "pods", kind: "Pod", namespaced: true },
  services: { group: "", version: "v1", plural: "services", kind: "Service", namespaced: true },
  persistentVolumeClaims: { group: "", version: "v1", plural: "persistentvolumeclaims", kind: "PersistentVolumeClaim", namespaced: true },
  events: { group: "", version: "v1", plural: "events", kind: "Event", namespaced: true },
  configMaps: { group: "", version: "v1", plural: "configmaps", kind: "ConfigMap", namespaced: true },
  deployments: { group: "apps", version: "v1", plural: "deployments", kind: "Deployment", namespaced: true },
  leases: { group: "coordination.k8s.io", version: "v1", plural: "leases", kind: "Lease", namespaced: true },
  customResourceDefinitions: {
    group: "apiextensions.k8s.io",
    version: "v1",
    plural: "customresourcedefinitions",
    kind: "CustomResourceDefinition",
    namespaced: false,
  },
} as const satisfies Record<string, ResourceType>;

export function apiVersionOf(rt: ResourceType): string {
  return rt.group ? `${rt.group}/${rt.version}` : rt.version;
}

/** `pods`, `deployments.apps`: the name kube-apiserver uses in its messages and RBAC uses in rules. */
export function groupResource(rt: ResourceType): string {
  return rt.group ? `${rt.plural}.${rt.group}` : rt.plural;
}

/** The REST path of a collection (no name) or an object, optionally of a subresource. */
export function resourcePath(rt: ResourceType, namespace?: string, name?: string, subresource?: string): string {
  let path = rt.group ? `/apis/${rt.group}/${rt.version}` : `/api/${rt.version}`;
  if (rt.namespaced && namespace) path += `/namespaces/${encodeURIComponent(namespace)}`;
  path += `/${rt.plural}`;
  if (name !== undefined) path += `/${encodeURIComponent(name)}`;
  if (subresource) path += `/${subresource}`;
  return path;
}

export type Query = Record<string, string | number | boolean | undefined>;

export interface RequestOptions {
  query?: Query;
  body?: unknown;
  contentType?: string;
  signal?: AbortSignal;
}

/** Called after every answered request: for metrics and the benchmark's request counts. */
export type RequestObserver = (info: { method: string; path: string; code: number; seconds: number }) => void;

export const CONTENT_TYPES = {
  json: "application/json",
  mergePatch: "application/merge-patch+json",
  apply: "application/apply-patch+yaml",
} as const;

export interface ListResult<T> {
  items: T[];
  resourceVersion: string;
}

export interface WatchEvent<T> {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: T;
}

export interface WatchHandle {
  abort(): void;
}

function queryString(query: Query | undefined): string {
  if (!query) return "";
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) if (value !== undefined) params.set(key, String(value));
  const text = params.toString();
  return text ? `?${text}` : "";
}

/** The Status body of a failed request, when it is one. */
export function statusOf(error: unknown): KubeStatus | undefined {
  if (!(error instanceof ApiException)) return undefined;
  const body: unknown = error.body;
  if (typeof body === "object" && body !== null) return body as KubeStatus;
  if (typeof body !== "string") return undefined;
  try {
    const parsed = JSON.parse(body) as KubeStatus;
    return parsed && typeof parsed === "object" ? parsed : undefined;
  } catch {
    return undefined;
  }
}

export function errorCode(error: unknown): number | undefined {
  if (error instanceof ApiException) return error.code;
  const code = (error as { statusCode?: unknown } | undefined)?.statusCode;
  return typeof code === "number" ? code : undefined;
}

export const isNotFound = (error: unknown) => errorCode(error) === 404;
export const isConflict = (error: unknown) => errorCode(error) === 409;
export const isGone = (error: unknown) => errorCode(error) === 410;

/** Seconds from `Retry-After` (429, 503), if the server sent one. */
export function retryAfterSeconds(error: unknown): number | undefined {
  if (!(error instanceof ApiException)) return undefined;
  const headers = error.headers ?? {};
  const value = headers["retry-after"] ?? headers["Retry-After"];
  const seconds = value === undefined ? NaN : Number(value);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : undefined;
}

/**
 * True for failures a retry can fix: throttling, server errors, timeouts and connection errors.
 * 4xx answers other than 408/409/429 mean the request itself is wrong (invalid object, forbidden).
 */
export function isRetriable(error: unknown): boolean {
  const code = errorCode(error);
  if (code === undefined) return true;
  return code === 408 || code === 409 || code === 429 || code >= 500;
}

/** One line for logs and conditions: the API server's own message when there is one. */
export function describeKubeError(error: unknown): string {
  const status = statusOf(error);
  if (status?.message) return status.message;
  return (error as Error)?.message ?? String(error);
}

/** client-node's ApiException (`code`, response text in `body`, `headers`) with a one-line message. */
export class KubeApiError extends ApiException<string> {
  constructor(code: number, message: string, body: string, headers: Record<string, string>) {
    super(code, message, body, headers);
    this.name = "KubeApiError";
    this.message = message;
  }
}

export class KubeClient {
  private readonly http = new IsomorphicFetchHttpLibrary();
  private readonly server: string;

  constructor(
    readonly kubeConfig: KubeConfig,
    private readonly observe?: RequestObserver,
  ) {
    const cluster = kubeConfig.getCurrentCluster();
    if (!cluster) throw new Error("the kubeconfig has no current cluster");
    this.server = cluster.server.replace(/\/+$/, "");
  }

  /** The namespace of the kubeconfig's current context ("default" when it names none). */
  get contextNamespace(): string {
    const context = this.kubeConfig.getContextObject(this.kubeConfig.getCurrentContext());
    return context?.namespace || "default";
  }

  async request<T>(method: HttpMethod, path: string, options: RequestOptions = {}): Promise<T> {
    const started = performance.now();
    const context = new RequestContext(`${this.server}${path}${queryString(options.query)}`, method);
    context.setHeaderParam("Accept", "application/json");
    if (options.body !== undefined) {
      context.setHeaderParam("Content-Type", options.contentType ?? CONTENT_TYPES.json);
      context.setBody(JSON.stringify(options.body));
    }
    if (options.signal) context.setSignal(options.signal);
    await this.kubeConfig.applySecurityAuthentication(context);
    let code = 0;
    try {
      const response = await this.http.send(context).toPromise();
      code = response.httpStatusCode;
      const text = await response.body.text();
      if (code >= 200 && code < 300) return (text ? JSON.parse(text) : undefined) as T;
      let message = text.slice(0, 200);
      try {
        message = (JSON.parse(text) as KubeStatus).message ?? message;
      } catch {
        // not a Status: keep the text
      }
      throw new KubeApiError(code, `${method} ${path}: ${code} ${message}`, text, response.headers);
    } finally {
      this.observe?.({ method, path, code, seconds: (performance.now() - started) / 1000 });
    }
  }

  /** The object, or undefined when it does not exist. */
  async get<T extends KubeObject>(rt: ResourceType, namespace: string | undefined, name: string, subresource?: string): Promise<T | undefined> {
    try {
      return await this.request<T>(HttpMethod.GET, resourcePath(rt, namespace, name, subresource));
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  /** Every object of a collection (following `continue` tokens), with the list's resourceVersion. */
  async list<T extends KubeObject>(
    rt: ResourceType,
    namespace: string | undefined,
    options: { labelSelector?: string; fieldSelector?: string; pageSize?: number; signal?: AbortSignal } = {},
  ): Promise<ListResult<T>> {
    const items: T[] = [];
    let continueToken: string | undefined;
    let resourceVersion = "";
    do {
      const page = await this.request<{ items: T[]; metadata: { resourceVersion?: string; continue?: string } }>(
        HttpMethod.GET,
        resourcePath(rt, namespace),
        {
          query: {
            labelSelector: options.labelSelector,
            fieldSelector: options.fieldSelector,
            limit: options.pageSize ?? 500,
            continue: continueToken,
          },
          signal: options.signal,
        },
      );
      const apiVersion = apiVersionOf(rt);
      // Items of built-in lists come without kind/apiVersion on the wire: add them back.
      for (const item of page.items ?? []) items.push({ ...item, apiVersion: item.apiVersion ?? apiVersion, kind: item.kind ?? rt.kind });
      resourceVersion = page.metadata?.resourceVersion ?? resourceVersion;
      continueToken = page.metadata?.continue || undefined;
    } while (continueToken);
    return { items, resourceVersion };
  }

  async create<T extends KubeObject>(rt: ResourceType, namespace: string | undefined, object: unknown, fieldManager?: string): Promise<T> {
    return this.request<T>(HttpMethod.POST, resourcePath(rt, namespace), { body: object, query: { fieldManager } });
  }

  async replace<T extends KubeObject>(rt: ResourceType, object: T, options: { subresource?: string; fieldManager?: string } = {}): Promise<T> {
    const path = resourcePath(rt, object.metadata.namespace, object.metadata.name, options.subresource);
    return this.request<T>(HttpMethod.PUT, path, { body: object, query: { fieldManager: options.fieldManager } });
  }

  /**
   * Server-side apply: the object is this field manager's whole intent for the fields it sets;
   * the server merges it, creates the object when absent, and removes fields the manager set
   * before and no longer does. `force` takes over fields another manager set (a controller's
   * children belong to it).
   */
  async apply<T extends KubeObject>(
    rt: ResourceType,
    object: KubeObject,
    options: { fieldManager: string; force?: boolean; subresource?: string },
  ): Promise<T> {
    const path = resourcePath(rt, object.metadata.namespace, object.metadata.name, options.subresource);
    return this.request<T>(HttpMethod.PATCH, path, {
      body: object,
      contentType: CONTENT_TYPES.apply,
      query: { fieldManager: options.fieldManager, force: options.force ?? true },
    });
  }

  async mergePatch<T extends KubeObject>(
    rt: ResourceType,
    namespace: string | undefined,
    name: string,
    patch: unknown,
    options: { subresource?: string; fieldManager?: string } = {},
  ): Promise<T> {
    return this.request<T>(HttpMethod.PATCH, resourcePath(rt, namespace, name, options.subresource), {
      body: patch,
      contentType: CONTENT_TYPES.mergePatch,
      query: { fieldManager: options.fieldManager },
    });
  }

  /** Deletes; false when it was already gone. */
  async delete(rt: ResourceType, namespace: string | undefined, name: string, propagationPolicy?: "Background" | "Foreground" | "Orphan"): Promise<boolean> {
    try {
      await this.request(HttpMethod.DELETE, resourcePath(rt, namespace, name), { query: { propagationPolicy } });
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  /**
   * Opens a watch stream (client-node's Watch). `onDone(null)` when the server ends it cleanly,
   * `onDone(error)` when it fails (`statusCode` set for a non-200 answer). Aborting calls neither.
   */
  async watch<T>(
    rt: ResourceType,
    namespace: string | undefined,
    query: Query,
    onEvent: (event: WatchEvent<T>) => void,
    onDone: (error: (Error & { statusCode?: number }) | null) => void,
  ): Promise<WatchHandle> {
    let aborted = false;
    const started = performance.now();
    const path = resourcePath(rt, namespace);
    const controller = await new Watch(this.kubeConfig).watch(
      path,
      Object.fromEntries(Object.entries(query).filter(([, value]) => value !== undefined)),
      (type: string, object: T) => {
        if (!aborted) onEvent({ type: type as WatchEvent<T>["type"], object });
      },
      (error: (Error & { statusCode?: number }) | null) => {
        this.observe?.({ method: "WATCH", path, code: error ? (error.statusCode ?? 0) : 200, seconds: (performance.now() - started) / 1000 });
        if (!aborted) onDone(error ?? null);
      },
    );
    return {
      abort: () => {
        aborted = true;
        controller.abort();
      },
    };
  }
}

/**
 * The client configuration: the given kubeconfig file, else KUBECONFIG / ~/.kube/config, else the
 * pod's service account (client-node's loadFromDefault order).
 */
export function loadKubeConfig(file?: string): KubeConfig {
  const kubeConfig = new KubeConfig();
  try {
    if (file) kubeConfig.loadFromFile(file);
    else kubeConfig.loadFromDefault();
  } catch (error) {
    throw new ConfigError(`cannot load the kubeconfig${file ? ` ${file}` : ""}: ${(error as Error).message}`);
  }
  if (!kubeConfig.getCurrentCluster()) throw new ConfigError(`the kubeconfig${file ? ` ${file}` : ""} has no current cluster`);
  return kubeConfig;
}

const SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/** The namespace this process runs in: POD_NAMESPACE (downward API), else the service account's; undefined outside a pod. */
export function podNamespace(): string | undefined {
  if (process.env.POD_NAMESPACE) return process.env.POD_NAMESPACE;
  try {
    return readFileSync(SERVICE_ACCOUNT_NAMESPACE, "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}
