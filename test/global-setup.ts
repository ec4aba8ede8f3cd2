// vitest globalSetup: generate the shared test models once, before any test file runs, so test
// files running in parallel never race to write them.

import { ensureTestModel } from "./helpers/test-models.js";

export default async function setup(): Promise<void> {
  await ensureTestModel("tiny");
  await ensureTestModel("successor");
}
