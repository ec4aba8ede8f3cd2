// A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager
// started from the binaries in one folder (CORRAL_KUBE_ASSETS), on free loopback ports, with
// certificates made for this run, and stopped afterwards. It plays the role of envtest's
// KUBEBUILDER_ASSETS: the real API server, its validation, admission and authorizer, and the real
// Deployment, ReplicaSet, garbage-collection and EndpointSlice controllers; there is no kubelet
// (test/kube/pod-runner.ts stands in for one).
//
// The binaries: `.ci/run` unpacks `../shared/k8s`; elsewhere, the kube-apiserver, etcd and
// kube-controller-manager of Kubernetes v1.34 from the Kubernetes release (or envtest's
// `setup-envtest use 1.34.x`, plus kube-controller-manager from the same release).

import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { get as httpsGet } from "node:https";
import { tmpdir } from "node:os";
import path from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { freePort } from "../helpers/net.js";
import { waitFor } from "../helpers/wait.js";

export const ASSETS_ENV = "CORRAL_KUBE_ASSETS";
const BINARIES = ["etcd", "kube-apiserver", "kube-controller-manager"] as const;

export interface ControlPlane {
  /** Folder holding the certificates, kubeconfig, data and logs of this control plane. */
  dir: string;
  /** https://127.0.0.1:<port> */
  server: string;
  /** An admin (system:masters) kubeconfig file. */
  kubeconfigPath: string;
  kubeConfig: KubeConfig;
  /** The API server's audit log (JSON lines, Metadata level): every request, its user and its answer. */
  auditLogPath: string;
  /** PEM of the cluster CA (for kubeconfigs of other identities). */
  caData: string;
  stop(): Promise<void>;
}

/** The assets folder, or why there is none (for the skip message). */
export function findKubeAssets(): { dir?: string; reason?: string } {
  const dir = process.env[ASSETS_ENV];
  if (!dir) return { reason: `${ASSETS_ENV} is not set (see test/kube/README.md for the Kubernetes binaries these tests need)` };
  const missing = BINARIES.filter((b) => !existsSync(path.join(dir, b)));
  if (missing.length) return { reason: `${ASSETS_ENV}=${dir} lacks ${missing.join(", ")}` };
  return { dir };
}

export { freePort };

function openssl(dir: string, ...args: string[]): void {
  execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
}

/** CA, serving certificate, admin client certificate, service-account keys: openssl, one folder. */
function makeCertificates(dir: string): void {
  openssl(dir, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=corral-test-ca");
  const sign = (name: string, subject: string, ext: string) => {
    writeFileSync(path.join(dir, `${name}.ext`), ext);
    openssl(dir, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", subject);
    openssl(dir, "x509", "-req", "-in", `${name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", `${name}.crt`, "-days", "2", "-extfile", `${name}.ext`);
  };
  sign(
    "apiserver",
    "/CN=kube-apiserver",
    "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n",
  );
  sign("admin", "/O=system:masters/CN=corral-test-admin", "extendedKeyUsage=clientAuth\n");
  openssl(dir, "genrsa", "-out", "sa.key", "2048");
  openssl(dir, "rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub");
}

function writeKubeconfig(file: string, server: string, caFile: string, user: Record<string, string>): void {
  const b64 = (f: string) => readFileSync(f).toString("base64");
  const userLines = Object.entries(user)
    .map(([k, v]) => `    ${k}: ${v}`)
    .join("\n");
  writeFileSync(
    file,
    `apiVersion: v1
kind: Config
clusters:
- name: corral-test
  cluster:
    server: ${server}
    certificate-authority-data: ${b64(caFile)}
users:
- name: corral-test
  user:
${userLines}
contexts:
- name: corral-test
  context: {cluster: corral-test, user: corral-test, namespace: default}
current-context: corral-test
`,
  );
}

/** A kubeconfig for a bearer token (a ServiceAccount's), against this control plane. */
export function tokenKubeconfig(plane: Pick<ControlPlane, "server" | "dir">, token: string, file: string): string {
  writeKubeconfig(file, plane.server, path.join(plane.dir, "ca.crt"), { token });
  return file;
}

interface Proc {
  name: string;
  child: ChildProcess;
  exited: Promise<void>;
}

const running = new Set<ChildProcess>();
let exitHook = false;

/** Whatever stops the test process without stop() (an uncaught error, a timeout) must not leave a control plane behind. */
function killOnExit(child: ChildProcess): void {
  running.add(child);
  child.once("exit", () => running.delete(child));
  if (exitHook) return;
  exitHook = true;
  process.once("exit", () => {
    for (const c of running) c.kill("SIGKILL");
  });
}

function startProcess(dir: string, name: string, bin: string, args: string[]): Proc {
  const log = createWriteStream(path.join(dir, `${name}.log`));
  const child = spawn(bin, args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout!.pipe(log);
  child.stderr!.pipe(log);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  killOnExit(child);
  return { name, child, exited };
}

async function stopProcess(p: Proc, graceMs = 5000): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  p.child.kill("SIGTERM");
  const timer = setTimeout(() => p.child.kill("SIGKILL"), graceMs);
  await p.exited;
  clearTimeout(timer);
}

function logTail(dir: string, name: string, lines = 30): string {
  try {
    return readFileSync(path.join(dir, `${name}.log`), "utf8").split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/**
 * Polls `check` with the shared poller, failing at once (with its log) when one of `procs` exits,
 * and on timeout with the last lines of every log.
 */
async function until(what: string, timeoutMs: number, procs: Proc[], dir: string, check: () => Promise<boolean>): Promise<void> {
  const died = new AbortController();
  const exitedError = (p: Proc) => new Error(`${p.name} exited (${p.child.exitCode ?? p.child.signalCode}) while waiting for ${what}:\n${logTail(dir, p.name)}`);
  const watch = (p: Proc) => {
    if (p.child.exitCode !== null || p.child.signalCode !== null) died.abort(exitedError(p));
  };
  const listeners = procs.map((p) => {
    const listener = () => watch(p);
    p.child.once("exit", listener);
    watch(p);
    return () => p.child.off("exit", listener);
  });
  try {
    await waitFor(check, { message: what, timeoutMs, intervalMs: 200, signal: died.signal });
  } catch (error) {
    if (died.signal.aborted) throw error;
    throw new Error(`${(error as Error).message}; last lines:\n${procs.map((p) => `== ${p.name}\n${logTail(dir, p.name, 10)}`).join("\n")}`);
  } finally {
    for (const off of listeners) off();
  }
}

export interface StartControlPlaneOptions {
  assets: string;
  /** Defaults to a new folder under the system temp dir, removed by stop(). */
  dir?: string;
  /** Also run kube-scheduler (not needed when the pod runner binds pods itself). */
  scheduler?: boolean;
}

export async function startControlPlane(options: StartControlPlaneOptions): Promise<ControlPlane> {
  const ownDir = !options.dir;
  const dir = options.dir ?? mkdtempSync(path.join(tmpdir(), "corral-kube-"));
  mkdirSync(dir, { recursive: true });
  const bin = (name: string) => path.join(options.assets, name);
  makeCertificates(dir);
  const [etcdClient, etcdPeer, apiPort] = [await freePort(), await freePort(), await freePort()];
  const server = `https://127.0.0.1:${apiPort}`;
  const procs: Proc[] = [];
  const stop = async () => {
    for (const p of [...procs].reverse()) await stopProcess(p);
    if (ownDir) rmSync(dir, { recursive: true, force: true });
  };
  try {
    const etcd = startProcess(dir, "etcd", bin("etcd"), [
      "--data-dir", path.join(dir, "etcd-data"),
      "--listen-client-urls", `http://127.0.0.1:${etcdClient}`,
      "--advertise-client-urls", `http://127.0.0.1:${etcdClient}`,
      "--listen-peer-urls", `http://127.0.0.1:${etcdPeer}`,
      "--initial-advertise-peer-urls", `http://127.0.0.1:${etcdPeer}`,
      "--initial-cluster", `default=http://127.0.0.1:${etcdPeer}`,
      "--unsafe-no-fsync",
      "--log-level", "warn",
    ]);
    procs.push(etcd);
    await until("etcd did not answer", 30_000, procs, dir, async () => (await fetch(`http://127.0.0.1:${etcdClient}/health`)).ok);

    const auditPolicy = path.join(dir, "audit-policy.yaml");
    writeFileSync(auditPolicy, "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n");
    const apiserver = startProcess(dir, "kube-apiserver", bin("kube-apiserver"), [
      "--etcd-servers", `http://127.0.0.1:${etcdClient}`,
      "--bind-address", "127.0.0.1",
      "--advertise-address", "127.0.0.1",
      "--secure-port", String(apiPort),
      "--cert-dir", path.join(dir, "apiserver-certs"),
      "--tls-cert-file", path.join(dir, "apiserver.crt"),
      "--tls-private-key-file", path.join(dir, "apiserver.key"),
      "--client-ca-file", path.join(dir, "ca.crt"),
      "--service-cluster-ip-range", "10.0.0.0/24",
      "--authorization-mode", "Node,RBAC",
      "--service-account-issuer", "https://kubernetes.default.svc",
      "--service-account-key-file", path.join(dir, "sa.pub"),
      "--service-account-signing-key-file", path.join(dir, "sa.key"),
      "--endpoint-reconciler-type", "none",
      // On in hardened clusters (OpenShift among them): setting blockOwnerDeletion on an owner
      // reference needs the update verb on the owner's finalizers subresource.
      "--enable-admission-plugins", "OwnerReferencesPermissionEnforcement",
      // Every request at Metadata level (who, verb, resource, code): the RBAC tests read which
      // calls each ServiceAccount made and what the real authorizer answered.
      "--audit-policy-file", auditPolicy,
      "--audit-log-path", path.join(dir, "audit.log"),
      "--audit-log-format", "json",
      "--allow-privileged",
    ]);
    procs.push(apiserver);

    const kubeconfigPath = path.join(dir, "admin.kubeconfig");
    writeKubeconfig(kubeconfigPath, server, path.join(dir, "ca.crt"), {
      "client-certificate-data": readFileSync(path.join(dir, "admin.crt")).toString("base64"),
      "client-key-data": readFileSync(path.join(dir, "admin.key")).toString("base64"),
    });
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromFile(kubeconfigPath);
    const tls = {
      ca: readFileSync(path.join(dir, "ca.crt")),
      cert: readFileSync(path.join(dir, "admin.crt")),
      key: readFileSync(path.join(dir, "admin.key")),
    };
    const admin = (p: string) =>
      new Promise<{ ok: boolean; text: string }>((resolve, reject) => {
        const req = httpsGet(`${server}${p}`, tls, (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (chunk: string) => (text += chunk));
          res.on("end", () => resolve({ ok: res.statusCode === 200, text }));
        });
        req.on("error", reject);
        req.setTimeout(5000, () => req.destroy(new Error("timed out")));
      });
    await until("kube-apiserver was not ready", 90_000, procs, dir, async () => (await admin("/readyz")).text === "ok");

    const kcm = startProcess(dir, "kube-controller-manager", bin("kube-controller-manager"), [
      "--kubeconfig", kubeconfigPath,
      "--authentication-kubeconfig", kubeconfigPath,
      "--authorization-kubeconfig", kubeconfigPath,
      "--secure-port", "0",
      "--use-service-account-credentials",
      "--cluster-signing-cert-file", path.join(dir, "ca.crt"),
      "--cluster-signing-key-file", path.join(dir, "ca.key"),
      "--root-ca-file", path.join(dir, "ca.crt"),
      "--service-account-private-key-file", path.join(dir, "sa.key"),
      "--leader-elect=false",
      "--controllers", "*",
      "--flex-volume-plugin-dir", path.join(dir, "flexvolume"),
      // Pods that no kubelet runs must not be evicted while a test waits for them.
      "--node-monitor-grace-period", "60s",
    ]);
    procs.push(kcm);
    if (options.scheduler) {
      procs.push(
        startProcess(dir, "kube-scheduler", bin("kube-scheduler"), [
          "--kubeconfig", kubeconfigPath,
          "--authentication-kubeconfig", kubeconfigPath,
          "--authorization-kubeconfig", kubeconfigPath,
          "--secure-port", "0",
          "--leader-elect=false",
        ]),
      );
    }
    await until("the default ServiceAccount was not created", 90_000, procs, dir, async () => (await admin("/api/v1/namespaces/default/serviceaccounts/default")).ok);
    return { dir, server, kubeconfigPath, kubeConfig, auditLogPath: path.join(dir, "audit.log"), caData: readFileSync(path.join(dir, "ca.crt"), "utf8"), stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
