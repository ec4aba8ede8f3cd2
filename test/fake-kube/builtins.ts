// Defaulting and a subset of validation for built-in kinds (pkg/apis/*/v1/defaults.go and
// pkg/apis/*/validation). Only what an operator is likely to trip over is validated.

import { FieldError, GoRendered, fieldErr, goQuote, goStringMap } from "./errors.js";
import { isPlainObject, deepEqual } from "./schema.js";
import { labelSelectorToRequirements, matchesLabels, type LabelSelectorObject } from "./selectors.js";

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

// ---------------------------------------------------------------------------
// Names and labels (k8s.io/apimachinery/pkg/util/validation)

const DNS1123_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN = `${DNS1123_LABEL}(\\.${DNS1123_LABEL})*`;
const DNS1035_LABEL = "[a-z]([-a-z0-9]*[a-z0-9])?";
const LABEL_VALUE = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const QUALIFIED_NAME = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";

export type NameRule = "subdomain" | "label" | "dns1035";

export function nameErrors(name: string, rule: NameRule): string[] {
  const errs: string[] = [];
  if (rule === "subdomain") {
    if (name.length > 253) errs.push("must be no more than 253 characters");
    if (!new RegExp(`^${DNS1123_SUBDOMAIN}$`).test(name)) {
      errs.push(
        `a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '${DNS1123_SUBDOMAIN}')`,
      );
    }
  } else if (rule === "label") {
    if (name.length > 63) errs.push("must be no more than 63 characters");
    if (!new RegExp(`^${DNS1123_LABEL}$`).test(name)) {
      errs.push(
        `a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '${DNS1123_LABEL}')`,
      );
    }
  } else {
    if (name.length > 63) errs.push("must be no more than 63 characters");
    if (!new RegExp(`^${DNS1035_LABEL}$`).test(name)) {
      errs.push(
        `a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '${DNS1035_LABEL}')`,
      );
    }
  }
  return errs;
}

function labelKeyErrors(key: string): string[] {
  const errs: string[] = [];
  const parts = key.split("/");
  let name = key;
  if (parts.length === 2) {
    const [prefix, n] = parts as [string, string];
    name = n;
    if (prefix.length === 0) errs.push("prefix part must be non-empty");
    else errs.push(...nameErrors(prefix, "subdomain").map((e) => `prefix part ${e}`));
  } else if (parts.length > 2) {
    errs.push(
      `a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '${QUALIFIED_NAME}') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')`,
    );
    return errs;
  }
  if (name.length === 0) errs.push("name part must be non-empty");
  else if (name.length > 63) errs.push("name part must be no more than 63 characters");
  if (name.length > 0 && !new RegExp(`^${QUALIFIED_NAME}$`).test(name)) {
    errs.push(
      `name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '${QUALIFIED_NAME}')`,
    );
  }
  return errs;
}

function labelValueErrors(v: string): string[] {
  const errs: string[] = [];
  if (v.length > 63) errs.push("must be no more than 63 characters");
  if (!new RegExp(`^${LABEL_VALUE}$`).test(v)) {
    errs.push(
      `a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '${LABEL_VALUE}')`,
    );
  }
  return errs;
}

/** ValidateObjectMeta: name, generateName, labels, annotation keys, owner references. */
export function validateObjectMeta(meta: Obj | undefined, rule: NameRule, namespaced: boolean): FieldError[] {
  const errs: FieldError[] = [];
  const m = meta ?? {};
  if (!m.name && !m.generateName) {
    errs.push(fieldErr.required("metadata.name", "name or generateName is required"));
  } else if (typeof m.name === "string" && m.name.length > 0) {
    for (const e of nameErrors(m.name, rule)) errs.push(fieldErr.invalid("metadata.name", m.name, e));
  }
  if (namespaced && !m.namespace) errs.push(fieldErr.required("metadata.namespace", ""));
  for (const [k, v] of Object.entries((m.labels ?? {}) as Record<string, unknown>)) {
    for (const e of labelKeyErrors(k)) errs.push(fieldErr.invalid("metadata.labels", k, e));
    if (typeof v !== "string") continue;
    for (const e of labelValueErrors(v)) errs.push(fieldErr.invalid("metadata.labels", v, e));
  }
  for (const k of Object.keys((m.annotations ?? {}) as Record<string, unknown>)) {
    for (const e of labelKeyErrors(k)) errs.push(fieldErr.invalid("metadata.annotations", k, e));
  }
  const owners = (m.ownerReferences ?? []) as Obj[];
  owners.forEach((o, i) => {
    const p = `metadata.ownerReferences[${i}]`;
    if (!o.apiVersion) errs.push(fieldErr.invalid(`${p}.apiVersion`, o.apiVersion ?? "", "version must not be empty"));
    if (!o.kind) errs.push(fieldErr.invalid(`${p}.kind`, o.kind ?? "", "kind must not be empty"));
    if (!o.name) errs.push(fieldErr.invalid(`${p}.name`, o.name ?? "", "name must not be empty"));
    if (!o.uid) errs.push(fieldErr.invalid(`${p}.uid`, o.uid ?? "", "uid must not be empty"));
  });
  if (owners.filter((o) => o.controller === true).length > 1) {
    errs.push(
      fieldErr.invalid(
        "metadata.ownerReferences",
        new GoRendered("[]v1.OwnerReference{...}"),
        `Only one reference can have Controller set to true. Found "true" in references for ${owners
          .filter((o) => o.controller === true)
          .map((o) => `${o.kind}/${o.name}`)
          .join(" and ")}`,
      ),
    );
  }
  return errs;
}

// ---------------------------------------------------------------------------
// Pod spec defaults (pkg/apis/core/v1/defaults.go)

function imageTagIsLatest(image: string): boolean {
  const noDigest = image.split("@")[0]!;
  if (image.includes("@")) return false;
  const lastSlash = noDigest.lastIndexOf("/");
  const tail = noDigest.slice(lastSlash + 1);
  const colon = tail.indexOf(":");
  return colon < 0 || tail.slice(colon + 1) === "latest";
}

function defaultProbe(p: Obj | undefined): void {
  if (!isPlainObject(p)) return;
  p.timeoutSeconds ??= 1;
  p.periodSeconds ??= 10;
  p.successThreshold ??= 1;
  p.failureThreshold ??= 3;
  if (isPlainObject(p.httpGet)) p.httpGet.scheme ??= "HTTP";
}

function defaultContainer(c: Obj): void {
  if (typeof c.image === "string") c.imagePullPolicy ??= imageTagIsLatest(c.image) ? "Always" : "IfNotPresent";
  c.terminationMessagePath ??= "/dev/termination-log";
  c.terminationMessagePolicy ??= "File";
  c.resources ??= {};
  for (const p of (c.ports ?? []) as Obj[]) p.protocol ??= "TCP";
  for (const e of (c.env ?? []) as Obj[]) {
    if (isPlainObject(e.valueFrom) && isPlainObject(e.valueFrom.fieldRef)) e.valueFrom.fieldRef.apiVersion ??= "v1";
  }
  defaultProbe(c.livenessProbe);
  defaultProbe(c.readinessProbe);
  defaultProbe(c.startupProbe);
}

export function defaultPodSpec(spec: Obj | undefined): void {
  if (!isPlainObject(spec)) return;
  spec.restartPolicy ??= "Always";
  spec.terminationGracePeriodSeconds ??= 30;
  spec.dnsPolicy ??= "ClusterFirst";
  spec.securityContext ??= {};
  spec.schedulerName ??= "default-scheduler";
  for (const c of (spec.containers ?? []) as Obj[]) if (isPlainObject(c)) defaultContainer(c);
  for (const c of (spec.initContainers ?? []) as Obj[]) if (isPlainObject(c)) defaultContainer(c);
  for (const v of (spec.volumes ?? []) as Obj[]) {
    if (!isPlainObject(v)) continue;
    if (isPlainObject(v.configMap)) v.configMap.defaultMode ??= 420;
    if (isPlainObject(v.secret)) v.secret.defaultMode ??= 420;
    if (isPlainObject(v.projected)) v.projected.defaultMode ??= 420;
    if (isPlainObject(v.downwardAPI)) v.downwardAPI.defaultMode ??= 420;
  }
}

function qosClass(spec: Obj): string {
  const containers = [...((spec.containers ?? []) as Obj[]), ...((spec.initContainers ?? []) as Obj[])];
  let any = false;
  let guaranteed = containers.length > 0;
  for (const c of containers) {
    const req = (c.resources?.requests ?? {}) as Obj;
    const lim = (c.resources?.limits ?? {}) as Obj;
    if (Object.keys(req).length > 0 || Object.keys(lim).length > 0) any = true;
    for (const r of ["cpu", "memory"]) {
      if (lim[r] === undefined) guaranteed = false;
      else if (req[r] !== undefined && String(req[r]) !== String(lim[r])) guaranteed = false;
    }
  }
  if (!any) return "BestEffort";
  return guaranteed ? "Guaranteed" : "Burstable";
}

function validateContainers(list: unknown, path: string, required: boolean): FieldError[] {
  const errs: FieldError[] = [];
  if (!Array.isArray(list) || list.length === 0) {
    if (required) errs.push(fieldErr.required(path, ""));
    return errs;
  }
  const names = new Set<string>();
  list.forEach((c: Obj, i: number) => {
    const p = `${path}[${i}]`;
    if (!c?.name) errs.push(fieldErr.required(`${p}.name`, ""));
    else {
      for (const e of nameErrors(String(c.name), "label")) errs.push(fieldErr.invalid(`${p}.name`, c.name, e));
      if (names.has(c.name)) errs.push(fieldErr.duplicate(`${p}.name`, c.name));
      names.add(c.name);
    }
    if (!c?.image) errs.push(fieldErr.required(`${p}.image`, ""));
    ((c?.ports ?? []) as Obj[]).forEach((port, j) => {
      const cp = port.containerPort;
      if (typeof cp !== "number" || cp < 1 || cp > 65535) {
        errs.push(fieldErr.invalid(`${p}.ports[${j}].containerPort`, cp ?? 0, "must be between 1 and 65535, inclusive"));
      }
    });
  });
  return errs;
}

function validatePodSpec(spec: Obj | undefined, path: string): FieldError[] {
  if (!isPlainObject(spec)) return [fieldErr.required(`${path}.containers`, "")];
  return [
    ...validateContainers(spec.containers, `${path}.containers`, true),
    ...validateContainers(spec.initContainers, `${path}.initContainers`, false),
  ];
}

// ---------------------------------------------------------------------------
// Per-kind hooks

export interface BuiltinHooks {
  /** Defaulting on create and update (after the strategy reset the status on create). */
  defaults?(obj: Obj): void;
  /** Runs on create only: resets status, sets initial server-side fields. */
  prepareForCreate?(obj: Obj, ctx: HookContext): void;
  /** Runs on update only: carries over server-owned fields. */
  prepareForUpdate?(obj: Obj, old: Obj): void;
  validate?(obj: Obj, old: Obj | undefined): FieldError[];
  nameRule?: NameRule;
}

export interface HookContext {
  allocateClusterIP(): string;
  allocateNodePort(): number;
}

function labelSelectorGo(sel: LabelSelectorObject | undefined): GoRendered {
  const ml = goStringMap(sel?.matchLabels);
  const me =
    sel?.matchExpressions && sel.matchExpressions.length > 0
      ? `[]v1.LabelSelectorRequirement{${sel.matchExpressions
          .map(
            (e) =>
              `v1.LabelSelectorRequirement{Key:${goQuote(e.key)}, Operator:${goQuote(e.operator)}, Values:[]string{${(e.values ?? [])
                .map(goQuote)
                .join(", ")}}}`,
          )
          .join(", ")}}`
      : "[]v1.LabelSelectorRequirement(nil)";
  return new GoRendered(`v1.LabelSelector{MatchLabels:${ml}, MatchExpressions:${me}}`);
}

function validateWorkload(obj: Obj, old: Obj | undefined, kind: string): FieldError[] {
  const errs: FieldError[] = [];
  const spec = (obj.spec ?? {}) as Obj;
  if (typeof spec.replicas === "number" && spec.replicas < 0) {
    errs.push(fieldErr.invalid("spec.replicas", spec.replicas, "must be greater than or equal to 0"));
  }
  const sel = spec.selector as LabelSelectorObject | undefined;
  if (!sel) {
    errs.push(fieldErr.required("spec.selector", ""));
  } else {
    const reqs = labelSelectorToRequirements(sel);
    if (reqs.length === 0) {
      errs.push(fieldErr.invalid("spec.selector", labelSelectorGo(sel), "empty selector is invalid for deployment"));
    }
    const labels = (spec.template?.metadata?.labels ?? {}) as Record<string, string>;
    if (reqs.length > 0 && !matchesLabels(labels, reqs)) {
      errs.push(
        fieldErr.invalid("spec.template.metadata.labels", new GoRendered(goStringMap(labels)), "`selector` does not match template `labels`"),
      );
    }
    if (old && !deepEqual(old.spec?.selector, sel)) {
      errs.push(fieldErr.invalid("spec.selector", labelSelectorGo(sel), "field is immutable"));
    }
  }
  if (kind !== "DaemonSet") errs.push(...validatePodSpec(spec.template?.spec, "spec.template.spec"));
  const rp = spec.template?.spec?.restartPolicy;
  if (rp !== undefined && rp !== "Always") errs.push(fieldErr.notSupported("spec.template.spec.restartPolicy", rp, ["Always"]));
  return errs;
}

export const BUILTIN_HOOKS: Record<string, BuiltinHooks> = {
  "/namespaces": {
    nameRule: "label",
    prepareForCreate(obj) {
      obj.status = { phase: "Active" };
    },
    defaults(obj) {
      obj.spec ??= {};
      obj.spec.finalizers ??= ["kubernetes"];
      obj.metadata.labels ??= {};
      obj.metadata.labels["kubernetes.io/metadata.name"] = obj.metadata.name;
    },
    prepareForUpdate(obj, old) {
      obj.spec = old.spec;
    },
  },
  "/pods": {
    prepareForCreate(obj) {
      obj.status = { phase: "Pending", qosClass: qosClass(obj.spec ?? {}) };
    },
    defaults(obj) {
      obj.spec ??= {};
      defaultPodSpec(obj.spec);
      obj.spec.enableServiceLinks ??= true;
      obj.spec.priority ??= 0;
      obj.spec.preemptionPolicy ??= "PreemptLowerPriority";
    },
    validate(obj, old) {
      const errs = validatePodSpec(obj.spec, "spec");
      if (old) {
        const strip = (s: Obj | undefined) => {
          const c = structuredClone(s ?? {});
          for (const k of ["containers", "initContainers"]) for (const ctr of (c[k] ?? []) as Obj[]) delete ctr.image;
          delete c.activeDeadlineSeconds;
          delete c.tolerations;
          delete c.terminationGracePeriodSeconds;
          return c;
        };
        if (!deepEqual(strip(obj.spec), strip(old.spec))) {
          errs.push(
            fieldErr.forbidden(
              "spec",
              "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
            ),
          );
        }
      }
      return errs;
    },
  },
  "/services": {
    nameRule: "dns1035",
    prepareForCreate(obj, ctx) {
      obj.status = { loadBalancer: {} };
      const spec = (obj.spec ??= {});
      const type = spec.type ?? "ClusterIP";
      if (type !== "ExternalName" && spec.clusterIP !== "None") {
        if (!spec.clusterIP) spec.clusterIP = ctx.allocateClusterIP();
      }
      if (spec.clusterIP) spec.clusterIPs ??= [spec.clusterIP];
      if (type === "NodePort" || type === "LoadBalancer") {
        for (const p of (spec.ports ?? []) as Obj[]) p.nodePort ??= ctx.allocateNodePort();
        spec.externalTrafficPolicy ??= "Cluster";
      }
    },
    prepareForUpdate(obj, old) {
      const spec = (obj.spec ??= {});
      if (!spec.clusterIP && old.spec?.clusterIP) spec.clusterIP = old.spec.clusterIP;
      if (!spec.clusterIPs && old.spec?.clusterIPs) spec.clusterIPs = old.spec.clusterIPs;
      for (const p of (spec.ports ?? []) as Obj[]) {
        const was = ((old.spec?.ports ?? []) as Obj[]).find((o) => o.port === p.port && (o.protocol ?? "TCP") === (p.protocol ?? "TCP"));
        if (p.nodePort === undefined && was?.nodePort !== undefined && (spec.type === "NodePort" || spec.type === "LoadBalancer")) p.nodePort = was.nodePort;
      }
    },
    defaults(obj) {
      const spec = (obj.spec ??= {});
      spec.type ??= "ClusterIP";
      spec.sessionAffinity ??= "None";
      if (spec.type !== "ExternalName") {
        spec.ipFamilies ??= ["IPv4"];
        spec.ipFamilyPolicy ??= "SingleStack";
        spec.internalTrafficPolicy ??= "Cluster";
      }
      for (const p of (spec.ports ?? []) as Obj[]) {
        p.protocol ??= "TCP";
        if (p.targetPort === undefined) p.targetPort = p.port;
      }
    },
    validate(obj, old) {
      const errs: FieldError[] = [];
      const spec = (obj.spec ?? {}) as Obj;
      if (spec.type !== "ExternalName" && (!Array.isArray(spec.ports) || spec.ports.length === 0) && spec.clusterIP !== "None") {
        errs.push(fieldErr.required("spec.ports", ""));
      }
      ((spec.ports ?? []) as Obj[]).forEach((p, i) => {
        if (typeof p.port !== "number" || p.port < 1 || p.port > 65535) {
          errs.push(fieldErr.invalid(`spec.ports[${i}].port`, p.port ?? 0, "must be between 1 and 65535, inclusive"));
        }
        if ((spec.ports as Obj[]).length > 1 && !p.name) errs.push(fieldErr.required(`spec.ports[${i}].name`, ""));
      });
      const types = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
      if (spec.type && !types.includes(spec.type)) errs.push(fieldErr.notSupported("spec.type", spec.type, types));
      if (old && old.spec?.clusterIP && spec.clusterIP !== old.spec.clusterIP && old.spec.type === spec.type) {
        errs.push(fieldErr.invalid("spec.clusterIPs[0]", new GoRendered(`[]string{${goQuote(String(spec.clusterIP))}}`), "may not change once set"));
      }
      return errs;
    },
  },
  "/persistentvolumeclaims": {
    prepareForCreate(obj) {
      obj.status = { phase: "Pending" };
    },
    defaults(obj) {
      obj.spec ??= {};
      obj.spec.volumeMode ??= "Filesystem";
    },
    validate(obj) {
      const errs: FieldError[] = [];
      const spec = (obj.spec ?? {}) as Obj;
      if (!Array.isArray(spec.accessModes) || spec.accessModes.length === 0) {
        errs.push(fieldErr.required("spec.accessModes", "at least 1 access mode is required"));
      }
      if (!spec.resources?.requests?.storage && !spec.dataSourceRef) {
        errs.push(fieldErr.required("spec.resources[storage]", ""));
      }
      return errs;
    },
  },
  "/secrets": {
    defaults(obj) {
      obj.type ??= "Opaque";
      if (isPlainObject(obj.stringData)) {
        obj.data ??= {};
        for (const [k, v] of Object.entries(obj.stringData)) obj.data[k] = Buffer.from(String(v)).toString("base64");
        delete obj.stringData;
      }
    },
  },
  "apps/deployments": {
    prepareForCreate(obj) {
      obj.status = {};
    },
    defaults(obj) {
      const spec = (obj.spec ??= {});
      spec.replicas ??= 1;
      spec.strategy ??= { type: "RollingUpdate" };
      if (spec.strategy.type === "RollingUpdate" || spec.strategy.type === undefined) {
        spec.strategy.type = "RollingUpdate";
        spec.strategy.rollingUpdate ??= {};
        spec.strategy.rollingUpdate.maxUnavailable ??= "25%";
        spec.strategy.rollingUpdate.maxSurge ??= "25%";
      }
      spec.revisionHistoryLimit ??= 10;
      spec.progressDeadlineSeconds ??= 600;
      defaultPodSpec(spec.template?.spec);
    },
    validate: (obj, old) => validateWorkload(obj, old, "Deployment"),
  },
  "apps/replicasets": {
    prepareForCreate(obj) {
      obj.status = { replicas: 0 };
    },
    defaults(obj) {
      const spec = (obj.spec ??= {});
      spec.replicas ??= 1;
      defaultPodSpec(spec.template?.spec);
    },
    validate: (obj, old) => validateWorkload(obj, old, "ReplicaSet"),
  },
  "apps/statefulsets": {
    prepareForCreate(obj) {
      obj.status = { replicas: 0, availableReplicas: 0 };
    },
    defaults(obj) {
      const spec = (obj.spec ??= {});
      spec.replicas ??= 1;
      spec.podManagementPolicy ??= "OrderedReady";
      spec.updateStrategy ??= { type: "RollingUpdate", rollingUpdate: { partition: 0 } };
      spec.revisionHistoryLimit ??= 10;
      spec.persistentVolumeClaimRetentionPolicy ??= { whenDeleted: "Retain", whenScaled: "Retain" };
      defaultPodSpec(spec.template?.spec);
    },
    validate: (obj, old) => validateWorkload(obj, old, "StatefulSet"),
  },
  "apiextensions.k8s.io/customresourcedefinitions": {
    prepareForCreate(obj) {
      obj.status = {
        conditions: [],
        acceptedNames: { plural: "", kind: "" },
        storedVersions: ((obj.spec?.versions ?? []) as Obj[]).filter((v) => v.storage).map((v) => v.name),
      };
    },
    defaults(obj) {
      const spec = (obj.spec ??= {});
      spec.names ??= {};
      if (spec.names.kind) {
        spec.names.singular ??= String(spec.names.kind).toLowerCase();
        spec.names.listKind ??= `${spec.names.kind}List`;
      }
      spec.conversion ??= { strategy: "None" };
    },
    validate(obj) {
      const errs: FieldError[] = [];
      const spec = (obj.spec ?? {}) as Obj;
      const names = (spec.names ?? {}) as Obj;
      if (!spec.group) errs.push(fieldErr.required("spec.group", ""));
      if (!names.plural) errs.push(fieldErr.required("spec.names.plural", ""));
      if (!names.kind) errs.push(fieldErr.required("spec.names.kind", ""));
      if (spec.scope !== "Namespaced" && spec.scope !== "Cluster") {
        errs.push(fieldErr.notSupported("spec.scope", spec.scope ?? "", ["Cluster", "Namespaced"]));
      }
      if (spec.group && names.plural && obj.metadata?.name !== `${names.plural}.${spec.group}`) {
        errs.push(fieldErr.invalid("metadata.name", obj.metadata?.name ?? "", 'must be spec.names.plural+"."+spec.group'));
      }
      const versions = (spec.versions ?? []) as Obj[];
      if (versions.length === 0) errs.push(fieldErr.invalid("spec.versions", new GoRendered("[]apiextensions.CustomResourceDefinitionVersion(nil)"), "must have exactly one version marked as storage version"));
      else if (versions.filter((v) => v.storage).length !== 1) {
        errs.push(fieldErr.invalid("spec.versions", new GoRendered("[]apiextensions.CustomResourceDefinitionVersion{...}"), "must have exactly one version marked as storage version"));
      }
      versions.forEach((v, i) => {
        if (!v.schema?.openAPIV3Schema) errs.push(fieldErr.required(`spec.versions[${i}].schema.openAPIV3Schema`, "schemas are required"));
      });
      return errs;
    },
  },
};

// ---------------------------------------------------------------------------
// core/v1 Event <-> events.k8s.io/v1 Event

const EVENT_FIELD_MAP: [string, string][] = [
  ["regarding", "involvedObject"],
  ["note", "message"],
  ["reportingController", "reportingComponent"],
  ["deprecatedSource", "source"],
  ["deprecatedFirstTimestamp", "firstTimestamp"],
  ["deprecatedLastTimestamp", "lastTimestamp"],
  ["deprecatedCount", "count"],
];

export function eventsV1ToCore(obj: Obj): Obj {
  const out: Obj = { ...obj, apiVersion: "v1" };
  for (const [a, b] of EVENT_FIELD_MAP) {
    if (a in out) {
      out[b] = out[a];
      delete out[a];
    }
  }
  return out;
}

export function coreToEventsV1(obj: Obj): Obj {
  const out: Obj = { ...obj, apiVersion: "events.k8s.io/v1" };
  for (const [a, b] of EVENT_FIELD_MAP) {
    if (b in out) {
      out[a] = out[b];
      delete out[b];
    }
  }
  return out;
}
