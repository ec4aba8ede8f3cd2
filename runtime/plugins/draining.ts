import fp from "fastify-plugin";
import { serviceUnavailable } from "../../common/errors.js";
import type { App } from "../app.js";
import type { RuntimeState } from "../state.js";

/** While the runtime drains, new generation requests get 503 and their connection is closed. */
export const draining = fp(
  async function draining(app: App, options: { state: RuntimeState }): Promise<void> {
    const { state } = options;
    app.addHook("onRequest", async (request, reply) => {
      if (state.phase === "draining" && request.method === "POST") {
        reply.header("connection", "close");
        throw serviceUnavailable("runtime is shutting down; retry on another replica", 1);
      }
    });
  },
  { name: "corral-runtime-draining" },
);
