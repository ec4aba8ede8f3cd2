/**
 * How a router chooses a model's endpoint among the ready ones (router/balancer.ts), per router
 * (`--routing`) or per Model (`spec.routing`):
 * - `least-load`: the one with the fewest requests in flight (ties round-robin).
 * - `prefix`: consistent hashing with bounded loads on the request's routing key (the start of
 *   its prompt, see router/routing-key.ts), so requests that share a prompt start land on the
 *   runtime that has it cached; an endpoint over `loadFactor` times the average load is passed
 *   over for the next one on the ring. Without a key: least-load.
 */
export const ROUTING_STRATEGIES = ["least-load", "prefix"] as const;
export type RoutingStrategy = (typeof ROUTING_STRATEGIES)[number];
