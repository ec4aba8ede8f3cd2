import type { FastifyRequest } from "fastify";
import { forbidden } from "../../common/errors.js";
import { contextOf } from "../request-context.js";
import type { KeyStore } from "../tenants.js";

/** 403 when the request's key may not use the model (its `models` list); anyone else may. */
export function checkModelAccess(keys: KeyStore, request: FastifyRequest, modelId: string): void {
  const tenant = contextOf(request).tenant;
  if (tenant && !keys.current.mayUse(tenant, modelId)) throw forbidden(`key "${tenant.name}" may not use model ${modelId}`);
}

/** What a model listing shows the request's key: the models it may use. */
export function modelFilter(keys: KeyStore, request: FastifyRequest): (modelId: string) => boolean {
  const tenant = contextOf(request).tenant;
  return tenant ? (modelId) => keys.current.mayUse(tenant, modelId) : () => true;
}
