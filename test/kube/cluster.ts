// The shared real control plane, as test files see it (started once by test/kube/global-setup.ts).

import path from "node:path";
import { inject } from "vitest";
import { KubeConfig } from "@kubernetes/client-node";
import { RESOURCES, type KubeClient } from "../../common/kube/client.js";
import type { KubeObject } from "../../common/kube/types.js";
import { MODEL_CRD_NAME, loadModelCrd } from "../../common/kube/model-resource.js";
import { waitFor } from "../helpers/wait.js";

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
