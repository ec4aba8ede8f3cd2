// The control plane the Kubernetes suites run against: a real kube-apiserver with RBAC and the
// real controllers (a Deployment becomes a ReplicaSet and Pods).

import { describe, expect, it } from "vitest";
import { KubeClient, RESOURCES } from "../../common/kube/client.js";
import { waitFor } from "../helpers/wait.js";
import { realKube } from "./cluster.js";

const kube = realKube();

describe.skipIf(!kube)("the real control plane", () => {
  it("serves the API with RBAC on and runs the Deployment and ReplicaSet controllers", async () => {
    const client = new KubeClient(kube!.kubeConfig);
    const version = await client.request<{ gitVersion: string }>("GET" as never, "/version");
    expect(version.gitVersion).toMatch(/^v1\.3\d\./);
    const ns = `cp-${Date.now().toString(36)}`;
    await client.create(RESOURCES.namespaces, undefined, { apiVersion: "v1", kind: "Namespace", metadata: { name: ns } });
    await client.create(RESOURCES.deployments, ns, {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "web" },
      spec: {
        replicas: 2,
        selector: { matchLabels: { app: "web" } },
        template: { metadata: { labels: { app: "web" } }, spec: { containers: [{ name: "c", image: "x" }] } },
      },
    });
    await waitFor(async () => (await client.list(RESOURCES.pods, ns)).items.length === 2, {
      message: "timed out waiting for the ReplicaSet's 2 pods",
      timeoutMs: 30_000,
      intervalMs: 200,
    });
    await client.delete(RESOURCES.namespaces, undefined, ns);
  });
});
