import type { FastifyInstance } from "fastify";
import type { TypeBoxTypeProvider } from "@fastify/type-provider-typebox";
import type { RuntimeMetrics } from "./metrics.js";
import { accounting } from "./plugins/accounting.js";
import { draining } from "./plugins/draining.js";
import { generationRoutes } from "./routes/generation.js";
import { openAiRoutes } from "./routes/openai.js";
import { systemRoutes } from "./routes/system.js";
import type { RuntimeState } from "./state.js";

export interface RuntimeAppOptions {
  state: RuntimeState;
  metrics: RuntimeMetrics;
  maxBatchPrompts: number;
  version: string;
}

export type App = FastifyInstance<any, any, any, any, TypeBoxTypeProvider>;

/**
 * The runtime's HTTP API as a fastify plugin; `run.ts` builds the server and listens. The hooks
 * every request passes come first (503 while draining, then arrivals and request metrics), then
 * one route module per area.
 */
export async function runtimeApp(app: App, options: RuntimeAppOptions): Promise<void> {
  await app.register(draining, options);
  await app.register(accounting, options);
  await app.register(systemRoutes, options);
  await app.register(generationRoutes, options);
  await app.register(openAiRoutes, options);
}
