// The largest production files and functions of a checkout, by the TypeScript parser (tests,
// bench and scripts left out): `node scripts/code-size.mjs [dir]`; ALL=1 lists every function.
import ts from "typescript";
import { readFileSync } from "node:fs";
import { execSync } from "node:child_process";
const root = process.argv[2] ?? ".";
const files = execSync("git ls-files '*.ts'", { cwd: root }).toString().trim().split("\n")
  .filter((f) => !f.endsWith(".test.ts") && !f.startsWith("test/") && !f.startsWith("bench/") && !f.startsWith("scripts/") && !f.endsWith(".chaos.ts") && !f.startsWith("vitest"));
const fns = []; const fileSizes = [];
for (const f of files) {
  const text = readFileSync(`${root}/${f}`, "utf8");
  fileSizes.push([text.split("\n").length, f]);
  const sf = ts.createSourceFile(f, text, ts.ScriptTarget.Latest, true);
  const visit = (node, owner) => {
    let name;
    if (ts.isFunctionDeclaration(node) || ts.isMethodDeclaration(node)) name = node.name?.getText();
    else if ((ts.isArrowFunction(node) || ts.isFunctionExpression(node)) && ts.isVariableDeclaration(node.parent)) name = node.parent.name.getText();
    else if (ts.isConstructorDeclaration(node)) name = "constructor";
    if (name && node.body) {
      const a = sf.getLineAndCharacterOfPosition(node.getStart()).line, b = sf.getLineAndCharacterOfPosition(node.end).line;
      fns.push([b - a + 1, `${f}: ${owner ? owner + "." : ""}${name}`]);
    }
    const nextOwner = ts.isClassDeclaration(node) ? node.name?.getText() : owner;
    ts.forEachChild(node, (c) => visit(c, nextOwner));
  };
  visit(sf, undefined);
}
fns.sort((a, b) => b[0] - a[0]); fileSizes.sort((a, b) => b[0] - a[0]);
if (process.env.ALL) { for (const [n, f] of fns) console.log(`${n}\t${f}`); process.exit(0); }
console.log("largest files:"); for (const [n, f] of fileSizes.slice(0, 12)) console.log(`  ${n}\t${f}`);
console.log("largest functions:"); for (const [n, f] of fns.slice(0, 15)) console.log(`  ${n}\t${f}`);
