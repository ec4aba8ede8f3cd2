/**
 * Environment every launcher of `corral runtime` gives it (the operator's pods, local mode's
 * child processes, the benchmarks); its arguments come from runtimeArgv() in runtime-command.ts.
 *
 * UV_THREADPOOL_SIZE=1: node-llama-cpp runs each decode and each sampled token as a libuv work
 * item. With libuv's default four workers, consecutive items land on different threads, so the
 * OS keeps waking and moving threads between cores; one worker keeps decode and sampling on one
 * hot thread (~12-15% shorter decode steps at four sequences on a 2-core node, see
 * bench/README.md). Nothing else in the runtime uses the pool while it serves, and the variable
 * only takes effect at process start, so it must be set by whoever starts the process.
 */
export const RUNTIME_PROCESS_ENV: Readonly<Record<string, string>> = { UV_THREADPOOL_SIZE: "1" };

/** RUNTIME_PROCESS_ENV under `env`: a variable the caller set explicitly wins. */
export function withRuntimeProcessEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...RUNTIME_PROCESS_ENV, ...env };
}

/**
 * Whether this process's libuv pool has one worker, so work items run one at a time in the order
 * they were queued. The batch loop then queues a step's sampling right behind its decode (see
 * runtime/decoder.ts). libuv reads the variable when the pool first starts, so the process's
 * start-up environment is what counts.
 */
export function hasSingleThreadPool(env: NodeJS.ProcessEnv = process.env): boolean {
  return Number(env.UV_THREADPOOL_SIZE) === 1;
}
