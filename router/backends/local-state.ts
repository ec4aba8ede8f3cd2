import type { ChildProcess } from "node:child_process";
import type { Endpoint, ModelProgress, ModelState } from "./types.js";

/** One runtime child process of a local model, from spawn to exit. */
export interface Runtime {
  readonly child: ChildProcess;
  /** `<model>#<generation>` on the child's loopback port. */
  readonly endpoint: Endpoint;
  /** Resolves once the child has exited (after the model has handled the exit). */
  readonly exited: Promise<void>;
  /** The last error line of the child's output (or its spawn error), to explain an exit. */
  lastError: string | null;
}

/** Where a start stands before the runtime answers /readyz (the public state while `starting`). */
export type StartPhase = "starting" | "restarting" | "downloading" | "loading";

/**
 * The state of one local model. A field lives in the state it makes sense in, and each timer
 * belongs to one state: `leave()` clears it when the model leaves that state.
 */
export type LocalModelState =
  /** Nothing runs (`not_loaded`). */
  | { readonly kind: "idle" }
  /** Making room under --max-models and picking a port; no child yet. */
  | { readonly kind: "spawning"; readonly phase: "starting" | "restarting"; readonly message: string | null }
  /** A child runs and does not answer /readyz yet (or no longer: then `phase` is `loading`). */
  | {
      readonly kind: "starting";
      readonly runtime: Runtime;
      phase: StartPhase;
      progress: ModelProgress | null;
      /** While restarting: why the previous runtime exited. */
      readonly message: string | null;
      probeTimer?: NodeJS.Timeout;
    }
  /** The child answers /readyz; its endpoint takes requests. */
  | {
      readonly kind: "ready";
      readonly runtime: Runtime;
      readonly endpoints: readonly Endpoint[];
      /** /readyz misses in a row. */
      failedProbes: number;
      probeTimer?: NodeJS.Timeout;
      /** Forgives earlier crashes once the runtime has stayed ready for a while. */
      readonly stableTimer: NodeJS.Timeout;
    }
  /** The runtime crashed after it had served; a new one starts when `timer` fires (`restarting`). */
  | { readonly kind: "backoff"; readonly message: string; readonly timer: NodeJS.Timeout }
  /** It could not start; requests fail with `message` until a load tries again. */
  | { readonly kind: "failed"; readonly message: string }
  /** SIGTERM sent; `killTimer` sends SIGKILL if the runtime does not drain in time. */
  | { readonly kind: "stopping"; readonly runtime: Runtime; readonly killTimer: NodeJS.Timeout; startAfter: boolean };

export type LocalModelKind = LocalModelState["kind"];

const NO_ENDPOINTS: readonly Endpoint[] = [];

/** The state a client sees (types.ts `ModelState`). */
export function publicState(state: LocalModelState): ModelState {
  switch (state.kind) {
    case "idle":
      return "not_loaded";
    case "spawning":
    case "starting":
      return state.phase;
    case "backoff":
      return "restarting";
    default:
      return state.kind;
  }
}

/** Why the model is not ready, for people; null when there is nothing to tell. */
export function messageOf(state: LocalModelState): string | null {
  return state.kind === "spawning" || state.kind === "starting" || state.kind === "backoff" || state.kind === "failed" ? state.message : null;
}

export function progressOf(state: LocalModelState): ModelProgress | null {
  return state.kind === "starting" ? state.progress : null;
}

export function endpointsOf(state: LocalModelState): readonly Endpoint[] {
  return state.kind === "ready" ? state.endpoints : NO_ENDPOINTS;
}

/** The child that runs, if one does (it may be stopping). */
export function runtimeOf(state: LocalModelState): Runtime | undefined {
  return state.kind === "starting" || state.kind === "ready" || state.kind === "stopping" ? state.runtime : undefined;
}

/** Clears the timers that belong to `state`; called when the model leaves it. */
export function leave(state: LocalModelState): void {
  switch (state.kind) {
    case "starting":
      clearTimeout(state.probeTimer);
      break;
    case "ready":
      clearTimeout(state.probeTimer);
      clearTimeout(state.stableTimer);
      break;
    case "backoff":
      clearTimeout(state.timer);
      break;
    case "stopping":
      clearTimeout(state.killTimer);
      break;
    default:
      break;
  }
}
