import type { Logger } from "../common/logger.js";
import { RESOURCES, describeKubeError, isConflict, type KubeClient } from "../common/kube/client.js";
import { kubeMicroTime, type Lease } from "../common/kube/types.js";

/**
 * Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it:
 *
 * - a candidate takes the Lease when it is free, released, or was not renewed for
 *   leaseDuration — measured on the candidate's own clock from when it last saw the Lease change
 *   (never by comparing renewTime with its clock, so clock skew between nodes does not matter);
 * - every write is a PUT with the Lease's resourceVersion, so two candidates cannot both win;
 * - the leader renews every retryPeriod and stops acting (onStoppedLeading) once it could not
 *   renew for renewDeadline, which is shorter than leaseDuration: it has stopped before anyone
 *   else may take over;
 * - stop() releases the Lease (empty holder), so a standby takes over at its next try rather
 *   than after a whole lease duration.
 */

export interface LeaderElectorOptions {
  client: KubeClient;
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  logger: Logger;
  onStartedLeading: () => void;
  /** Called when leadership is lost or given up; awaited before the Lease is released. */
  onStoppedLeading: () => Promise<void> | void;
  onNewLeader?: (identity: string | undefined) => void;
}

export class LeaderElector {
  private leading = false;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private observed: { resourceVersion?: string; holder?: string | null; at: number } | undefined;
  private lastRenew = 0;
  private lastLeader: string | undefined;

  constructor(private readonly options: LeaderElectorOptions) {}

  isLeader(): boolean {
    return this.leading;
  }

  /** The holder of the Lease as last seen (undefined when none). */
  get leader(): string | undefined {
    return this.lastLeader;
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Stops campaigning; a leader stops acting, then releases the Lease. */
  async stop(options: { release?: boolean } = {}): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.wake?.();
    await this.loop;
    if (this.leading) {
      this.leading = false;
      await this.options.onStoppedLeading();
      if (options.release !== false) await this.release();
    }
  }

  private sleep(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      this.wake = resolve;
      this.timer = setTimeout(resolve, ms);
    });
  }

  private jittered(ms: number): number {
    return ms * (1 + Math.random() * 0.2);
  }

  private async run(): Promise<void> {
    const log = this.options.logger;
    while (!this.stopped) {
      if (!this.leading) {
        if (await this.tryAcquireOrRenew()) {
          if (this.stopped) return;
          this.leading = true;
          this.lastRenew = Date.now();
          log.info({ lease: `${this.options.namespace}/${this.options.name}`, identity: this.options.identity }, "became the leader");
          this.options.onStartedLeading();
          continue;
        }
        await this.sleep(this.jittered(this.options.retryPeriodMs));
        continue;
      }
      await this.sleep(this.options.retryPeriodMs);
      if (this.stopped) return;
      if (await this.tryAcquireOrRenew()) {
        this.lastRenew = Date.now();
        continue;
      }
      const takenOver = this.lastLeader !== undefined && this.lastLeader !== this.options.identity;
      if (takenOver || Date.now() - this.lastRenew >= this.options.renewDeadlineMs) {
        this.leading = false;
        log.warn({ lease: `${this.options.namespace}/${this.options.name}`, sinceRenewMs: Date.now() - this.lastRenew }, "could not renew the lease in time: no longer the leader");
        await this.options.onStoppedLeading();
      }
    }
  }

  private noteLeader(holder: string | null | undefined): void {
    const leader = holder || undefined;
    if (leader !== this.lastLeader) {
      this.lastLeader = leader;
      this.options.onNewLeader?.(leader);
    }
  }

  /** One attempt: true when this candidate holds the Lease afterwards. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const { client, namespace, name, identity } = this.options;
    const now = new Date();
    const durationSeconds = Math.max(1, Math.round(this.options.leaseDurationMs / 1000));
    try {
      // A renewal that takes longer than the time left cannot save leadership: bound it.
      const lease = await withTimeout(client.get<Lease>(RESOURCES.leases, namespace, name), this.options.renewDeadlineMs);
      if (!lease) {
        const created = await client.create<Lease>(RESOURCES.leases, namespace, {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          metadata: { name, namespace },
          spec: { holderIdentity: identity, leaseDurationSeconds: durationSeconds, acquireTime: kubeMicroTime(now), renewTime: kubeMicroTime(now), leaseTransitions: 0 },
        });
        this.observed = { resourceVersion: created.metadata.resourceVersion, holder: identity, at: Date.now() };
        this.noteLeader(identity);
        return true;
      }
      const spec = lease.spec ?? {};
      if (!this.observed || this.observed.resourceVersion !== lease.metadata.resourceVersion) {
        this.observed = { resourceVersion: lease.metadata.resourceVersion, holder: spec.holderIdentity, at: Date.now() };
      }
      this.noteLeader(spec.holderIdentity);
      const holder = spec.holderIdentity;
      const heldByOther = Boolean(holder) && holder !== identity;
      const leaseMs = (spec.leaseDurationSeconds ?? durationSeconds) * 1000;
      if (heldByOther && this.observed.at + leaseMs > Date.now()) return false;
      const updated = await withTimeout(
        client.replace<Lease>(RESOURCES.leases, {
          ...lease,
          spec: {
            holderIdentity: identity,
            leaseDurationSeconds: durationSeconds,
            acquireTime: holder === identity && spec.acquireTime ? spec.acquireTime : kubeMicroTime(now),
            renewTime: kubeMicroTime(now),
            leaseTransitions: (spec.leaseTransitions ?? 0) + (holder === identity ? 0 : 1),
          },
        }),
        this.options.renewDeadlineMs,
      );
      this.observed = { resourceVersion: updated.metadata.resourceVersion, holder: identity, at: Date.now() };
      if (holder !== identity) this.options.logger.info({ previous: holder || null }, "took over the lease");
      this.noteLeader(identity);
      return true;
    } catch (error) {
      if (!isConflict(error)) this.options.logger.debug({ reason: describeKubeError(error) }, "lease attempt failed");
      return false;
    }
  }

  /** Gives the Lease up so a standby takes over at once. */
  private async release(): Promise<void> {
    const { client, namespace, name, identity } = this.options;
    try {
      const lease = await client.get<Lease>(RESOURCES.leases, namespace, name);
      if (!lease || lease.spec?.holderIdentity !== identity) return;
      const now = kubeMicroTime();
      await client.replace(RESOURCES.leases, {
        ...lease,
        spec: { ...lease.spec, holderIdentity: null, leaseDurationSeconds: 1, acquireTime: now, renewTime: now },
      });
      this.options.logger.info("released the lease");
    } catch (error) {
      this.options.logger.warn({ reason: describeKubeError(error) }, "could not release the lease; a standby takes over when it expires");
    }
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`lease request took longer than ${ms} ms`)), ms);
    }),
  ]);
}
