// The shared real control plane, as test files see it (started once by test/kube/global-setup.ts).

import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { inject } from "vitest";
import { KubeConfig } from "@kubernetes/client-node";
import { RESOURCES, type KubeClient } from "../../common/kube/client.js";
import type { KubeObject } from "../../common/kube/types.js";
import { MODEL_CRD_NAME, loadModelCrd } from "../../common/kube/model-resource.js";
import { waitFor } from "../helpers/wait.js";
import { CLI } from "../helpers/runtime.js";
import { startPodRunner, type PodRunner } from "./pod-runner.js";

export interface RealKube {
  kubeconfigPath: string;
  /** The control plane's folder: certificates, logs, the pod runner's address claims. */
  dir: string;
  server: string;
  /** The API server's audit log: JSON lines at Metadata level (user, verb, resource, response code). */
  auditLogPath: string;
  kubeConfig: KubeConfig;
}

/** The real control plane, or undefined when CORRAL_KUBE_ASSETS is unset (global-setup says so once). */
export function realKube(): RealKube | undefined {
  const kube = inject("kube");
  if ("skip" in kube) return undefined;
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(kube.kubeconfigPath);
  return { ...kube, auditLogPath: path.join(kube.dir, "audit.log"), kubeConfig };
}

/**
 * Applies the Model CRD (server-side) and waits until it is Established and Models can be listed
 * (right after creation the API server can answer 404 or 429 for a moment).
 */
export async function installCrd(client: KubeClient, timeoutMs = 30_000): Promise<void> {
  await client.apply(RESOURCES.customResourceDefinitions, loadModelCrd() as KubeObject, { fieldManager: "corral-tests", force: true });
  await waitFor(
    async () => {
      const crd = await client.get<KubeObject & { status?: { conditions?: { type: string; status: string }[] } }>(RESOURCES.customResourceDefinitions, undefined, MODEL_CRD_NAME);
      if (!crd?.status?.conditions?.some((c) => c.type === "Established" && c.status === "True")) return false;
      await client.request("GET" as never, "/apis/corral.dev/v1alpha1/models?limit=1");
      return true;
    },
    { message: "timed out waiting for the Model CRD to be established and served", timeoutMs, intervalMs: 100 },
  );
}

/** A namespace of a test's own on the real control plane, whose Model pods really run. */
export interface ModelTestBed {
  ns: string;
  /** A folder of the test's own (logs may go here); removed by close(). */
  dir: string;
  runner: PodRunner;
  close(): Promise<void>;
}

/**
 * A fresh namespace, a folder holding `models` (file name -> a file to copy, or the bytes) that
 * the Models' `models` claim serves, and a pod runner (test/kube/pod-runner.ts) that runs the
 * namespace's Model pods, and only those. close() stops the runner and removes both.
 */
export async function startModelTestBed(kube: RealKube, client: KubeClient, prefix: string, models: Record<string, string | Buffer>): Promise<ModelTestBed> {
  const ns = `${prefix}-${Date.now().toString(36)}`;
  await client.create(RESOURCES.namespaces, undefined, { apiVersion: "v1", kind: "Namespace", metadata: { name: ns } });
  const dir = mkdtempSync(path.join(tmpdir(), `corral-${prefix}-`));
  const modelsDir = path.join(dir, "models");
  mkdirSync(modelsDir);
  for (const [name, source] of Object.entries(models)) {
    if (typeof source === "string") copyFileSync(source, path.join(modelsDir, name));
    else writeFileSync(path.join(modelsDir, name), source);
  }
  const runner = await startPodRunner({
    kubeConfig: kube.kubeConfig,
    namespaces: [ns],
    // Model pods only: a chart's own pods (operator, router, Redis) are the test's business.
    labelSelector: "corral.dev/model",
    nodeName: `node-${ns}`,
    claimDir: path.join(kube.dir, "pod-addresses"),
    volumes: { claims: { models: modelsDir } },
    commands: { corral: [process.execPath, CLI] },
    backoffBaseSeconds: 1,
    maxProbePeriodSeconds: 1,
  });
  return {
    ns,
    dir,
    runner,
    async close() {
      await runner.close();
      await client.delete(RESOURCES.namespaces, undefined, ns).catch(() => undefined);
      if (!process.env.KEEP_CHAIN) rmSync(dir, { recursive: true, force: true });
    },
  };
}
