#!/usr/bin/env node
// Keeps `npm ci` working after `npm install` on a registry that lacks some optional packages
// (node-llama-cpp's prebuilt binaries for other platforms). npm leaves such packages out of
// package-lock.json but still lists them as optional dependencies of their parent, and `npm ci`
// then refuses the lock as out of sync. This drops those dangling names. Run it after any
// `npm install` that changes the lock: `node scripts/prune-lock.mjs`.
import { readFileSync, writeFileSync } from "node:fs";

const file = new URL("../package-lock.json", import.meta.url);
const lock = JSON.parse(readFileSync(file, "utf8"));
const present = new Set(Object.keys(lock.packages).map((key) => key.split("node_modules/").pop()));
let pruned = 0;
for (const [key, entry] of Object.entries(lock.packages)) {
  for (const name of Object.keys(entry.optionalDependencies ?? {})) {
    if (present.has(name)) continue;
    delete entry.optionalDependencies[name];
    pruned++;
    console.log(`${key || "(root)"}: dropped unresolvable optional dependency ${name}`);
  }
}
if (pruned > 0) writeFileSync(file, `${JSON.stringify(lock, null, 2)}\n`);
