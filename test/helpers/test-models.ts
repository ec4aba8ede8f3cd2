// Generated test models, cached under <repo>/.cache/test-models (git-ignored). test/global-setup.ts
// makes the tiny and successor models before any test file runs; anything else is made on first use.

import { randomUUID } from "node:crypto";
import { mkdir, rename, rm } from "node:fs/promises";
import path from "node:path";
import { readGguf } from "../../common/gguf/reader.js";
import { PACKAGE_ROOT } from "../../common/package-root.js";
import {
  TEST_MODEL_VERSION,
  TEST_MODEL_VERSION_KEY,
  defaultTestModelType,
  makeTestModel,
  type TestModelKind,
  type TestModelType,
} from "../../common/testmodels/make.js";

export const REPO_ROOT = PACKAGE_ROOT;
export const TEST_MODEL_DIR = path.join(REPO_ROOT, ".cache", "test-models");

export function testModelPath(kind: TestModelKind, type: TestModelType = defaultTestModelType(kind)): string {
  return path.join(TEST_MODEL_DIR, `${kind}-${type}.gguf`);
}

/** True when the file is a whole test model written by this version of the generator. */
async function isCurrent(file: string): Promise<boolean> {
  try {
    const gguf = await readGguf(file);
    return gguf.metadata.get(TEST_MODEL_VERSION_KEY)?.value === TEST_MODEL_VERSION;
  } catch {
    return false;
  }
}

const inFlight = new Map<string, Promise<string>>();

/**
 * Returns the path of the test model, generating it first if it is absent or stale. Safe when
 * several processes race: each writes a uniquely named file and renames it into place, and the
 * files are identical, so whichever rename lands last is as good as the first.
 */
export function ensureTestModel(kind: TestModelKind, type: TestModelType = defaultTestModelType(kind)): Promise<string> {
  const file = testModelPath(kind, type);
  let pending = inFlight.get(file);
  if (pending === undefined) {
    pending = (async () => {
      if (await isCurrent(file)) return file;
      await mkdir(TEST_MODEL_DIR, { recursive: true });
      const unique = `${file}.${process.pid}.${randomUUID()}`;
      try {
        await makeTestModel({ kind, type, out: unique });
        await rename(unique, file);
      } finally {
        await rm(unique, { force: true });
      }
      return file;
    })();
    inFlight.set(file, pending);
    pending.catch(() => inFlight.delete(file));
  }
  return pending;
}
