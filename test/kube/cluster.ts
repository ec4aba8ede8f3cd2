// The shared real control plane, as test files see it (started once by test/kube/global-setup.ts).

import { inject } from "vitest";
import { KubeConfig } from "@kubernetes/client-node";

export interface RealKube {
  kubeconfigPath: string;
  /** The control plane's folder: certificates, logs, the pod runner's address claims. */
  dir: string;
  server: string;
  kubeConfig: KubeConfig;
}

let said = false;

/** The real control plane, or undefined (said once per file) when CORRAL_KUBE_ASSETS is unset. */
export function realKube(): RealKube | undefined {
  const kube = inject("kube");
  if ("skip" in kube) {
    if (!said) console.log(`[kube] skipping the suites that need a real control plane: ${kube.skip}`);
    said = true;
    return undefined;
  }
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(kube.kubeconfigPath);
  return { ...kube, kubeConfig };
}
