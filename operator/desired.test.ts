import { describe, expect, it } from "vitest";
import { ANNOTATIONS, type Model, type ModelSpec } from "../common/kube/model-resource.js";
import { desiredDeployment, desiredPvc, desiredService, runtimeArgs, serviceEndpoint, specHash } from "./desired.js";
import { testOperatorConfig } from "../test/helpers/config.js";

const settings = testOperatorConfig({ image: "corral:cpu", gpuImage: "corral:cuda" });

function model(spec: Partial<ModelSpec> = {}, name = "tiny"): Model {
  return {
    apiVersion: "corral.dev/v1alpha1",
    kind: "Model",
    metadata: { name, namespace: "ml", uid: "uid-1", generation: 1 },
    spec: { source: "hf:owner/repo/file.gguf", replicas: 1, minReplicas: 0, ...spec },
  };
}

const container = (m: Model) => desiredDeployment(m, settings).spec.template.spec.containers[0];
const argValue = (args: string[], flag: string) => (args.includes(flag) ? args[args.indexOf(flag) + 1] : undefined);

describe("desiredDeployment", () => {
  it("runs `corral runtime` with the model's settings as arguments", () => {
    const m = model({ modelId: "Qwen/Qwen2.5-0.5B-Instruct", parallel: 8, contextSize: 2048, threads: 3 });
    const c = container(m);
    expect(c.command).toEqual(["corral"]);
    expect(c.args[0]).toBe("runtime");
    expect(argValue(c.args, "--model")).toBe("hf:owner/repo/file.gguf");
    expect(argValue(c.args, "--model-id")).toBe("Qwen/Qwen2.5-0.5B-Instruct");
    expect(argValue(c.args, "--model-dir")).toBe("/models");
    expect(argValue(c.args, "--port")).toBe(String(settings.runtimePort));
    expect(argValue(c.args, "--parallel")).toBe("8");
    expect(argValue(c.args, "--context-size")).toBe("2048");
    expect(argValue(c.args, "--threads")).toBe("3");
    expect(argValue(c.args, "--gpu")).toBe("off");
    expect(argValue(c.args, "--drain-seconds")).toBe(String(settings.drainSeconds));
    expect(c.image).toBe("corral:cpu");
    expect(c.ports).toEqual([{ name: "http", containerPort: settings.runtimePort, protocol: "TCP" }]);
  });

  it("defaults the model id to the resource name and reads path sources from the cache volume", () => {
    const args = runtimeArgs(model({ source: "llama/model.gguf", cache: { claimName: "models" } }), settings);
    expect(argValue(args, "--model-id")).toBe("tiny");
    expect(argValue(args, "--model")).toBe("/models/llama/model.gguf");
  });

  it("passes sampling defaults in the API's names, in a fixed order", () => {
    const args = runtimeArgs(model({ defaults: { topP: 0.5, temperature: 0.2, maxLength: 64, doSample: false } }), settings);
    expect(argValue(args, "--defaults")).toBe('{"max_length":64,"temperature":0.2,"top_p":0.5,"do_sample":false}');
    expect(argValue(runtimeArgs(model(), settings), "--defaults")).toBeUndefined();
    expect(argValue(runtimeArgs(model({ defaults: {} }), settings), "--defaults")).toBeUndefined();
  });

  it("maps every sampling default of spec.defaults onto the API's name", () => {
    const defaults = { doSample: true, repetitionPenalty: 1, topK: 0, topP: 1, temperature: 0, maxLength: 1 };
    expect(JSON.parse(argValue(runtimeArgs(model({ defaults }), settings), "--defaults")!)).toEqual({
      max_length: 1,
      temperature: 0,
      top_p: 1,
      top_k: 0,
      repetition_penalty: 1,
      do_sample: true,
    });
  });

  it("probes /readyz at startup long enough for a large download, then /readyz and /healthz", () => {
    const c = container(model());
    expect(c.startupProbe.httpGet).toEqual({ path: "/readyz", port: "http" });
    expect(c.startupProbe.periodSeconds * c.startupProbe.failureThreshold).toBeGreaterThanOrEqual(settings.startupTimeoutSeconds);
    expect(c.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "http" });
    expect(c.livenessProbe.httpGet).toEqual({ path: "/healthz", port: "http" });
    const deployment = desiredDeployment(model(), settings);
    expect(deployment.spec.progressDeadlineSeconds).toBeGreaterThan(settings.startupTimeoutSeconds);
  });

  it("runs as non-root on a read-only root filesystem, and outlives the runtime's drain", () => {
    const pod = desiredDeployment(model(), settings).spec.template.spec;
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: "RuntimeDefault" } });
    expect(pod.securityContext.runAsUser).toBeGreaterThan(0);
    expect(pod.containers[0].securityContext).toEqual({
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      runAsNonRoot: true,
      capabilities: { drop: ["ALL"] },
    });
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(settings.drainSeconds);
    expect(pod.automountServiceAccountToken).toBe(false);
    // Writable places: the model cache and /tmp (HOME).
    expect(pod.containers[0].volumeMounts.map((v: { mountPath: string }) => v.mountPath)).toEqual(["/models", "/tmp"]);
    expect(pod.containers[0].env).toContainEqual({ name: "HOME", value: "/tmp" });
  });

  it("requests and limits CPU, memory and GPUs; GPU models run the CUDA image and roll a pod at a time", () => {
    const gpu = model({ resources: { cpu: "4", memory: "16Gi", gpu: 2 } });
    const c = container(gpu);
    expect(c.resources).toEqual({
      requests: { cpu: "4", memory: "16Gi", "nvidia.com/gpu": "2" },
      limits: { cpu: "4", memory: "16Gi", "nvidia.com/gpu": "2" },
    });
    expect(c.image).toBe("corral:cuda");
    expect(argValue(c.args, "--gpu")).toBe("cuda");
    expect(desiredDeployment(gpu, settings).spec.strategy.rollingUpdate).toEqual({ maxSurge: 0, maxUnavailable: 1 });
    expect(desiredDeployment(model(), settings).spec.strategy.rollingUpdate).toEqual({ maxSurge: 1, maxUnavailable: 0 });
    expect(container(model({ resources: { gpu: 1, gpuResourceName: "amd.com/gpu" } })).resources.limits).toEqual({ "amd.com/gpu": "1" });
    expect(container(model({ image: "mine:1", resources: { gpu: 1 } })).image).toBe("mine:1");
    expect(container(model()).resources).toEqual({});
  });

  it("schedules with the spec's node selector, tolerations, affinity and priority class", () => {
    const pod = desiredDeployment(
      model({
        nodeSelector: { gpu: "a100" },
        tolerations: [{ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }],
        affinity: { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [] } } },
        priorityClassName: "inference",
      }),
      settings,
    ).spec.template.spec;
    expect(pod.nodeSelector).toEqual({ gpu: "a100" });
    expect(pod.tolerations).toEqual([{ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }]);
    expect(pod.affinity).toHaveProperty("nodeAffinity");
    expect(pod.priorityClassName).toBe("inference");
  });

  it("lets spec.env replace the operator's variables and pass valueFrom through", () => {
    const env = container(
      model({ env: [{ name: "HOME", value: "/models/home" }, { name: "HF_TOKEN", valueFrom: { secretKeyRef: { name: "hf", key: "token" } } }] }),
    ).env;
    expect(env).toEqual([
      { name: "HOME", value: "/models/home" },
      { name: "UV_THREADPOOL_SIZE", value: "1" },
      { name: "HF_TOKEN", valueFrom: { secretKeyRef: { name: "hf", key: "token" } } },
    ]);
  });

  it("runs the runtime with one libuv worker (decode and sampling stay on one thread), unless spec.env says otherwise", () => {
    expect(container(model()).env).toContainEqual({ name: "UV_THREADPOOL_SIZE", value: "1" });
    const env = container(model({ env: [{ name: "UV_THREADPOOL_SIZE", value: "4" }] })).env;
    expect(env.filter((variable: { name: string }) => variable.name === "UV_THREADPOOL_SIZE")).toEqual([{ name: "UV_THREADPOOL_SIZE", value: "4" }]);
  });

  it("mounts the cache claim, or an emptyDir without one", () => {
    const volume = (m: Model) => desiredDeployment(m, settings).spec.template.spec.volumes[0];
    expect(volume(model())).toEqual({ name: "models", emptyDir: {} });
    expect(volume(model({ cache: { claimName: "shared" } }))).toEqual({ name: "models", persistentVolumeClaim: { claimName: "shared" } });
    expect(volume(model({ cache: { size: "5Gi" } }))).toEqual({ name: "models", persistentVolumeClaim: { claimName: "tiny-cache" } });
  });

  it("keeps replicas within minReplicas and maxReplicas", () => {
    const replicas = (spec: Partial<ModelSpec>) => desiredDeployment(model(spec), settings).spec.replicas;
    expect(replicas({ replicas: 0 })).toBe(0);
    expect(replicas({ replicas: 0, minReplicas: 1 })).toBe(1);
    expect(replicas({ replicas: 9, maxReplicas: 3 })).toBe(3);
    expect(replicas({ replicas: 2 })).toBe(2);
  });

  it("is controlled by the Model and selects its pods by one label", () => {
    const d = desiredDeployment(model(), settings);
    expect(d.metadata.ownerReferences).toEqual([
      { apiVersion: "corral.dev/v1alpha1", kind: "Model", name: "tiny", uid: "uid-1", controller: true, blockOwnerDeletion: true },
    ]);
    expect(d.spec.selector).toEqual({ matchLabels: { "corral.dev/model": "tiny" } });
    expect(d.spec.template.metadata.labels["corral.dev/model"]).toBe("tiny");
    expect(d.spec.template.metadata.annotations[ANNOTATIONS.modelId]).toBe("tiny");
  });

  it("is deterministic: only a change to the spec changes it, and only pod changes change the template", () => {
    const a = desiredDeployment(model(), settings);
    const b = desiredDeployment(model(), settings);
    expect(JSON.stringify(a)).toBe(JSON.stringify(b));
    const scaled = desiredDeployment(model({ replicas: 3 }), settings);
    expect(scaled.metadata.annotations![ANNOTATIONS.specHash]).not.toBe(a.metadata.annotations![ANNOTATIONS.specHash]);
    expect(specHash(scaled.spec.template)).toBe(specHash(a.spec.template));
    const changed = desiredDeployment(model({ parallel: 2 }), settings);
    expect(specHash(changed.spec.template)).not.toBe(specHash(a.spec.template));
  });
});

describe("desiredService and desiredPvc", () => {
  it("exposes the runtime port of the Model's pods", () => {
    const s = desiredService(model(), settings);
    expect(s.metadata.name).toBe("tiny");
    expect(s.spec).toEqual({
      type: "ClusterIP",
      selector: { "corral.dev/model": "tiny" },
      ports: [{ name: "http", port: settings.servicePort, targetPort: "http", protocol: "TCP" }],
    });
    expect(s.metadata.ownerReferences?.[0]?.controller).toBe(true);
    expect(serviceEndpoint(model(), settings)).toBe(`http://tiny.ml.svc:${settings.servicePort}`);
    expect(serviceEndpoint(model(), { ...settings, clusterDomain: "cluster.local" })).toBe(`http://tiny.ml.svc.cluster.local:${settings.servicePort}`);
  });

  it("creates a claim only for cache.size", () => {
    expect(desiredPvc(model())).toBeUndefined();
    expect(desiredPvc(model({ cache: { claimName: "shared" } }))).toBeUndefined();
    const pvc = desiredPvc(model({ cache: { size: "20Gi", storageClassName: "fast", accessMode: "ReadWriteMany" } }))!;
    expect(pvc.metadata.name).toBe("tiny-cache");
    expect(pvc.spec).toEqual({ accessModes: ["ReadWriteMany"], resources: { requests: { storage: "20Gi" } }, storageClassName: "fast" });
    expect(pvc.metadata.ownerReferences?.[0]?.uid).toBe("uid-1");
    expect(desiredPvc(model({ cache: { size: "1Gi" } }))!.spec.accessModes).toEqual(["ReadWriteOnce"]);
  });
});
