import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import fp from "fastify-plugin";
import type { App } from "../app.js";
import type { KeyStore } from "../tenants.js";

/** The OpenAPI document of every route registered after it, served at /docs. */
export const docs = fp(
  async function docs(app: App, options: { version: string; keys: KeyStore }): Promise<void> {
    const tenants = options.keys.current;
    await app.register(swagger, {
      openapi: {
        openapi: "3.0.3",
        info: {
          title: "Corral",
          version: options.version,
          description:
            "Corral's public API: text generation with the seed's request shapes, OpenAI-compatible endpoints, and model management. " +
            "Errors answer {\"detail\": \"...\"}. Rate limit: a token bucket per client (see RateLimit-* headers).",
        },
        components: tenants.enabled ? { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } } : {},
        security: tenants.enabled && !tenants.adminOnly ? [{ bearer: [] }] : [],
      },
    });
    await app.register(swaggerUi, { routePrefix: "/docs", staticCSP: true });
  },
  { name: "corral-docs" },
);
