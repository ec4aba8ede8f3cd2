// A small CEL interpreter for x-kubernetes-validations rules: the practical subset that CRD
// authors write (field access, has(), comparisons, logic, arithmetic, ?:, size(), string
// functions, list macros). No static type checking: type errors show up at evaluation time.
//
// Values: null, boolean, bigint (CEL int/uint), number (CEL double), string, arrays (lists),
// plain objects (maps/objects).

export class CelError extends Error {}

type Node =
  | { t: "lit"; v: CelValue }
  | { t: "ident"; name: string }
  | { t: "select"; obj: Node; field: string }
  | { t: "index"; obj: Node; idx: Node }
  | { t: "call"; fn: string; target?: Node; args: Node[] }
  | { t: "list"; items: Node[] }
  | { t: "map"; entries: [Node, Node][] }
  | { t: "unary"; op: "!" | "-"; x: Node }
  | { t: "binary"; op: string; l: Node; r: Node }
  | { t: "cond"; c: Node; a: Node; b: Node };

export type CelValue = null | boolean | bigint | number | string | CelValue[] | { [k: string]: CelValue };

interface Token {
  k: "num" | "str" | "id" | "op" | "eof";
  v: string;
  val?: CelValue;
  pos: number;
}

const OPS = ["&&", "||", "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "!", "?", ":", "(", ")", "[", "]", "{", "}", ".", ","];

function unescape(body: string, raw: boolean): string {
  if (raw) return body;
  return body.replace(/\\(u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|x[0-9a-fA-F]{2}|[0-7]{3}|.)/g, (_m, e: string) => {
    switch (e[0]) {
      case "n":
        return "\n";
      case "t":
        return "\t";
      case "r":
        return "\r";
      case "a":
        return "\x07";
      case "b":
        return "\b";
      case "f":
        return "\f";
      case "v":
        return "\v";
      case "u":
      case "U":
      case "x":
        return String.fromCodePoint(parseInt(e.slice(1), 16));
      default:
        if (/^[0-7]{3}$/.test(e)) return String.fromCodePoint(parseInt(e, 8));
        return e;
    }
  });
}

function lex(src: string): Token[] {
  const toks: Token[] = [];
  let i = 0;
  while (i < src.length) {
    const ch = src[i]!;
    if (/\s/.test(ch)) {
      i++;
      continue;
    }
    if (ch === "/" && src[i + 1] === "/") {
      while (i < src.length && src[i] !== "\n") i++;
      continue;
    }
    // string literals, optionally raw (r'...') and triple-quoted
    const strStart = src.slice(i).match(/^([rR]?)('''|"""|'|")/);
    if (strStart && (strStart[1] === "" || !/[A-Za-z0-9_]/.test(src[i - 1] ?? ""))) {
      const raw = strStart[1] !== "";
      const q = strStart[2]!;
      let j = i + strStart[0].length;
      let body = "";
      while (j < src.length && !src.startsWith(q, j)) {
        if (!raw && src[j] === "\\") {
          body += src[j]! + (src[j + 1] ?? "");
          j += 2;
          continue;
        }
        body += src[j];
        j++;
      }
      if (j >= src.length) throw new CelError(`Syntax error: unterminated string literal at ${i}`);
      toks.push({ k: "str", v: body, val: unescape(body, raw), pos: i });
      i = j + q.length;
      continue;
    }
    const num = src.slice(i).match(/^(0x[0-9a-fA-F]+u?|\d+\.\d+([eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+u?)/);
    if (num) {
      const text = num[0];
      let val: CelValue;
      if (/^0x/.test(text)) val = BigInt(text.replace(/u$/, ""));
      else if (/[.eE]/.test(text)) val = Number(text);
      else val = BigInt(text.replace(/u$/, ""));
      toks.push({ k: "num", v: text, val, pos: i });
      i += text.length;
      continue;
    }
    const id = src.slice(i).match(/^[A-Za-z_][A-Za-z0-9_]*/);
    if (id) {
      toks.push({ k: "id", v: id[0], pos: i });
      i += id[0].length;
      continue;
    }
    const op = OPS.find((o) => src.startsWith(o, i));
    if (op) {
      toks.push({ k: "op", v: op, pos: i });
      i += op.length;
      continue;
    }
    throw new CelError(`Syntax error: unexpected character '${ch}' at ${i}`);
  }
  toks.push({ k: "eof", v: "", pos: src.length });
  return toks;
}

class Parser {
  private i = 0;
  constructor(private readonly toks: Token[]) {}

  private peek(): Token {
    return this.toks[this.i]!;
  }
  private next(): Token {
    return this.toks[this.i++]!;
  }
  private isOp(v: string): boolean {
    const t = this.peek();
    return t.k === "op" && t.v === v;
  }
  private expect(v: string): void {
    const t = this.next();
    if (t.k !== "op" || t.v !== v) throw new CelError(`Syntax error: expected '${v}' at ${t.pos}, found '${t.v}'`);
  }

  parseAll(): Node {
    const n = this.expr();
    if (this.peek().k !== "eof") throw new CelError(`Syntax error: unexpected '${this.peek().v}' at ${this.peek().pos}`);
    return n;
  }

  expr(): Node {
    const c = this.or();
    if (this.isOp("?")) {
      this.next();
      const a = this.or();
      this.expect(":");
      const b = this.expr();
      return { t: "cond", c, a, b };
    }
    return c;
  }
  private or(): Node {
    let l = this.and();
    while (this.isOp("||")) {
      this.next();
      l = { t: "binary", op: "||", l, r: this.and() };
    }
    return l;
  }
  private and(): Node {
    let l = this.rel();
    while (this.isOp("&&")) {
      this.next();
      l = { t: "binary", op: "&&", l, r: this.rel() };
    }
    return l;
  }
  private rel(): Node {
    let l = this.add();
    for (;;) {
      const t = this.peek();
      if (t.k === "op" && ["==", "!=", "<", "<=", ">", ">="].includes(t.v)) {
        this.next();
        l = { t: "binary", op: t.v, l, r: this.add() };
      } else if (t.k === "id" && t.v === "in") {
        this.next();
        l = { t: "binary", op: "in", l, r: this.add() };
      } else {
        return l;
      }
    }
  }
  private add(): Node {
    let l = this.mul();
    while (this.isOp("+") || this.isOp("-")) {
      const op = this.next().v;
      l = { t: "binary", op, l, r: this.mul() };
    }
    return l;
  }
  private mul(): Node {
    let l = this.unary();
    while (this.isOp("*") || this.isOp("/") || this.isOp("%")) {
      const op = this.next().v;
      l = { t: "binary", op, l, r: this.unary() };
    }
    return l;
  }
  private unary(): Node {
    if (this.isOp("!")) {
      this.next();
      return { t: "unary", op: "!", x: this.unary() };
    }
    if (this.isOp("-")) {
      this.next();
      const t = this.peek();
      if (t.k === "num") {
        // fold negative literals so that -9223372036854775808 parses
        this.next();
        const v = t.val!;
        return this.postfix({ t: "lit", v: typeof v === "bigint" ? -v : -(v as number) });
      }
      return { t: "unary", op: "-", x: this.unary() };
    }
    return this.postfix(this.primary());
  }
  private postfix(n: Node): Node {
    for (;;) {
      if (this.isOp(".")) {
        this.next();
        const id = this.next();
        if (id.k !== "id") throw new CelError(`Syntax error: expected identifier at ${id.pos}`);
        if (this.isOp("(")) {
          this.next();
          const args = this.args(")");
          n = { t: "call", fn: id.v, target: n, args };
        } else {
          n = { t: "select", obj: n, field: id.v };
        }
      } else if (this.isOp("[")) {
        this.next();
        const idx = this.expr();
        this.expect("]");
        n = { t: "index", obj: n, idx };
      } else {
        return n;
      }
    }
  }
  private args(close: string): Node[] {
    const args: Node[] = [];
    if (this.isOp(close)) {
      this.next();
      return args;
    }
    for (;;) {
      args.push(this.expr());
      if (this.isOp(",")) {
        this.next();
        if (this.isOp(close)) {
          this.next();
          return args;
        }
        continue;
      }
      this.expect(close);
      return args;
    }
  }
  private primary(): Node {
    const t = this.next();
    if (t.k === "num" || t.k === "str") return { t: "lit", v: t.val! };
    if (t.k === "id") {
      if (t.v === "true") return { t: "lit", v: true };
      if (t.v === "false") return { t: "lit", v: false };
      if (t.v === "null") return { t: "lit", v: null };
      if (this.isOp("(")) {
        this.next();
        return { t: "call", fn: t.v, args: this.args(")") };
      }
      return { t: "ident", name: t.v };
    }
    if (t.k === "op" && t.v === "(") {
      const e = this.expr();
      this.expect(")");
      return e;
    }
    if (t.k === "op" && t.v === "[") {
      return { t: "list", items: this.args("]") };
    }
    if (t.k === "op" && t.v === "{") {
      const entries: [Node, Node][] = [];
      if (this.isOp("}")) {
        this.next();
        return { t: "map", entries };
      }
      for (;;) {
        const k = this.expr();
        this.expect(":");
        const v = this.expr();
        entries.push([k, v]);
        if (this.isOp(",")) {
          this.next();
          if (this.isOp("}")) {
            this.next();
            break;
          }
          continue;
        }
        this.expect("}");
        break;
      }
      return { t: "map", entries };
    }
    throw new CelError(`Syntax error: unexpected '${t.v || "end of input"}' at ${t.pos}`);
  }
}

const cache = new Map<string, Node>();

/** Parses a CEL expression; throws CelError on syntax errors. */
export function parseCel(src: string): Node {
  let n = cache.get(src);
  if (!n) {
    n = new Parser(lex(src)).parseAll();
    cache.set(src, n);
  }
  return n;
}

/** Reports whether the expression mentions `oldSelf` (a transition rule). */
export function usesOldSelf(src: string): boolean {
  return lex(src).some((t) => t.k === "id" && t.v === "oldSelf");
}

type Env = Map<string, CelValue>;

function typeName(v: CelValue): string {
  if (v === null) return "null_type";
  if (typeof v === "boolean") return "bool";
  if (typeof v === "bigint") return "int";
  if (typeof v === "number") return "double";
  if (typeof v === "string") return "string";
  if (Array.isArray(v)) return "list";
  return "map";
}

function noOverload(fn: string, ...args: CelValue[]): CelError {
  return new CelError(`no such overload: ${fn}(${args.map(typeName).join(", ")})`);
}

const INT64_MAX = 2n ** 63n - 1n;
const INT64_MIN = -(2n ** 63n);

function checkInt(v: bigint): bigint {
  if (v > INT64_MAX || v < INT64_MIN) throw new CelError("integer overflow");
  return v;
}

function isObj(v: CelValue): v is { [k: string]: CelValue } {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

export function celEquals(a: CelValue, b: CelValue): boolean {
  if ((typeof a === "bigint" || typeof a === "number") && (typeof b === "bigint" || typeof b === "number")) {
    return Number(a) === Number(b);
  }
  if (a === null || b === null) return a === b;
  if (typeof a !== typeof b) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    return a.every((x, i) => celEquals(x, b[i]!));
  }
  if (isObj(a)) {
    if (!isObj(b)) return false;
    const ka = Object.keys(a);
    const kb = Object.keys(b);
    if (ka.length !== kb.length) return false;
    return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && celEquals(a[k]!, b[k]!));
  }
  return a === b;
}

function compare(op: string, a: CelValue, b: CelValue): boolean {
  let c: number;
  if ((typeof a === "bigint" || typeof a === "number") && (typeof b === "bigint" || typeof b === "number")) {
    if (typeof a === "bigint" && typeof b === "bigint") c = a < b ? -1 : a > b ? 1 : 0;
    else c = Number(a) < Number(b) ? -1 : Number(a) > Number(b) ? 1 : 0;
  } else if (typeof a === "string" && typeof b === "string") {
    c = a < b ? -1 : a > b ? 1 : 0;
  } else if (typeof a === "boolean" && typeof b === "boolean") {
    c = Number(a) - Number(b);
  } else {
    throw noOverload(op === "<" ? "_<_" : op === "<=" ? "_<=_" : op === ">" ? "_>_" : "_>=_", a, b);
  }
  switch (op) {
    case "<":
      return c < 0;
    case "<=":
      return c <= 0;
    case ">":
      return c > 0;
    default:
      return c >= 0;
  }
}

function asBool(v: CelValue, what: string): boolean {
  if (typeof v !== "boolean") throw new CelError(`no matching overload for '${what}' applied to '(${typeName(v)})'`);
  return v;
}

function size(v: CelValue): bigint {
  if (typeof v === "string") return BigInt([...v].length);
  if (Array.isArray(v)) return BigInt(v.length);
  if (isObj(v)) return BigInt(Object.keys(v).length);
  throw noOverload("size", v);
}

function celString(v: CelValue): string {
  if (typeof v === "string") return v;
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(v);
  if (typeof v === "boolean") return v ? "true" : "false";
  throw noOverload("string", v);
}

function goRegex(re: string): RegExp {
  // RE2 syntax is close enough to JS for the patterns CRDs use; drop inline flags JS lacks.
  let flags = "u";
  let src = re;
  const m = src.match(/^\(\?([imsU]+)\)/);
  if (m) {
    src = src.slice(m[0].length);
    if (m[1]!.includes("i")) flags += "i";
    if (m[1]!.includes("s")) flags += "s";
    if (m[1]!.includes("m")) flags += "m";
  }
  return new RegExp(src, flags);
}

function evalNode(n: Node, env: Env): CelValue {
  switch (n.t) {
    case "lit":
      return n.v;
    case "ident": {
      if (!env.has(n.name)) throw new CelError(`undeclared reference to '${n.name}'`);
      return env.get(n.name)!;
    }
    case "select": {
      const o = evalNode(n.obj, env);
      if (!isObj(o)) throw new CelError(`no such key: ${n.field}`);
      if (!Object.prototype.hasOwnProperty.call(o, n.field)) throw new CelError(`no such key: ${n.field}`);
      return o[n.field]!;
    }
    case "index": {
      const o = evalNode(n.obj, env);
      const i = evalNode(n.idx, env);
      if (Array.isArray(o)) {
        if (typeof i !== "bigint" && !(typeof i === "number" && Number.isInteger(i))) throw noOverload("_[_]", o, i);
        const idx = Number(i);
        if (idx < 0 || idx >= o.length) throw new CelError(`index out of range: ${idx}`);
        return o[idx]!;
      }
      if (isObj(o)) {
        const k = celString(i);
        if (!Object.prototype.hasOwnProperty.call(o, k)) throw new CelError(`no such key: ${k}`);
        return o[k]!;
      }
      throw noOverload("_[_]", o, i);
    }
    case "list":
      return n.items.map((x) => evalNode(x, env));
    case "map": {
      const out: { [k: string]: CelValue } = {};
      for (const [k, v] of n.entries) out[celString(evalNode(k, env))] = evalNode(v, env);
      return out;
    }
    case "unary": {
      const x = evalNode(n.x, env);
      if (n.op === "!") return !asBool(x, "!_");
      if (typeof x === "bigint") return checkInt(-x);
      if (typeof x === "number") return -x;
      throw noOverload("-_", x);
    }
    case "cond": {
      const c = evalNode(n.c, env);
      return asBool(c, "_?_:_") ? evalNode(n.a, env) : evalNode(n.b, env);
    }
    case "binary":
      return evalBinary(n.op, n.l, n.r, env);
    case "call":
      return evalCall(n, env);
  }
}

function evalBinary(op: string, ln: Node, rn: Node, env: Env): CelValue {
  if (op === "&&" || op === "||") {
    // CEL's commutative logic: an error on one side is absorbed when the other side decides.
    let lv: CelValue | undefined;
    let le: unknown;
    try {
      lv = asBool(evalNode(ln, env), op === "&&" ? "_&&_" : "_||_");
    } catch (e) {
      le = e;
    }
    if (op === "&&" && lv === false) return false;
    if (op === "||" && lv === true) return true;
    const rv = asBool(evalNode(rn, env), op === "&&" ? "_&&_" : "_||_");
    if (op === "&&" && rv === false) return false;
    if (op === "||" && rv === true) return true;
    if (le !== undefined) throw le;
    return rv;
  }
  const l = evalNode(ln, env);
  const r = evalNode(rn, env);
  switch (op) {
    case "==":
      return celEquals(l, r);
    case "!=":
      return !celEquals(l, r);
    case "<":
    case "<=":
    case ">":
    case ">=":
      return compare(op, l, r);
    case "in":
      if (Array.isArray(r)) return r.some((x) => celEquals(x, l));
      if (isObj(r)) return Object.prototype.hasOwnProperty.call(r, celString(l));
      throw noOverload("@in", l, r);
    case "+":
      if (typeof l === "bigint" && typeof r === "bigint") return checkInt(l + r);
      if (typeof l === "number" && typeof r === "number") return l + r;
      if (typeof l === "string" && typeof r === "string") return l + r;
      if (Array.isArray(l) && Array.isArray(r)) return [...l, ...r];
      throw noOverload("_+_", l, r);
    case "-":
      if (typeof l === "bigint" && typeof r === "bigint") return checkInt(l - r);
      if (typeof l === "number" && typeof r === "number") return l - r;
      throw noOverload("_-_", l, r);
    case "*":
      if (typeof l === "bigint" && typeof r === "bigint") return checkInt(l * r);
      if (typeof l === "number" && typeof r === "number") return l * r;
      throw noOverload("_*_", l, r);
    case "/":
      if (typeof l === "bigint" && typeof r === "bigint") {
        if (r === 0n) throw new CelError("division by zero");
        return checkInt(l / r);
      }
      if (typeof l === "number" && typeof r === "number") return l / r;
      throw noOverload("_/_", l, r);
    case "%":
      if (typeof l === "bigint" && typeof r === "bigint") {
        if (r === 0n) throw new CelError("modulus by zero");
        return l % r;
      }
      throw noOverload("_%_", l, r);
  }
  throw new CelError(`unknown operator ${op}`);
}

function macroVar(n: Node | undefined, fn: string): string {
  if (!n || n.t !== "ident") throw new CelError(`${fn}() variable name must be a simple identifier`);
  return n.name;
}

function iterItems(target: CelValue, fn: string): CelValue[] {
  if (Array.isArray(target)) return target;
  if (isObj(target)) return Object.keys(target);
  throw noOverload(fn, target);
}

function withVar(env: Env, name: string, v: CelValue): Env {
  const e = new Map(env);
  e.set(name, v);
  return e;
}

function evalCall(n: Extract<Node, { t: "call" }>, env: Env): CelValue {
  // macros first: they do not evaluate their arguments eagerly
  if (!n.target && n.fn === "has") {
    const a = n.args[0];
    if (n.args.length !== 1 || !a || a.t !== "select") throw new CelError("invalid argument to has() macro");
    const o = evalNode(a.obj, env);
    if (isObj(o)) return Object.prototype.hasOwnProperty.call(o, a.field);
    throw noOverload("has", o);
  }
  if (n.target && ["all", "exists", "exists_one", "map", "filter"].includes(n.fn)) {
    const target = evalNode(n.target, env);
    const v = macroVar(n.args[0], n.fn);
    const items = iterItems(target, n.fn);
    switch (n.fn) {
      case "all": {
        let err: unknown;
        for (const it of items) {
          try {
            if (!asBool(evalNode(n.args[1]!, withVar(env, v, it)), "all")) return false;
          } catch (e) {
            err = e;
          }
        }
        if (err !== undefined) throw err;
        return true;
      }
      case "exists": {
        let err: unknown;
        for (const it of items) {
          try {
            if (asBool(evalNode(n.args[1]!, withVar(env, v, it)), "exists")) return true;
          } catch (e) {
            err = e;
          }
        }
        if (err !== undefined) throw err;
        return false;
      }
      case "exists_one":
        return items.filter((it) => asBool(evalNode(n.args[1]!, withVar(env, v, it)), "exists_one")).length === 1;
      case "filter":
        return items.filter((it) => asBool(evalNode(n.args[1]!, withVar(env, v, it)), "filter"));
      case "map":
        if (n.args.length === 3) {
          return items
            .filter((it) => asBool(evalNode(n.args[1]!, withVar(env, v, it)), "map"))
            .map((it) => evalNode(n.args[2]!, withVar(env, v, it)));
        }
        return items.map((it) => evalNode(n.args[1]!, withVar(env, v, it)));
    }
  }

  const args = n.args.map((a) => evalNode(a, env));
  const self = n.target ? evalNode(n.target, env) : undefined;
  const recv = (): CelValue => {
    if (self !== undefined) return self;
    if (args.length === 0) throw new CelError(`no matching overload for '${n.fn}'`);
    return args.shift()!;
  };
  switch (n.fn) {
    case "size":
      return size(recv());
    case "int": {
      const x = recv();
      if (typeof x === "bigint") return x;
      if (typeof x === "number") {
        if (!Number.isFinite(x)) throw new CelError("integer overflow");
        return checkInt(BigInt(Math.trunc(x)));
      }
      if (typeof x === "string") {
        if (!/^[+-]?\d+$/.test(x)) throw new CelError(`cannot convert '${x}' to int`);
        return checkInt(BigInt(x));
      }
      throw noOverload("int", x);
    }
    case "uint":
      return recv() as bigint;
    case "double": {
      const x = recv();
      if (typeof x === "bigint") return Number(x);
      if (typeof x === "number") return x;
      if (typeof x === "string") {
        const d = Number(x);
        if (Number.isNaN(d)) throw new CelError(`cannot convert '${x}' to double`);
        return d;
      }
      throw noOverload("double", x);
    }
    case "string":
      return celString(recv());
    case "bool": {
      const x = recv();
      if (typeof x === "boolean") return x;
      if (x === "true") return true;
      if (x === "false") return false;
      throw noOverload("bool", x);
    }
    case "dyn":
      return recv();
    case "type":
      return typeName(recv());
    case "startsWith":
    case "endsWith":
    case "contains":
    case "matches":
    case "indexOf":
    case "lastIndexOf":
    case "split":
    case "replace":
    case "substring":
    case "lowerAscii":
    case "upperAscii":
    case "trim":
    case "charAt": {
      const s = recv();
      if (typeof s !== "string") {
        if (n.fn === "contains" && Array.isArray(s)) return s.some((x) => celEquals(x, args[0]!));
        throw noOverload(n.fn, s, ...args);
      }
      const a0 = args[0];
      switch (n.fn) {
        case "startsWith":
          return s.startsWith(String(a0));
        case "endsWith":
          return s.endsWith(String(a0));
        case "contains":
          return s.includes(String(a0));
        case "matches":
          return goRegex(String(a0)).test(s);
        case "indexOf":
          return BigInt(s.indexOf(String(a0)));
        case "lastIndexOf":
          return BigInt(s.lastIndexOf(String(a0)));
        case "split":
          return s.split(String(a0));
        case "replace":
          return s.split(String(a0)).join(String(args[1]));
        case "substring":
          return [...s].slice(Number(a0), args[1] === undefined ? undefined : Number(args[1])).join("");
        case "charAt":
          return [...s][Number(a0)] ?? "";
        case "lowerAscii":
          return s.replace(/[A-Z]/g, (c) => c.toLowerCase());
        case "upperAscii":
          return s.replace(/[a-z]/g, (c) => c.toUpperCase());
        case "trim":
          return s.trim();
      }
      break;
    }
    case "join": {
      const l = recv();
      if (!Array.isArray(l)) throw noOverload("join", l);
      return l.map((x) => celString(x)).join(args[0] === undefined ? "" : String(args[0]));
    }
    case "isSorted": {
      const l = recv();
      if (!Array.isArray(l)) throw noOverload("isSorted", l);
      return l.every((x, i) => i === 0 || compare("<=", l[i - 1]!, x));
    }
    case "sum": {
      const l = recv();
      if (!Array.isArray(l)) throw noOverload("sum", l);
      if (l.length === 0) return 0n;
      return l.reduce((acc, x) => evalBinary("+", { t: "lit", v: acc }, { t: "lit", v: x }, env));
    }
    case "min":
    case "max": {
      const l = recv();
      if (!Array.isArray(l) || l.length === 0) throw new CelError(`${n.fn} called on empty list`);
      return l.reduce((acc, x) => (compare(n.fn === "min" ? "<" : ">", x, acc) ? x : acc));
    }
  }
  throw new CelError(`found no matching overload for '${n.fn}'`);
}

/** Evaluates a CEL expression with `vars` bound (self, oldSelf). Throws CelError. */
export function evalCel(src: string, vars: Record<string, CelValue>): CelValue {
  const ast = parseCel(src);
  return evalNode(ast, new Map(Object.entries(vars)));
}
