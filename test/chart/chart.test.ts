// The Helm chart (charts/corral), rendered with `helm template` over a matrix of values and checked
// against the code it deploys: the RBAC lists in common/kube/rbac.ts, the settings each process parses,
// the probe paths the processes answer, the labels the operator gives model pods, the Model CRD.

import { readFileSync } from "node:fs";
import path from "node:path";
import { pino } from "pino";
import { beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { createHttpServer } from "../../common/http.js";
import { MODEL_CRD_FILE, type Model } from "../../common/kube/model-resource.js";
import { OPERATOR_LEADER_ELECTION_RULES, OPERATOR_RULES, ROUTER_RULES } from "../../common/kube/rbac.js";
import type { SettingSpec } from "../../common/config.js";
import { healthApp } from "../../operator/app.js";
import { DEFAULT_GPU_IMAGE, DEFAULT_IMAGE, OPERATOR_SETTINGS, operatorConfig, type OperatorConfig } from "../../operator/config.js";
import { RUNTIME_UID, desiredDeployment } from "../../operator/desired.js";
import { createOperatorMetrics } from "../../operator/metrics.js";
import { StaticBackend } from "../../router/backends/static.js";
import { KUBERNETES_SETTINGS, ROUTER_SETTINGS, STATIC_SETTINGS, routerConfig, type RouterConfig } from "../../router/config.js";
import { run as runRouter } from "../../router/run.js";
import { CHART_DIR, NAMESPACE, ROOT, findHelm, lint, ofKind, one, selects, template, templateError, type KubeObject } from "./helm.js";

const { helm, reason } = findHelm();
if (!helm) console.warn(`test/chart: skipping the tests that render the chart: ${reason}`);

const chart = parse(readFileSync(path.join(CHART_DIR, "Chart.yaml"), "utf8")) as { version: string; appVersion: string };
const defaults = parse(readFileSync(path.join(CHART_DIR, "values.yaml"), "utf8")) as Record<string, any>;
const pkg = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8")) as { version: string };

const OPERATOR = "corral-operator";
const ROUTER = "corral-router";
const REDIS = "corral-redis";

/** Variables the chart sets that are not settings of the process (read by the code directly, or used in another variable). */
const NOT_SETTINGS = new Set(["POD_NAME", "POD_NAMESPACE", "REDIS_PASSWORD"]);

/** The matrix: every case renders and lints. */
const CASES: Record<string, object> = {
  defaults: {},
  "ingress with TLS": { ingress: { enabled: true, className: "nginx", host: "llm.example.com", tls: { enabled: true }, annotations: { "cert-manager.io/cluster-issuer": "letsencrypt" } } },
  "in-chart Redis and API keys": { redis: { enabled: true }, apiKeys: { keys: ["sk-one", "sk-two"] } },
  "external Redis": { redis: { url: "rediss://redis.example.com:6380/2", auth: { username: "corral", existingSecret: "redis-auth", existingSecretKey: "password" } }, apiKeys: { existingSecret: "corral-keys" } },
  "GPU model images": { runtime: { gpuImage: { repository: "registry.example.com/corral", tag: "0.1.0-cuda12" }, imagePullPolicy: "Always" } },
  "network policy off": { networkPolicy: { enabled: false } },
  "admin keys": { apiKeys: { existingSecret: "corral-keys" }, adminApiKeys: { keys: ["root-one", "root-two"] }, router: { authFailures: { limit: 5, windowSeconds: 120 } }, metrics: { serviceMonitor: { enabled: true } } },
  "autoscaling and monitoring": { router: { autoscaling: { enabled: true, minReplicas: 3, maxReplicas: 12 }, routing: "prefix", routingLoadFactor: 1.5 }, metrics: { serviceMonitor: { enabled: true, labels: { release: "prometheus" } }, podMonitor: { enabled: true } }, operator: { replicas: 2 } },
};

function container(deployment: KubeObject, name: string): Record<string, any> {
  const found = deployment.spec.template.spec.containers.find((c: { name: string }) => c.name === name);
  if (!found) throw new Error(`${deployment.metadata.name} has no container ${name}`);
  return found;
}

function envOf(c: Record<string, any>): Map<string, Record<string, any>> {
  return new Map((c.env ?? []).map((variable: { name: string }) => [variable.name, variable]));
}

/** The plain values of a container's variables, as the process sees them ($(VAR) references expanded with `refs`). */
function envValues(c: Record<string, any>, refs: Record<string, string> = {}): Record<string, string> {
  const out: Record<string, string> = {};
  for (const variable of c.env ?? []) {
    if (variable.value !== undefined) out[variable.name] = String(variable.value).replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (_m, name: string) => out[name] ?? refs[name] ?? `$(${name})`);
    else out[variable.name] = refs[variable.name] ?? "from-a-reference";
  }
  return out;
}

/** The configuration a process builds from the container's environment (what commander reads from the env vars). */
function settingsFromEnv(env: Record<string, string>, specs: readonly SettingSpec[]): Record<string, unknown> {
  const input: Record<string, unknown> = {};
  for (const spec of specs) if (env[spec.env] !== undefined) input[spec.key] = env[spec.env];
  return input;
}

function operatorConfigOf(objects: KubeObject[]): OperatorConfig {
  return operatorConfig(settingsFromEnv(envValues(container(one(objects, "Deployment", OPERATOR), "operator"), { POD_NAME: "corral-operator-abc" }), OPERATOR_SETTINGS));
}

function routerConfigOf(objects: KubeObject[]): RouterConfig {
  const env = envValues(container(one(objects, "Deployment", ROUTER), "router"), { REDIS_PASSWORD: "s3cret" });
  return routerConfig(settingsFromEnv(env, [...ROUTER_SETTINGS, ...STATIC_SETTINGS, ...KUBERNETES_SETTINGS]));
}

function podLabels(deployment: KubeObject): Record<string, string> {
  return deployment.spec.template.metadata.labels;
}

/** A Model from examples/, as the API server would hand it to the operator. */
function exampleModel(file: string): Model {
  const model = parse(readFileSync(path.join(ROOT, "examples", file), "utf8")) as Model;
  model.metadata = { ...model.metadata, namespace: NAMESPACE, uid: "0b8f6f1e-0000-4000-8000-000000000001" };
  return model;
}

it("the chart's CRD is a byte-for-byte copy of crds/models.corral.dev.yaml", () => {
  const hint = "the chart's copy differs: cp crds/models.corral.dev.yaml charts/corral/files/";
  expect(readFileSync(path.join(CHART_DIR, "files", "models.corral.dev.yaml"), "utf8"), hint).toBe(readFileSync(MODEL_CRD_FILE, "utf8"));
});

it("the chart deploys this version of Corral, and its images are the ones the operator defaults to", () => {
  expect(chart.appVersion).toBe(pkg.version);
  expect(`${defaults.image.repository}:${chart.appVersion}`).toBe(DEFAULT_IMAGE);
  expect(`${defaults.image.repository}:${chart.appVersion}-cuda`).toBe(DEFAULT_GPU_IMAGE);
});

describe.skipIf(!helm)("helm lint and helm template", () => {
  const rendered = new Map<string, KubeObject[]>();
  beforeAll(() => {
    for (const [name, values] of Object.entries(CASES)) rendered.set(name, template(values));
  });
  const render = (name: string) => rendered.get(name)!;

  it.each(Object.keys(CASES))("%s: helm lint --strict passes", (name) => {
    const result = lint(CASES[name]!);
    expect(result.output).toContain("1 chart(s) linted, 0 chart(s) failed");
    expect(result.status).toBe(0);
  });

  it.each(Object.keys(CASES))("%s: every object is namespaced in the release or cluster-wide on purpose, and no ClusterRole is granted", (name) => {
    for (const object of render(name)) {
      if (object.kind === "CustomResourceDefinition") expect(object.metadata.namespace).toBeUndefined();
      else expect(object.metadata.namespace, `${object.kind}/${object.metadata.name}`).toBe(NAMESPACE);
    }
    expect(ofKind(render(name), "ClusterRole")).toEqual([]);
    expect(ofKind(render(name), "ClusterRoleBinding")).toEqual([]);
  });

  it("defaults: the objects of a working install, and nothing optional", () => {
    const kinds = render("defaults").map((object) => `${object.kind}/${object.metadata.name}`).sort();
    expect(kinds).toEqual(
      [
        "CustomResourceDefinition/models.corral.dev",
        `Deployment/${OPERATOR}`,
        `Deployment/${ROUTER}`,
        "NetworkPolicy/corral-runtime",
        `PodDisruptionBudget/${ROUTER}`,
        `Role/${OPERATOR}`,
        `Role/${OPERATOR}-leader-election`,
        `Role/${ROUTER}`,
        `RoleBinding/${OPERATOR}`,
        `RoleBinding/${OPERATOR}-leader-election`,
        `RoleBinding/${ROUTER}`,
        `Service/${OPERATOR}-metrics`,
        `Service/${ROUTER}`,
        `ServiceAccount/${OPERATOR}`,
        `ServiceAccount/${ROUTER}`,
      ].sort(),
    );
    expect(one(render("defaults"), "Deployment", ROUTER).spec.replicas).toBe(2);
    expect(one(render("defaults"), "Deployment", OPERATOR).spec.replicas).toBe(1);
  });

  it("the CRD it installs is crds/models.corral.dev.yaml, kept on uninstall", () => {
    const crd = one(render("defaults"), "CustomResourceDefinition", "models.corral.dev");
    const file = parse(readFileSync(MODEL_CRD_FILE, "utf8")) as KubeObject;
    expect(crd.metadata.annotations).toEqual({ "helm.sh/resource-policy": "keep" });
    const { annotations: _, ...metadata } = crd.metadata;
    expect({ ...crd, metadata }).toEqual(file);
    expect(ofKind(template({ crds: { install: false } }), "CustomResourceDefinition")).toEqual([]);
    expect(one(template({ crds: { keep: false } }), "CustomResourceDefinition", "models.corral.dev").metadata.annotations).toBeUndefined();
  });

  it("RBAC: the Roles grant exactly common/kube/rbac.ts, bound to each process's own ServiceAccount", () => {
    const objects = render("defaults");
    const rules = (name: string) => one(objects, "Role", name).rules;
    expect(rules(OPERATOR)).toEqual(OPERATOR_RULES);
    expect(rules(`${OPERATOR}-leader-election`)).toEqual(OPERATOR_LEADER_ELECTION_RULES);
    expect(rules(ROUTER)).toEqual(ROUTER_RULES);
    for (const [binding, role, account] of [
      [OPERATOR, OPERATOR, OPERATOR],
      [`${OPERATOR}-leader-election`, `${OPERATOR}-leader-election`, OPERATOR],
      [ROUTER, ROUTER, ROUTER],
    ] as const) {
      const roleBinding = one(objects, "RoleBinding", binding);
      expect(roleBinding.roleRef).toEqual({ apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: role });
      expect(roleBinding.subjects).toEqual([{ kind: "ServiceAccount", name: account, namespace: NAMESPACE }]);
    }
    expect(one(objects, "Deployment", OPERATOR).spec.template.spec.serviceAccountName).toBe(OPERATOR);
    expect(one(objects, "Deployment", ROUTER).spec.template.spec.serviceAccountName).toBe(ROUTER);
    // Without leader election the Lease permissions go too.
    const single = template({ operator: { leaderElection: { enabled: false } } });
    expect(ofKind(single, "Role").map((role) => role.metadata.name).sort()).toEqual([OPERATOR, ROUTER]);
    expect(envValues(container(one(single, "Deployment", OPERATOR), "operator")).CORRAL_LEADER_ELECTION).toBe("false");
  });

  it.each(Object.keys(CASES))("%s: every variable is a setting the process parses, and together they are a valid configuration", (name) => {
    const objects = render(name);
    const known = (specs: readonly SettingSpec[]) => new Set(specs.map((spec) => spec.env));
    const operatorEnv = new Set(OPERATOR_SETTINGS.map((spec) => spec.env));
    const routerEnv = known([...ROUTER_SETTINGS, ...STATIC_SETTINGS, ...KUBERNETES_SETTINGS]);
    const extra = (deployment: string, c: string, allowed: Set<string>) => [...envOf(container(one(objects, "Deployment", deployment), c)).keys()].filter((n) => !allowed.has(n) && !NOT_SETTINGS.has(n));
    expect(extra(OPERATOR, "operator", operatorEnv)).toEqual([]);
    expect(extra(ROUTER, "router", routerEnv)).toEqual([]);
    const operator = operatorConfigOf(objects);
    expect(operator.namespaces).toEqual([NAMESPACE]);
    expect(operator.leaseNamespace).toBe(NAMESPACE);
    const router = routerConfigOf(objects);
    expect(router.backend).toBe("kubernetes");
    expect(router.upstream).toEqual([]);
    expect(router.namespace).toBe(NAMESPACE);
    // The ConfigMap the router keeps the current model in is the release's own (the Role allows any in the namespace).
    expect(router.stateConfigMap).toBe(ROUTER);
  });

  it("defaults: the chart's settings are the processes' own defaults where it has no reason to differ", () => {
    const operator = operatorConfigOf(render("defaults"));
    const plain = operatorConfig({});
    for (const key of ["port", "logLevel", "workers", "resyncSeconds", "shutdownSeconds", "leaderElection", "runtimePort", "servicePort", "drainSeconds", "startupTimeoutSeconds", "runtimeLogLevel", "image", "gpuImage", "probePods", "autoscaleIntervalSeconds"] as const) {
      expect(operator[key], key).toEqual(plain[key]);
    }
    const router = routerConfigOf(render("defaults"));
    const routerDefaults = routerConfig({ backend: "kubernetes" });
    for (const key of ["port", "logLevel", "rateLimitPoints", "rateLimitDuration", "rateLimitBurst", "readyWaitSeconds", "drainSeconds", "routing", "routingLoadFactor", "redisUrl", "apiKeysFile"] as const) {
      expect(router[key], key).toEqual(routerDefaults[key]);
    }
    const prefix = routerConfigOf(render("autoscaling and monitoring"));
    expect([prefix.routing, prefix.routingLoadFactor]).toEqual(["prefix", 1.5]);
    // Behind an Ingress the client is the address the controller forwards, not the controller.
    expect(router.trustedProxies).toEqual(["uniquelocal"]);
  });

  it("probes: the router's readiness is /health and the operator's /healthz and /readyz, on the ports the processes listen on", () => {
    const objects = render("defaults");
    const router = container(one(objects, "Deployment", ROUTER), "router");
    const http = router.ports.find((p: { name: string }) => p.name === "http");
    expect(http.containerPort).toBe(routerConfigOf(objects).port);
    expect(router.readinessProbe.httpGet).toEqual({ path: "/health", port: "http" });
    expect(router.livenessProbe.tcpSocket).toEqual({ port: "http" });
    expect(router.startupProbe.tcpSocket).toEqual({ port: "http" });
    const operator = container(one(objects, "Deployment", OPERATOR), "operator");
    const metrics = operator.ports.find((p: { name: string }) => p.name === "http-metrics");
    expect(metrics.containerPort).toBe(operatorConfigOf(objects).port);
    expect(operator.livenessProbe.httpGet).toEqual({ path: "/healthz", port: "http-metrics" });
    expect(operator.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "http-metrics" });
    // A stopping pod gets its drain (and the router its preStop sleep) before the kill.
    const routerPod = one(objects, "Deployment", ROUTER).spec.template.spec;
    expect(router.lifecycle.preStop).toEqual({ sleep: { seconds: 5 } });
    expect(routerPod.terminationGracePeriodSeconds).toBeGreaterThan(5 + routerConfigOf(objects).drainSeconds);
    expect(one(objects, "Deployment", OPERATOR).spec.template.spec.terminationGracePeriodSeconds).toBeGreaterThan(operatorConfigOf(objects).shutdownSeconds);
  });

  it("probes: the paths answer 200 on a router and an operator configured as the chart configures them", async () => {
    const objects = render("defaults");
    const router = await runRouter({ ...routerConfigOf(objects), host: "127.0.0.1", port: 0 }, { backend: new StaticBackend([]), logger: pino({ level: "silent" }) });
    try {
      expect((await fetch(`${router.url}/health`)).status).toBe(200);
    } finally {
      await router.close();
    }
    const app = createHttpServer({ logger: pino({ level: "silent" }), bodyLimitBytes: 65_536 });
    await app.register(healthApp, {
      metrics: createOperatorMetrics(),
      notReadyReason: () => undefined,
      leader: () => ({ leading: true, identity: "a", leader: "a" }),
      refreshGauges: () => {},
    });
    try {
      const operator = container(one(objects, "Deployment", OPERATOR), "operator");
      for (const probe of [operator.livenessProbe, operator.readinessProbe]) {
        expect((await app.inject({ method: "GET", url: probe.httpGet.path })).statusCode).toBe(200);
      }
    } finally {
      await app.close();
    }
  });

  it.each(Object.keys(CASES))("%s: every pod runs as non-root with a read-only root, no privileges and a seccomp profile", (name) => {
    for (const deployment of ofKind(render(name), "Deployment")) {
      const pod = deployment.spec.template.spec;
      expect(pod.securityContext.runAsNonRoot, deployment.metadata.name).toBe(true);
      expect(pod.securityContext.seccompProfile).toEqual({ type: "RuntimeDefault" });
      for (const c of pod.containers) {
        expect(c.securityContext, `${deployment.metadata.name}/${c.name}`).toMatchObject({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
      }
    }
    // The router and the operator run as the image's user, the same as model pods.
    for (const deployment of [OPERATOR, ROUTER]) {
      expect(one(render(name), "Deployment", deployment).spec.template.spec.securityContext.runAsUser).toBe(RUNTIME_UID);
    }
  });

  it.each(Object.keys(CASES))("%s: every container requests CPU and memory and has a memory limit", (name) => {
    for (const deployment of ofKind(render(name), "Deployment")) {
      for (const c of deployment.spec.template.spec.containers) {
        expect(Object.keys(c.resources.requests).sort(), `${deployment.metadata.name}/${c.name}`).toEqual(["cpu", "memory"]);
        expect(c.resources.limits.memory).toBeTruthy();
      }
    }
  });

  it("the router: a Service on its pods' http port, a PodDisruptionBudget, pods spread over nodes", () => {
    const objects = render("defaults");
    const deployment = one(objects, "Deployment", ROUTER);
    const service = one(objects, "Service", ROUTER);
    expect(selects({ matchLabels: service.spec.selector }, podLabels(deployment))).toBe(true);
    expect(service.spec.ports).toEqual([{ name: "http", port: 80, targetPort: "http", protocol: "TCP" }]);
    const pdb = one(objects, "PodDisruptionBudget", ROUTER);
    expect(pdb.spec.maxUnavailable).toBe(1);
    expect(selects(pdb.spec.selector, podLabels(deployment))).toBe(true);
    const spread = deployment.spec.template.spec.topologySpreadConstraints;
    expect(spread).toHaveLength(1);
    expect(selects(spread[0].labelSelector, podLabels(deployment))).toBe(true);
    expect(deployment.spec.strategy.rollingUpdate.maxUnavailable).toBe(0);
    expect(ofKind(objects, "HorizontalPodAutoscaler")).toEqual([]);
  });

  it("autoscaling: an HPA owns the router's replica count; monitoring: ServiceMonitors and a PodMonitor on the right ports", () => {
    const objects = render("autoscaling and monitoring");
    const deployment = one(objects, "Deployment", ROUTER);
    expect(deployment.spec.replicas).toBeUndefined();
    const hpa = one(objects, "HorizontalPodAutoscaler", ROUTER);
    expect(hpa.spec).toMatchObject({ scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: ROUTER }, minReplicas: 3, maxReplicas: 12 });
    expect(hpa.spec.metrics[0].resource).toEqual({ name: "cpu", target: { type: "Utilization", averageUtilization: 70 } });
    const routerMonitor = one(objects, "ServiceMonitor", ROUTER);
    expect(routerMonitor.metadata.labels?.release).toBe("prometheus");
    // The router's /metrics without API keys: the metrics port, through a ClusterIP Service of its own.
    const routerMetrics = one(objects, "Service", `${ROUTER}-metrics`);
    expect(routerMetrics.spec.type).toBe("ClusterIP");
    expect(selects(routerMonitor.spec.selector, routerMetrics.metadata.labels)).toBe(true);
    expect(routerMonitor.spec.endpoints[0]).toMatchObject({ port: "http-metrics", path: "/metrics" });
    const metricsPort = container(deployment, "router").ports.find((p: { name: string }) => p.name === "http-metrics");
    expect(metricsPort.containerPort).toBe(routerConfigOf(objects).metricsPort);
    expect(routerMetrics.spec.ports[0]).toMatchObject({ name: "http-metrics", port: metricsPort.containerPort, targetPort: "http-metrics" });
    expect(one(objects, "Service", ROUTER).spec.ports.map((p: { name: string }) => p.name)).toEqual(["http"]);
    // Without a metrics port (and without keys) Prometheus scrapes the main port.
    const plain = template({ router: { metricsPort: 0 }, metrics: { serviceMonitor: { enabled: true } } });
    expect(one(plain, "ServiceMonitor", ROUTER).spec.endpoints[0]).toMatchObject({ port: "http", path: "/metrics" });
    expect(plain.filter((object) => object.metadata.name === `${ROUTER}-metrics`)).toEqual([]);
    expect(routerConfigOf(plain).metricsPort).toBe(0);
    const operatorMonitor = one(objects, "ServiceMonitor", OPERATOR);
    expect(selects(operatorMonitor.spec.selector, one(objects, "Service", `${OPERATOR}-metrics`).metadata.labels)).toBe(true);
    expect(operatorMonitor.spec.endpoints[0]).toMatchObject({ port: "http-metrics", path: "/metrics" });
    const podMonitor = one(objects, "PodMonitor", "corral-runtime");
    const gpuPod = desiredDeployment(exampleModel("llama-gpu.yaml"), operatorConfigOf(objects)).spec.template;
    expect(selects(podMonitor.spec.selector, gpuPod.metadata.labels)).toBe(true);
    expect(gpuPod.spec.containers[0].ports.map((p: { name: string }) => p.name)).toContain(podMonitor.spec.podMetricsEndpoints[0].port);
    // Two operators: one acts (leader election is on).
    expect(one(objects, "Deployment", OPERATOR).spec.replicas).toBe(2);
    expect(operatorConfigOf(objects).leaderElection).toBe(true);
  });

  describe("network policy", () => {
    it("model pods (CPU and GPU, as the operator makes them) accept only the router and the operator, on the runtime port", () => {
      const objects = render("defaults");
      const policy = one(objects, "NetworkPolicy", "corral-runtime");
      const settings = operatorConfigOf(objects);
      expect(policy.spec.policyTypes).toEqual(["Ingress"]);
      for (const example of ["qwen-cpu.yaml", "llama-gpu.yaml", "scale-to-zero.yaml"]) {
        const pod = desiredDeployment(exampleModel(example), settings).spec.template;
        expect(selects(policy.spec.podSelector, pod.metadata.labels), example).toBe(true);
        const named = pod.spec.containers[0].ports.find((p: { name: string }) => p.name === policy.spec.ingress[0].ports[0].port);
        expect(named?.containerPort, example).toBe(settings.runtimePort);
      }
      expect(policy.spec.ingress).toHaveLength(1);
      const peers = policy.spec.ingress[0].from as { podSelector: { matchLabels: Record<string, string> } }[];
      expect(peers).toHaveLength(2);
      const router = podLabels(one(objects, "Deployment", ROUTER));
      const operator = podLabels(one(objects, "Deployment", OPERATOR));
      expect(peers.filter((peer) => selects(peer.podSelector, router))).toHaveLength(1);
      expect(peers.filter((peer) => selects(peer.podSelector, operator))).toHaveLength(1);
      // The router and the operator are not model pods: the policy leaves them alone.
      expect(selects(policy.spec.podSelector, router)).toBe(false);
      expect(selects(policy.spec.podSelector, operator)).toBe(false);
    });

    it("GPU model images: the operator gets the CUDA image from the chart and gives it to GPU models only", () => {
      const objects = render("GPU model images");
      const settings = operatorConfigOf(objects);
      expect(settings.gpuImage).toBe("registry.example.com/corral:0.1.0-cuda12");
      expect(settings.imagePullPolicy).toBe("Always");
      const gpu = desiredDeployment(exampleModel("llama-gpu.yaml"), settings).spec.template.spec.containers[0];
      const cpu = desiredDeployment(exampleModel("qwen-cpu.yaml"), settings).spec.template.spec.containers[0];
      expect(gpu.image).toBe("registry.example.com/corral:0.1.0-cuda12");
      expect(cpu.image).toBe(DEFAULT_IMAGE);
      expect(gpu.imagePullPolicy).toBe("Always");
      // Still selected by the network policy.
      const gpuPod = desiredDeployment(exampleModel("llama-gpu.yaml"), settings).spec.template;
      expect(selects(one(objects, "NetworkPolicy", "corral-runtime").spec.podSelector, gpuPod.metadata.labels)).toBe(true);
    });

    it("extra peers (Prometheus) join the same rule; off, there is no policy at all", () => {
      const prometheus = { namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "monitoring" } } };
      const policy = one(template({ networkPolicy: { extraFrom: [prometheus] } }), "NetworkPolicy", "corral-runtime");
      expect(policy.spec.ingress[0].from).toHaveLength(3);
      expect(policy.spec.ingress[0].from[2]).toEqual(prometheus);
      expect(ofKind(render("network policy off"), "NetworkPolicy")).toEqual([]);
      expect(ofKind(template({ networkPolicy: { enabled: false }, redis: { enabled: true } }), "NetworkPolicy")).toEqual([]);
    });
  });

  describe("ingress", () => {
    it("with TLS: host, certificate, class, the router's Service, and SSE-friendly ingress-nginx settings", () => {
      const objects = render("ingress with TLS");
      const ingress = one(objects, "Ingress", ROUTER);
      expect(ingress.spec.ingressClassName).toBe("nginx");
      expect(ingress.spec.tls).toEqual([{ hosts: ["llm.example.com"], secretName: "corral-tls" }]);
      expect(ingress.spec.rules).toHaveLength(1);
      expect(ingress.spec.rules[0].host).toBe("llm.example.com");
      const backend = ingress.spec.rules[0].http.paths[0];
      expect(backend).toMatchObject({ path: "/", pathType: "Prefix", backend: { service: { name: ROUTER, port: { name: "http" } } } });
      expect(one(objects, "Service", ROUTER).spec.ports.map((p: { name: string }) => p.name)).toContain("http");
      const annotations = ingress.metadata.annotations ?? {};
      // Streams are passed on as they come, and may stay quiet for minutes (a long prompt, a queue).
      expect(annotations["nginx.ingress.kubernetes.io/proxy-buffering"]).toBe("off");
      expect(Number(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"])).toBeGreaterThanOrEqual(3600);
      expect(Number(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"])).toBeGreaterThanOrEqual(3600);
      expect(annotations["cert-manager.io/cluster-issuer"]).toBe("letsencrypt");
    });

    it("streaming presets for other controllers, and the user's annotations win", () => {
      const annotationsOf = (values: object) => one(template({ ingress: { enabled: true, ...values } }), "Ingress", ROUTER).metadata.annotations ?? {};
      expect(annotationsOf({ streaming: { preset: "haproxy", timeoutSeconds: 7200 } })).toEqual({ "haproxy.org/timeout-server": "7200s" });
      expect(annotationsOf({ streaming: { preset: "alb" } })).toEqual({ "alb.ingress.kubernetes.io/load-balancer-attributes": "idle_timeout.timeout_seconds=3600" });
      expect(annotationsOf({ streaming: { preset: "none" } })).toEqual({});
      expect(annotationsOf({ annotations: { "nginx.ingress.kubernetes.io/proxy-read-timeout": "600" } })["nginx.ingress.kubernetes.io/proxy-read-timeout"]).toBe("600");
      const anyHost = one(template({ ingress: { enabled: true } }), "Ingress", ROUTER);
      expect(anyHost.spec.rules[0].host).toBeUndefined();
      expect(anyHost.spec.tls).toBeUndefined();
    });
  });

  describe("Redis and API keys", () => {
    it("in-chart Redis: a password from a generated Secret, in the router's REDIS_URL; reachable only by the router", () => {
      const objects = render("in-chart Redis and API keys");
      const secret = one(objects, "Secret", REDIS);
      const password = Buffer.from(secret.data["redis-password"], "base64").toString();
      expect(password).toMatch(/^[A-Za-z0-9]{32}$/);
      const router = container(one(objects, "Deployment", ROUTER), "router");
      expect(envOf(router).get("REDIS_PASSWORD")!.valueFrom).toEqual({ secretKeyRef: { name: REDIS, key: "redis-password" } });
      expect(routerConfigOf(objects).redisUrl).toBe(`redis://:s3cret@${REDIS}.${NAMESPACE}.svc:6379/0`);
      const redis = one(objects, "Deployment", REDIS);
      const server = container(redis, "redis");
      expect(envOf(server).get("REDIS_PASSWORD")!.valueFrom).toEqual({ secretKeyRef: { name: REDIS, key: "redis-password" } });
      expect(server.args.join("\n")).not.toContain(password);
      const service = one(objects, "Service", REDIS);
      expect(service.spec.ports[0]).toMatchObject({ port: 6379, targetPort: "redis" });
      expect(selects({ matchLabels: service.spec.selector }, podLabels(redis))).toBe(true);
      expect(selects({ matchLabels: service.spec.selector }, podLabels(one(objects, "Deployment", ROUTER)))).toBe(false);
      const policy = one(objects, "NetworkPolicy", REDIS);
      expect(selects(policy.spec.podSelector, podLabels(redis))).toBe(true);
      expect(policy.spec.ingress[0].from).toHaveLength(1);
      expect(selects(policy.spec.ingress[0].from[0].podSelector, podLabels(one(objects, "Deployment", ROUTER)))).toBe(true);
    });

    it("API keys the chart stores: a Secret mounted as the router's keys file, and a change rolls the pods", () => {
      const objects = render("in-chart Redis and API keys");
      expect(one(objects, "Secret", "corral-api-keys").stringData["api-keys"].split("\n").filter(Boolean)).toEqual(["sk-one", "sk-two"]);
      const deployment = one(objects, "Deployment", ROUTER);
      const pod = deployment.spec.template.spec;
      expect(routerConfigOf(objects).apiKeysFile).toBe("/etc/corral/api-keys/keys");
      expect(pod.volumes.find((v: { name: string }) => v.name === "api-keys").secret).toMatchObject({ secretName: "corral-api-keys", items: [{ key: "api-keys", path: "keys" }] });
      expect(container(deployment, "router").volumeMounts).toContainEqual({ name: "api-keys", mountPath: "/etc/corral/api-keys", readOnly: true });
      const other = one(template({ apiKeys: { keys: ["sk-three"] } }), "Deployment", ROUTER);
      expect(other.spec.template.metadata.annotations["checksum/api-keys"]).not.toBe(deployment.spec.template.metadata.annotations["checksum/api-keys"]);
    });

    it("external Redis and an existing keys Secret: the password from the user's Secret, no Redis in the release", () => {
      const objects = render("external Redis");
      expect(ofKind(objects, "Secret")).toEqual([]);
      expect(objects.filter((object) => object.metadata.name === REDIS)).toEqual([]);
      const router = container(one(objects, "Deployment", ROUTER), "router");
      expect(envOf(router).get("REDIS_PASSWORD")!.valueFrom).toEqual({ secretKeyRef: { name: "redis-auth", key: "password" } });
      expect(routerConfigOf(objects).redisUrl).toBe("rediss://corral:s3cret@redis.example.com:6380/2");
      expect(one(objects, "Deployment", ROUTER).spec.template.spec.volumes.find((v: { name: string }) => v.name === "api-keys").secret.secretName).toBe("corral-keys");
      // Without a password Secret the URL is used as it is.
      expect(routerConfigOf(template({ redis: { url: "redis://redis:6379" } })).redisUrl).toBe("redis://redis:6379");
    });

    it("admin keys the chart stores: a Secret mounted as the router's admin keys file, beside the ordinary keys", () => {
      const objects = render("admin keys");
      expect(one(objects, "Secret", "corral-admin-api-keys").stringData["admin-api-keys"].split("\n").filter(Boolean)).toEqual(["root-one", "root-two"]);
      const deployment = one(objects, "Deployment", ROUTER);
      const config = routerConfigOf(objects);
      expect(config).toMatchObject({ apiKeysFile: "/etc/corral/api-keys/keys", adminApiKeysFile: "/etc/corral/admin-api-keys/keys", authFailureLimit: 5, authFailureWindowSeconds: 120 });
      const volumes = deployment.spec.template.spec.volumes;
      expect(volumes.find((v: { name: string }) => v.name === "admin-api-keys").secret).toMatchObject({ secretName: "corral-admin-api-keys", items: [{ key: "admin-api-keys", path: "keys" }] });
      expect(volumes.find((v: { name: string }) => v.name === "api-keys").secret.secretName).toBe("corral-keys");
      expect(container(deployment, "router").volumeMounts).toContainEqual({ name: "admin-api-keys", mountPath: "/etc/corral/admin-api-keys", readOnly: true });
      const other = one(template({ adminApiKeys: { keys: ["root-three"] } }), "Deployment", ROUTER);
      expect(other.spec.template.metadata.annotations["checksum/admin-api-keys"]).not.toBe(deployment.spec.template.metadata.annotations["checksum/admin-api-keys"]);
      // An admin keys Secret of the user's: mounted, no Secret in the release.
      const existing = template({ adminApiKeys: { existingSecret: "corral-admins", existingSecretKey: "keys" } });
      expect(ofKind(existing, "Secret")).toEqual([]);
      expect(one(existing, "Deployment", ROUTER).spec.template.spec.volumes.find((v: { name: string }) => v.name === "admin-api-keys").secret).toMatchObject({ secretName: "corral-admins", items: [{ key: "keys", path: "keys" }] });
    });

    it("a keys file from a Secret of the user's: mounted as a folder (so Secret updates reach the file and the router reloads it), named by CORRAL_KEYS_FILE", () => {
      const objects = template({ keys: { existingSecret: "corral-tenants" } });
      expect(ofKind(objects, "Secret")).toEqual([]);
      const deployment = one(objects, "Deployment", ROUTER);
      expect(routerConfigOf(objects).keysFile).toBe("/etc/corral/keys/keys.yaml");
      expect(deployment.spec.template.spec.volumes.find((v: { name: string }) => v.name === "keys").secret).toMatchObject({ secretName: "corral-tenants", items: [{ key: "keys.yaml", path: "keys.yaml" }] });
      const mount = container(deployment, "router").volumeMounts.find((m: { name: string }) => m.name === "keys");
      expect(mount).toEqual({ name: "keys", mountPath: "/etc/corral/keys", readOnly: true });
      expect(templateError({ keys: { existingSecret: "corral-tenants" }, router: { metricsPort: 0 }, metrics: { serviceMonitor: { enabled: true } } })).toContain("needs router.metricsPort");
    });

    it("no Redis and no keys: in-memory limits and open access", () => {
      const router = routerConfigOf(render("defaults"));
      expect(router.redisUrl).toBeUndefined();
      expect(router.apiKeysFile).toBeUndefined();
      expect(router.adminApiKeysFile).toBeUndefined();
    });
  });

  describe("bad values fail helm lint with the schema's message", () => {
    it("a negative replica count", () => {
      const result = lint({ router: { replicas: -1 } });
      expect(result.status).not.toBe(0);
      expect(result.output).toMatch(/router[./]replicas/);
      expect(result.output).toMatch(/greater than or equal to 0|minimum/);
    });

    it("an unknown key, at the top and inside a section", () => {
      for (const [values, key] of [[{ replicas: 3 }, "replicas"], [{ router: { replicaCount: 3 } }, "replicaCount"]] as const) {
        const result = lint(values);
        expect(result.status).not.toBe(0);
        expect(result.output).toMatch(new RegExp(`${key}.*not allowed|not allowed.*${key}`, "i"));
      }
    });

    it("a value of the wrong kind", () => {
      for (const values of [{ ingress: { streaming: { preset: "envoy" } } }, { router: { logLevel: "verbose" } }, { redis: { url: "redis://:hunter2@redis:6379" } }, { router: { trustedProxies: "10.0.0.0/8" } }]) {
        const result = lint(values);
        expect(result.status, JSON.stringify(values)).not.toBe(0);
        expect(result.output).toMatch(/values don't meet the specifications of the schema|\bat '\//);
      }
    });

    it("combinations the processes would refuse, with a message that says what to do", () => {
      expect(templateError({ operator: { replicas: 2, leaderElection: { enabled: false } } })).toContain("needs operator.leaderElection.enabled");
      expect(templateError({ ingress: { enabled: true, tls: { enabled: true } } })).toContain("ingress.tls.enabled needs ingress.host");
      expect(templateError({ redis: { enabled: true, url: "redis://r:6379" } })).toContain("either redis.enabled");
      expect(templateError({ router: { rateLimit: { points: 600, durationSeconds: 60, burst: 5 } } })).toContain("router.rateLimit.burst (5) must be at least");
      expect(templateError({ apiKeys: { existingSecret: "k", keys: ["a"] } })).toContain("either apiKeys.existingSecret");
      expect(templateError({ adminApiKeys: { existingSecret: "k", keys: ["a"] } })).toContain("either adminApiKeys.existingSecret");
      // A ServiceMonitor on the main port would get 401 with keys on.
      expect(templateError({ apiKeys: { keys: ["a"] }, router: { metricsPort: 0 }, metrics: { serviceMonitor: { enabled: true } } })).toContain("needs router.metricsPort");
      expect(templateError({ ingress: { enabled: true, streaming: { preset: "alb", timeoutSeconds: 7200 } } })).toContain("at most 4000 with the alb preset");
    });
  });
});

