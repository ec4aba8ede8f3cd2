// The chart on a real API server: every object it renders is accepted and stored (not a dry
// run), with default values and with the optional parts on; then the operator and the router's
// Kubernetes backend run in-process as the chart's own ServiceAccounts (tokens from the
// TokenRequest API), with the settings the chart's Deployments give them, through a Model's whole
// life. The real RBAC authorizer answers every call: one 403 in the audit log fails the suite.

import { randomBytes } from "node:crypto";
import { afterAll, describe, expect, it } from "vitest";
import { KubeClient, RESOURCES } from "../../common/kube/client.js";
import { OPERATOR_SETTINGS, type OperatorConfig } from "../../operator/config.js";
import { realKube } from "../kube/cluster.js";
import { auditEntries, findKubectl, forbidden, installChart, modelLifeCycle, serviceAccountKubeConfig, type InstalledChart } from "../kube/chart.js";
import { findHelm, one, type KubeObject } from "./helm.js";
import { testOperatorConfig } from "../helpers/config.js";

const kube = realKube();
// Looked up (and extracted) only when there is a control plane to use them on.
const { helm, reason: noHelm } = kube ? findHelm() : {};
const { kubectl, reason: noKubectl } = kube ? findKubectl() : {};
if (kube && !helm) console.log(`[chart] skipping the chart-on-a-cluster suite: ${noHelm}`);
if (kube && !kubectl) console.log(`[chart] skipping the chart-on-a-cluster suite: ${noKubectl}`);

const suffix = randomBytes(3).toString("hex");
const RELEASE = "corral";
const admin = kube && new KubeClient(kube.kubeConfig);
const namespaces: string[] = [];

afterAll(async () => {
  for (const ns of namespaces) await admin!.delete(RESOURCES.namespaces, undefined, ns).catch(() => undefined);
});

/** The `apiVersion/kind`s of the objects, sorted, once each: what the server accepted. */
function kinds(objects: readonly KubeObject[]): string[] {
  return [...new Set(objects.map((o) => `${o.apiVersion}/${o.kind}`))].sort();
}

/** The container's literal env values (valueFrom ones are left out). */
function env(deployment: KubeObject, container: string): Record<string, string> {
  const c = (deployment.spec.template.spec.containers as { name: string; env?: { name: string; value?: string }[] }[]).find((c) => c.name === container)!;
  return Object.fromEntries((c.env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value!]));
}

/** The operator settings the chart's Deployment gives it (by env name, as `corral operator` reads them), on test timings. */
function operatorConfigFromChart(deployment: KubeObject): OperatorConfig {
  const vars = env(deployment, "operator");
  const settings: Record<string, unknown> = {};
  for (const spec of OPERATOR_SETTINGS) if (vars[spec.env] !== undefined) settings[spec.key] = vars[spec.env];
  // Loopback, silent, and short lease and progress timings; the rest as the chart deploys it.
  const { host: _h, port: _p, logLevel: _l, leaseDurationSeconds: _d, renewDeadlineSeconds: _r, retryPeriodSeconds: _t, progressSeconds: _g, ...fromChart } = settings;
  return testOperatorConfig(fromChart as Partial<OperatorConfig>);
}

// Stand-ins for the Prometheus Operator's CRDs (not part of the chart; schema-less), so that the
// ServiceMonitor and PodMonitor objects can be applied by name and group.
const MONITORING_CRDS = ["ServiceMonitor", "PodMonitor"].map((kind) => ({
  apiVersion: "apiextensions.k8s.io/v1",
  kind: "CustomResourceDefinition",
  metadata: { name: `${kind.toLowerCase()}s.monitoring.coreos.com` },
  spec: {
    group: "monitoring.coreos.com",
    scope: "Namespaced",
    names: { kind, plural: `${kind.toLowerCase()}s`, singular: kind.toLowerCase(), listKind: `${kind}List` },
    versions: [{ name: "v1", served: true, storage: true, schema: { openAPIV3Schema: { type: "object", "x-kubernetes-preserve-unknown-fields": true } } }],
  },
}));

describe.skipIf(!kube || !helm || !kubectl)("the chart on a real API server", () => {
  let installed: InstalledChart;

  it("every object of the default install is accepted and stored", async () => {
    const namespace = `chart-${suffix}`;
    namespaces.push(namespace);
    installed = await installChart(kube!, { release: RELEASE, namespace });
    expect(installed.stored.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual(installed.objects.map((o) => `${o.kind}/${o.metadata.name}`).sort());
    expect(installed.stored.every((o) => (o.metadata as { uid?: string }).uid)).toBe(true);
    console.log(`[chart] default values: ${installed.objects.length} objects accepted: ${kinds(installed.objects).join(", ")}`);
  });

  it("every object with the optional parts on (Ingress with TLS, Redis, HPA, API keys, monitors) is accepted and stored", async () => {
    const namespace = `chart-opt-${suffix}`;
    namespaces.push(namespace);
    for (const crd of MONITORING_CRDS) await admin!.apply(RESOURCES.customResourceDefinitions, crd, { fieldManager: "corral-tests", force: true });
    const values = {
      crds: { install: false },
      ingress: { enabled: true, host: "llm.example.com", className: "nginx", tls: { enabled: true } },
      redis: { enabled: true },
      router: { autoscaling: { enabled: true } },
      apiKeys: { keys: ["sk-test-1"] },
      operator: { replicas: 2 },
      metrics: { serviceMonitor: { enabled: true }, podMonitor: { enabled: true } },
    };
    const optional = await installChart(kube!, { release: "opt", namespace, values });
    expect(optional.stored.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual(optional.objects.map((o) => `${o.kind}/${o.metadata.name}`).sort());
    const have = kinds(optional.objects);
    for (const kind of ["networking.k8s.io/v1/Ingress", "autoscaling/v2/HorizontalPodAutoscaler", "v1/Secret", "monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PodMonitor"]) {
      expect(have).toContain(kind);
    }
    console.log(`[chart] optional parts on: ${optional.objects.length} objects accepted: ${have.join(", ")}`);
  });

  it("the operator and the router, as the chart's ServiceAccounts, run a Model's whole life with no call forbidden", async () => {
    const { namespace } = installed;
    const operatorDeployment = one(installed.objects, "Deployment", `${RELEASE}-operator`);
    const routerDeployment = one(installed.objects, "Deployment", `${RELEASE}-router`);
    const operatorSA = await serviceAccountKubeConfig(kube!, namespace, operatorDeployment.spec.template.spec.serviceAccountName);
    const routerSA = await serviceAccountKubeConfig(kube!, namespace, routerDeployment.spec.template.spec.serviceAccountName);
    const config = operatorConfigFromChart(operatorDeployment);
    // What the chart deploys: the release namespace only, leader election with a Lease there.
    expect(config).toMatchObject({ namespaces: [namespace], leaderElection: true, leaseName: `${RELEASE}-operator`, leaseNamespace: namespace });
    const routerEnv = env(routerDeployment, "router");
    expect(routerEnv).toMatchObject({ CORRAL_BACKEND: "kubernetes", CORRAL_NAMESPACE: namespace });

    const started = Date.now();
    const report = await modelLifeCycle({
      kube: kube!,
      namespace: routerEnv.CORRAL_NAMESPACE!,
      operator: { kubeConfig: operatorSA.kubeConfig, config },
      router: { kubeConfig: routerSA.kubeConfig, stateConfigMap: routerEnv.CORRAL_STATE_CONFIGMAP },
    });
    console.log(`[chart] a Model's life as the chart's ServiceAccounts in ${((Date.now() - started) / 1000).toFixed(1)} s: phases ${report.phases.join(" -> ")}; steps (ms) ${JSON.stringify(report.steps)}`);
    expect(report.children.sort()).toEqual(["Deployment", "PersistentVolumeClaim", "Service"]);
    expect(report.phases).toEqual(expect.arrayContaining(["ScaledToZero", "Ready"]));
    expect(report.events.map((e) => e.reason)).toContain("ScaledToZero");
    expect(report.lease.holder).toBe(report.operatorIdentity);
    expect(report.currentModel).toEqual({ loaded: "m", unloaded: "(none)" });

    const calls = [...auditEntries(kube!, { user: operatorSA.username }), ...auditEntries(kube!, { user: routerSA.username })];
    expect(calls.filter((c) => c.user === operatorSA.username).length).toBeGreaterThan(10);
    expect(calls.filter((c) => c.user === routerSA.username).length).toBeGreaterThan(3);
    expect(forbidden(calls), "calls the real authorizer refused").toEqual([]);
  }, 180_000);
});
