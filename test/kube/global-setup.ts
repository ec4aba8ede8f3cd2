// vitest globalSetup: one real control plane for the whole run when CORRAL_KUBE_ASSETS names the
// Kubernetes binaries. Test files share it and isolate themselves by namespace; they find it
// through inject("kube") (test/kube/cluster.ts). Without the variable nothing starts and the
// suites that need it skip, saying why.

import type { TestProject } from "vitest/node";
import { findKubeAssets, startControlPlane } from "./control-plane.js";

declare module "vitest" {
  export interface ProvidedContext {
    kube: { kubeconfigPath: string; dir: string; server: string } | { skip: string };
  }
}

export default async function setup(project: TestProject): Promise<(() => Promise<void>) | void> {
  const { dir: assets, reason } = findKubeAssets();
  if (!assets) {
    if (process.env.CORRAL_REQUIRE_KUBE === "1") throw new Error(`CORRAL_REQUIRE_KUBE=1 but ${reason}`);
    console.log(`[kube] the suites that need a real control plane skip: ${reason}`);
    project.provide("kube", { skip: reason! });
    return;
  }
  const started = Date.now();
  const plane = await startControlPlane({ assets });
  console.log(`[kube] control plane (etcd, kube-apiserver, kube-controller-manager) at ${plane.server}, up in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  project.provide("kube", { kubeconfigPath: plane.kubeconfigPath, dir: plane.dir, server: plane.server });
  return () => plane.stop();
}
