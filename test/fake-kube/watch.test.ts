import { CoreV1Api, type KubernetesObject, type V1Secret, Watch, makeInformer } from "@kubernetes/client-node";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { type FakeKube, startFakeKube, waitFor } from "./index.js";

let fk: FakeKube;
let core: CoreV1Api;

beforeEach(async () => {
  fk = await startFakeKube({ bookmarkIntervalMs: 50, namespaces: ["w"] });
  core = fk.kubeConfig.makeApiClient(CoreV1Api);
});

afterEach(async () => {
  await fk.close();
});

interface Seen {
  type: string;
  obj: KubernetesObject & { code?: number; message?: string; reason?: string };
}

/** Starts a raw watch and collects its events. */
async function watchSecrets(query: Record<string, string | number | boolean>) {
  const events: Seen[] = [];
  let done: { err: unknown } | undefined;
  const ctl = await new Watch(fk.kubeConfig).watch(
    "/api/v1/namespaces/w/secrets",
    query,
    (type, obj) => events.push({ type, obj }),
    (err) => {
      done = { err };
    },
  );
  return {
    events,
    get done() {
      return done;
    },
    stop: () => ctl.abort(),
    names: (type?: string) => events.filter((e) => !type || e.type === type).map((e) => e.obj.metadata?.name),
  };
}

// Secrets, because every namespace also holds a kube-root-ca.crt ConfigMap
const cm = (name: string, labels: Record<string, string> = {}): V1Secret => ({ metadata: { name, labels }, stringData: { v: "1" } });

describe("watch", () => {
  it("starts with synthetic ADDED events when no resourceVersion is given", async () => {
    await core.createNamespacedSecret({ namespace: "w", body: cm("a") });
    await core.createNamespacedSecret({ namespace: "w", body: cm("b") });
    const w = await watchSecrets({});
    await waitFor(() => w.events.length === 2);
    expect(w.names("ADDED")).toEqual(["a", "b"]);
    await core.createNamespacedSecret({ namespace: "w", body: cm("c") });
    await waitFor(() => w.events.length === 3);
    expect(w.events[2]).toMatchObject({ type: "ADDED", obj: { kind: "Secret", apiVersion: "v1", metadata: { name: "c" } } });
    w.stop();
  });

  it("resumes after a resourceVersion: only later events", async () => {
    await core.createNamespacedSecret({ namespace: "w", body: cm("old") });
    const list = await core.listNamespacedSecret({ namespace: "w" });
    const rv = list.metadata!.resourceVersion!;
    const cmx = await core.createNamespacedSecret({ namespace: "w", body: cm("x") });
    cmx.data = { v: "Mg==" };
    await core.replaceNamespacedSecret({ namespace: "w", name: "x", body: cmx });
    await core.deleteNamespacedSecret({ namespace: "w", name: "old" });
    const w = await watchSecrets({ resourceVersion: rv });
    await waitFor(() => w.events.length === 3);
    expect(w.events.map((e) => `${e.type} ${e.obj.metadata?.name}`)).toEqual(["ADDED x", "MODIFIED x", "DELETED old"]);
    // each event carries the resourceVersion of its write; DELETED the deletion's
    const rvs = w.events.map((e) => Number(e.obj.metadata?.resourceVersion));
    expect(rvs).toEqual([...rvs].sort((a, b) => a - b));
    expect(rvs[2]).toBe(Number(fk.resourceVersion()));
    w.stop();
  });

  it("filters by label and field selectors, turning label changes into ADDED/DELETED", async () => {
    const w = await watchSecrets({ labelSelector: "app=web", resourceVersion: fk.resourceVersion() });
    const byName = await watchSecrets({ fieldSelector: "metadata.name=other", resourceVersion: fk.resourceVersion() });
    const c = await core.createNamespacedSecret({ namespace: "w", body: cm("sel", { app: "db" }) });
    c.metadata!.labels = { app: "web" };
    const c2 = await core.replaceNamespacedSecret({ namespace: "w", name: "sel", body: c });
    c2.metadata!.labels = { app: "db" };
    await core.replaceNamespacedSecret({ namespace: "w", name: "sel", body: c2 });
    await core.createNamespacedSecret({ namespace: "w", body: cm("other") });
    await waitFor(() => w.events.length === 2 && byName.events.length === 1);
    expect(w.events.map((e) => e.type)).toEqual(["ADDED", "DELETED"]);
    expect(byName.names()).toEqual(["other"]);
    w.stop();
    byName.stop();
  });

  it("sends bookmarks when asked to", async () => {
    const w = await watchSecrets({ allowWatchBookmarks: true, resourceVersion: fk.resourceVersion() });
    await waitFor(() => w.events.some((e) => e.type === "BOOKMARK"), { timeoutMs: 2000 });
    const b = w.events.find((e) => e.type === "BOOKMARK")!;
    expect(b.obj).toMatchObject({ kind: "Secret", apiVersion: "v1", metadata: { resourceVersion: fk.resourceVersion() } });
    w.stop();
    const none = await watchSecrets({ resourceVersion: fk.resourceVersion() });
    await new Promise((r) => setTimeout(r, 150));
    expect(none.events).toEqual([]);
    none.stop();
  });

  it("ends the stream after timeoutSeconds", async () => {
    const w = await watchSecrets({ timeoutSeconds: 1, resourceVersion: fk.resourceVersion() });
    await waitFor(() => w.done !== undefined, { timeoutMs: 3000 });
    expect(w.done?.err).toBeNull();
  });

  it("answers a resourceVersion older than the history with a 410 ERROR event", async () => {
    const rv = fk.resourceVersion();
    await core.createNamespacedSecret({ namespace: "w", body: cm("before-compaction") });
    fk.compactHistory();
    const w = await watchSecrets({ resourceVersion: rv });
    await waitFor(() => w.done !== undefined);
    expect(w.events).toHaveLength(1);
    expect(w.events[0]!.type).toBe("ERROR");
    expect(w.events[0]!.obj).toEqual({
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: `too old resource version: ${rv} (${fk.resourceVersion()})`,
      reason: "Expired",
      code: 410,
    });
  });

  it("keeps a bounded history", async () => {
    await fk.close();
    fk = await startFakeKube({ historySize: 3, namespaces: ["w"] });
    core = fk.kubeConfig.makeApiClient(CoreV1Api);
    const rv = fk.resourceVersion();
    for (const n of ["h1", "h2", "h3", "h4"]) await core.createNamespacedSecret({ namespace: "w", body: cm(n) });
    const w = await watchSecrets({ resourceVersion: rv });
    await waitFor(() => w.done !== undefined);
    expect(w.events[0]?.obj.code).toBe(410);
    const recent = await watchSecrets({ resourceVersion: String(Number(fk.resourceVersion()) - 2) });
    await waitFor(() => recent.events.length === 2);
    expect(recent.names()).toEqual(["h3", "h4"]);
    recent.stop();
  });
});

describe("informer (makeInformer)", () => {
  function informer() {
    const inf = makeInformer(fk.kubeConfig, "/api/v1/namespaces/w/secrets", () => core.listNamespacedSecret({ namespace: "w" }));
    const log: string[] = [];
    const errors: unknown[] = [];
    inf.on("add", (o) => log.push(`add ${o.metadata?.name}`));
    inf.on("update", (o) => log.push(`update ${o.metadata?.name}`));
    inf.on("delete", (o) => log.push(`delete ${o.metadata?.name}`));
    inf.on("error", (e) => errors.push(e));
    return { inf, log, errors };
  }

  it("lists, then follows changes", async () => {
    await core.createNamespacedSecret({ namespace: "w", body: cm("i1") });
    const { inf, log } = informer();
    await inf.start();
    expect(log).toEqual(["add i1"]);
    await waitFor(() => fk.openWatches === 1);
    const c = await core.createNamespacedSecret({ namespace: "w", body: cm("i2") });
    c.data = { v: "Mg==" };
    await core.replaceNamespacedSecret({ namespace: "w", name: "i2", body: c });
    await core.deleteNamespacedSecret({ namespace: "w", name: "i1" });
    await waitFor(() => log.length === 4);
    expect(log).toEqual(["add i1", "add i2", "update i2", "delete i1"]);
    expect(inf.list().map((o) => o.metadata?.name)).toEqual(["i2"]);
    await inf.stop();
  });

  it("re-watches from its resourceVersion when the server ends the watch, without relisting", async () => {
    const { inf, log } = informer();
    await inf.start();
    await waitFor(() => fk.openWatches === 1);
    fk.resetRequestLog();
    expect(fk.dropWatches()).toBe(1);
    await core.createNamespacedSecret({ namespace: "w", body: cm("during-outage") });
    await waitFor(() => log.includes("add during-outage"));
    expect(fk.requestCounts("secrets")).toMatchObject({ watch: 1, create: 1 });
    expect(fk.requestCounts("secrets").list).toBeUndefined();
    const watchReq = fk.requestLog.find((e) => e.verb === "watch")!;
    expect(watchReq.path).toMatch(/resourceVersion=\d+/);
    await inf.stop();
  });

  it("relists after 410 Gone and reconciles its cache", async () => {
    await core.createNamespacedSecret({ namespace: "w", body: cm("stays") });
    await core.createNamespacedSecret({ namespace: "w", body: cm("goes") });
    const { inf, log } = informer();
    await inf.start();
    await waitFor(() => fk.openWatches === 1);
    // simulate a long disconnection: changes happen, history is compacted, then the watch breaks
    fk.compactHistory();
    fk.dropWatches();
    fk.resetRequestLog();
    // the informer reconnects with its old resourceVersion, gets ERROR 410, and relists
    await waitFor(() => fk.requestCounts("secrets").list === 1, { message: "the informer did not relist" });
    await waitFor(() => fk.openWatches === 1);
    await core.deleteNamespacedSecret({ namespace: "w", name: "goes" });
    await waitFor(() => log.includes("delete goes"));
    expect(inf.list().map((o) => o.metadata?.name)).toEqual(["stays"]);
    expect(fk.requestCounts("secrets")).toMatchObject({ watch: 2, list: 1 });
    await inf.stop();
  });

  it("stops and reports an error when the connection breaks (client-node 1.x does not retry)", async () => {
    const { inf, errors } = informer();
    await inf.start();
    await waitFor(() => fk.openWatches === 1);
    fk.dropWatches({ abrupt: true });
    await waitFor(() => errors.length === 1);
    await new Promise((r) => setTimeout(r, 100));
    expect(fk.openWatches).toBe(0);
    // the application restarts it
    await inf.start();
    await waitFor(() => fk.openWatches === 1);
    await inf.stop();
  });
});
