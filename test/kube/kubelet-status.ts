// The part of a kubelet that the operator and the router read: a pod's status (phase Running, a
// pod IP, the Ready condition, its containers running). There is no kubelet on the test control
// plane, so tests write it with admin rights through the status subresource, as a kubelet would.
//
// The pods are not bound to a Node: the API server accepts status on an unbound pod, and an
// unbound pod is deleted at once (a bound one waits for its kubelet to confirm, which never
// comes), so garbage collection and scale-downs behave as on a cluster. The full stand-in that
// runs pods is test/kube/pod-runner.ts.

import { RESOURCES, type KubeClient } from "../../common/kube/client.js";
import { kubeTime, type Pod } from "../../common/kube/types.js";

type PodCondition = { type: string; status: string; lastTransitionTime?: string };

/**
 * Writes what a kubelet would for a started pod: Running with `podIP`, every container running
 * (ready or not), and the Ready condition. Conditions keep their lastTransitionTime while their
 * status stays the same. Returns the pod as the API server stored it.
 */
export async function setPodReady(client: KubeClient, namespace: string, name: string, ready = true, opts: { podIP?: string } = {}): Promise<Pod> {
  const pod = await client.get<Pod>(RESOURCES.pods, namespace, name);
  if (!pod) throw new Error(`pod ${namespace}/${name} not found`);
  const now = kubeTime();
  const previous = (pod.status?.conditions ?? []) as PodCondition[];
  const condition = (type: string, status: string) => {
    const before = previous.find((c) => c.type === type);
    return { type, status, lastProbeTime: null, lastTransitionTime: before?.status === status && before.lastTransitionTime ? before.lastTransitionTime : now };
  };
  const state = ready ? "True" : "False";
  const startedAt = (pod.status as { startTime?: string } | undefined)?.startTime ?? now;
  const podIP = opts.podIP ?? pod.status?.podIP ?? "127.0.0.1";
  const status = {
    phase: "Running",
    podIP,
    podIPs: [{ ip: podIP }],
    startTime: startedAt,
    conditions: [
      condition("PodReadyToStartContainers", "True"),
      condition("Initialized", "True"),
      condition("Ready", state),
      condition("ContainersReady", state),
      condition("PodScheduled", "True"),
    ],
    containerStatuses: (pod.spec?.containers ?? []).map((c: { name: string; image?: string }) => ({
      name: c.name,
      image: c.image,
      imageID: "",
      ready,
      started: true,
      restartCount: 0,
      state: { running: { startedAt } },
    })),
  };
  // A merge patch replaces the lists whole: the status is exactly this one.
  return client.mergePatch<Pod>(RESOURCES.pods, namespace, name, { status }, { subresource: "status" });
}

/**
 * Makes every live pod matching `labelSelector` ready at `podIP`, leaving alone those that already
 * are; returns how many live pods match.
 */
export async function markPodsReady(client: KubeClient, namespace: string, labelSelector: string, podIP = "127.0.0.1"): Promise<number> {
  const pods = (await client.list<Pod>(RESOURCES.pods, namespace, { labelSelector })).items.filter((p) => !p.metadata.deletionTimestamp);
  for (const pod of pods) {
    const ready = (pod.status?.conditions as PodCondition[] | undefined)?.some((c) => c.type === "Ready" && c.status === "True");
    if (!ready) await setPodReady(client, namespace, pod.metadata.name, true, { podIP });
  }
  return pods.length;
}
