import type { Logger } from "../common/logger.js";
import { RESOURCES, describeKubeError, isNotFound, type KubeClient } from "../common/kube/client.js";
import { kubeTime, type KubeObject } from "../common/kube/types.js";

/**
 * Kubernetes Events on Models, what `kubectl describe model x` shows under "Events". Like
 * client-go's recorder: best effort (a failure is logged, never fails a reconcile), and the same
 * event repeated within ten minutes bumps the count of the existing one instead of adding another.
 */

export type EventType = "Normal" | "Warning";

interface Sent {
  name: string;
  namespace: string;
  count: number;
  firstTimestamp: string;
  at: number;
}

const REPEAT_WINDOW_MS = 10 * 60_000;
const MAX_REMEMBERED = 4096;

export class EventRecorder {
  private readonly sent = new Map<string, Sent>();
  private pending = Promise.resolve();
  private inFlight = 0;
  private sequence = 0;

  constructor(
    private readonly client: KubeClient,
    private readonly component: string,
    private readonly instance: string,
    private readonly logger: Logger,
  ) {}

  /** Records an event about `object`; returns at once (the write happens in the background). */
  record(object: KubeObject, type: EventType, reason: string, message: string): void {
    this.inFlight++;
    // One write at a time: events must never compete with reconciles for the API server.
    this.pending = this.pending
      .then(() => this.write(object, type, reason, message))
      .catch((error: unknown) =>
        this.logger.warn({ reason: describeKubeError(error), event: reason, object: object.metadata.name }, "could not record an event"),
      )
      .finally(() => this.inFlight--);
  }

  /** Resolves once every event recorded so far was written (or failed). */
  async flush(): Promise<void> {
    while (this.inFlight > 0) await this.pending;
  }

  private async write(object: KubeObject, type: EventType, reason: string, message: string): Promise<void> {
    const namespace = object.metadata.namespace ?? "default";
    const key = `${object.metadata.uid}|${type}|${reason}|${message}`;
    const now = new Date();
    const previous = this.sent.get(key);
    if (previous && now.getTime() - previous.at < REPEAT_WINDOW_MS) {
      previous.count++;
      previous.at = now.getTime();
      try {
        await this.client.mergePatch(RESOURCES.events, previous.namespace, previous.name, { count: previous.count, lastTimestamp: kubeTime(now) });
        return;
      } catch (error) {
        if (!isNotFound(error)) throw error;
        // The event expired (events live an hour by default): write a new one.
      }
    }
    const name = `${object.metadata.name}.${now.getTime().toString(16)}${(this.sequence++ % 4096).toString(16).padStart(3, "0")}`;
    const stamp = kubeTime(now);
    await this.client.create(RESOURCES.events, namespace, {
      apiVersion: "v1",
      kind: "Event",
      metadata: { name, namespace },
      involvedObject: {
        apiVersion: object.apiVersion,
        kind: object.kind,
        name: object.metadata.name,
        namespace,
        uid: object.metadata.uid,
        resourceVersion: object.metadata.resourceVersion,
      },
      type,
      reason,
      message: message.slice(0, 1024),
      source: { component: this.component },
      reportingComponent: this.component,
      reportingInstance: this.instance,
      firstTimestamp: stamp,
      lastTimestamp: stamp,
      count: 1,
    });
    if (this.sent.size >= MAX_REMEMBERED) {
      for (const [oldKey, entry] of this.sent) if (now.getTime() - entry.at >= REPEAT_WINDOW_MS || this.sent.size >= MAX_REMEMBERED) this.sent.delete(oldKey);
    }
    this.sent.set(key, { name, namespace, count: 1, firstTimestamp: stamp, at: now.getTime() });
  }
}
