/**
 * A restricted pickle VM (protocols 2-5) that understands just enough to read a torch state dict.
 *
 * Why: Python's unpickler imports and calls whatever globals the file names, so a checkpoint is a
 * program. Here a global is only a name: it must be on the caller's allow-list, and "calling" one
 * (REDUCE) runs the caller's pure-JS handler that builds a plain value. Opcodes that create
 * arbitrary objects (INST, OBJ, NEWOBJ, EXT*, ...) are not implemented and are rejected by name.
 * Stack and memo sizes are capped so a hostile file cannot exhaust memory through them.
 */
import { CheckpointError, quote } from '../errors';

/**
 * Python values as plain JS: None → null, int → number (bigint if unsafe), float → PyFloat (so a
 * float is never taken for an int: torch refuses `2.0` as a size), str → string, list → array.
 */
export type PyValue =
  null | boolean | number | PyFloat | bigint | string | Uint8Array | PyValue[] | PyTuple | PyDict | PyGlobal | PyObject;

export class PyFloat {
  constructor(readonly value: number) {}
}

export class PyTuple {
  constructor(readonly items: readonly PyValue[]) {}
}

/** dict and collections.OrderedDict (insertion-ordered either way). */
export class PyDict {
  readonly map = new Map<PyValue, PyValue>();
  /** State set by BUILD (e.g. a state_dict's `_metadata`); kept, never interpreted. */
  state: PyValue = null;
}

/** A reference to an allow-listed global (a class or function); never resolved to code. */
export class PyGlobal {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualname(): string {
    return `${this.module}.${this.name}`;
  }
}

/** Base for values built by the caller's REDUCE handlers or persistent-id loader. */
export abstract class PyObject {
  abstract readonly typeName: string;
}

export interface UnpickleOptions {
  /** Names the file in errors. */
  file: string;
  /**
   * Allowed globals, "module.name" → REDUCE handler, or null for names that may be referenced
   * (e.g. a storage class in a persistent id) but not called.
   */
  globals: ReadonlyMap<string, ((args: readonly PyValue[]) => PyValue) | null>;
  /** Resolves BINPERSID ids; without it BINPERSID is rejected. */
  persistentLoad?: (pid: PyValue) => PyValue;
  /** Extra hint appended to the "not allowed" error for particular globals. */
  globalHints?: ReadonlyMap<string, string>;
  maxStack?: number;
  maxMemo?: number;
}

const OPCODE_NAMES: Record<number, string> = {
  0x28: 'MARK',
  0x2e: 'STOP',
  0x30: 'POP',
  0x31: 'POP_MARK',
  0x32: 'DUP',
  0x46: 'FLOAT',
  0x49: 'INT',
  0x4a: 'BININT',
  0x4b: 'BININT1',
  0x4c: 'LONG',
  0x4d: 'BININT2',
  0x4e: 'NONE',
  0x50: 'PERSID',
  0x51: 'BINPERSID',
  0x52: 'REDUCE',
  0x53: 'STRING',
  0x54: 'BINSTRING',
  0x55: 'SHORT_BINSTRING',
  0x56: 'UNICODE',
  0x58: 'BINUNICODE',
  0x61: 'APPEND',
  0x62: 'BUILD',
  0x63: 'GLOBAL',
  0x64: 'DICT',
  0x7d: 'EMPTY_DICT',
  0x65: 'APPENDS',
  0x67: 'GET',
  0x68: 'BINGET',
  0x69: 'INST',
  0x6a: 'LONG_BINGET',
  0x6c: 'LIST',
  0x5d: 'EMPTY_LIST',
  0x6f: 'OBJ',
  0x70: 'PUT',
  0x71: 'BINPUT',
  0x72: 'LONG_BINPUT',
  0x73: 'SETITEM',
  0x74: 'TUPLE',
  0x29: 'EMPTY_TUPLE',
  0x75: 'SETITEMS',
  0x47: 'BINFLOAT',
  0x80: 'PROTO',
  0x81: 'NEWOBJ',
  0x82: 'EXT1',
  0x83: 'EXT2',
  0x84: 'EXT4',
  0x85: 'TUPLE1',
  0x86: 'TUPLE2',
  0x87: 'TUPLE3',
  0x88: 'NEWTRUE',
  0x89: 'NEWFALSE',
  0x8a: 'LONG1',
  0x8b: 'LONG4',
  0x42: 'BINBYTES',
  0x43: 'SHORT_BINBYTES',
  0x8c: 'SHORT_BINUNICODE',
  0x8d: 'BINUNICODE8',
  0x8e: 'BINBYTES8',
  0x8f: 'EMPTY_SET',
  0x90: 'ADDITEMS',
  0x91: 'FROZENSET',
  0x92: 'NEWOBJ_EX',
  0x93: 'STACK_GLOBAL',
  0x94: 'MEMOIZE',
  0x95: 'FRAME',
  0x96: 'BYTEARRAY8',
  0x97: 'NEXT_BUFFER',
  0x98: 'READONLY_BUFFER',
};

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Runs the pickle in `data` and returns the value left by STOP. */
export function unpickle(data: Uint8Array, opts: UnpickleOptions): PyValue {
  const maxStack = opts.maxStack ?? 1_000_000;
  const maxMemo = opts.maxMemo ?? 1_000_000;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const stack: PyValue[] = [];
  const marks: number[] = [];
  const memo = new Map<number, PyValue>();
  let pos = 0;
  let opStart = 0;

  const fail = (msg: string): never => {
    throw new CheckpointError(`${opts.file}: ${msg} (pickle offset ${opStart})`);
  };
  const need = (n: number): number => {
    if (n < 0 || pos + n > data.length) fail('truncated pickle');
    const at = pos;
    pos += n;
    return at;
  };
  const u8 = () => data[need(1)];
  const u16 = () => view.getUint16(need(2), true);
  const u32 = () => view.getUint32(need(4), true);
  const u64 = (): number => {
    const v = view.getBigUint64(need(8), true);
    return v > BigInt(Number.MAX_SAFE_INTEGER) ? fail(`length ${v} is absurd`) : Number(v);
  };
  const bytes = (n: number) => data.subarray(need(n), pos);
  const text = (n: number): string => {
    const b = bytes(n);
    try {
      return utf8.decode(b);
    } catch {
      return fail('invalid UTF-8 in string');
    }
  };
  const line = (): string => {
    const end = data.indexOf(0x0a, pos);
    if (end < 0) fail('truncated pickle (unterminated line)');
    return text(end - pos + 1).slice(0, -1);
  };
  const push = (v: PyValue) => {
    if (stack.length >= maxStack) fail(`pickle stack exceeds ${maxStack} items`);
    stack.push(v);
  };
  const pop = (): PyValue => {
    if (stack.length <= (marks.length ? marks[marks.length - 1] : 0)) fail('pickle stack underflow');
    return stack.pop() as PyValue;
  };
  const top = (): PyValue => {
    if (stack.length <= (marks.length ? marks[marks.length - 1] : 0)) fail('pickle stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = (): PyValue[] => {
    const m = marks.pop();
    if (m === undefined) return fail('pickle MARK missing');
    return stack.splice(m);
  };
  const put = (i: number) => {
    if (!memo.has(i) && memo.size >= maxMemo) fail(`pickle memo exceeds ${maxMemo} entries`);
    memo.set(i, top());
  };
  const get = (i: number) => {
    if (!memo.has(i)) fail(`pickle memo key ${i} is not set`);
    push(memo.get(i) as PyValue);
  };
  const global = (module: string, name: string): PyGlobal => {
    const q = `${module}.${name}`;
    if (!opts.globals.has(q)) {
      const hint = opts.globalHints?.get(q);
      fail(
        `pickle references global ${quote(q)}, which is not allowed` +
          (hint ? ` (${hint})` : '') +
          ` (allowed: ${[...opts.globals.keys()].join(', ')})`,
      );
    }
    return new PyGlobal(module, name);
  };
  const setItems = (dict: PyValue, items: PyValue[]) => {
    if (!(dict instanceof PyDict)) fail(`SETITEM(S) on ${typeOf(dict)}, expected dict`);
    if (items.length % 2) fail('SETITEMS with an odd number of items');
    for (let i = 0; i < items.length; i += 2) {
      const k = items[i];
      if (k !== null && typeof k === 'object' && !(k instanceof PyTuple)) fail(`unhashable dict key ${typeOf(k)}`);
      (dict as PyDict).map.set(k, items[i + 1]);
    }
  };
  const append = (list: PyValue, items: PyValue[]) => {
    if (!Array.isArray(list)) fail(`APPEND(S) on ${typeOf(list)}, expected list`);
    for (const v of items) (list as PyValue[]).push(v);
  };

  for (;;) {
    opStart = pos;
    const op = u8();
    switch (op) {
      case 0x80: {
        // PROTO
        const v = u8();
        if (v < 2 || v > 5) fail(`unsupported pickle protocol ${v}`);
        break;
      }
      case 0x95:
        u64();
        break; // FRAME: a read-ahead hint, the data is inline anyway
      case 0x2e: {
        // STOP
        const v = pop();
        return v;
      }
      case 0x28: // MARK
        if (marks.length >= maxStack) fail(`pickle has more than ${maxStack} marks`);
        marks.push(stack.length);
        break;
      case 0x30:
        pop();
        break; // POP
      case 0x31:
        popMark();
        break; // POP_MARK
      case 0x32:
        push(top());
        break; // DUP
      case 0x4e:
        push(null);
        break; // NONE
      case 0x88:
        push(true);
        break; // NEWTRUE
      case 0x89:
        push(false);
        break; // NEWFALSE
      case 0x4a:
        push(view.getInt32(need(4), true));
        break; // BININT
      case 0x4b:
        push(u8());
        break; // BININT1
      case 0x4d:
        push(u16());
        break; // BININT2
      case 0x8a:
        push(longLE(bytes(u8())));
        break; // LONG1
      case 0x47:
        push(new PyFloat(view.getFloat64(need(8), false)));
        break; // BINFLOAT (big-endian)
      case 0x58:
        push(text(u32()));
        break; // BINUNICODE
      case 0x8c:
        push(text(u8()));
        break; // SHORT_BINUNICODE
      case 0x8d:
        push(text(u64()));
        break; // BINUNICODE8
      case 0x43:
        push(bytes(u8()).slice());
        break; // SHORT_BINBYTES
      case 0x42:
        push(bytes(u32()).slice());
        break; // BINBYTES
      case 0x8e:
        push(bytes(u64()).slice());
        break; // BINBYTES8
      case 0x7d:
        push(new PyDict());
        break; // EMPTY_DICT
      case 0x5d:
        push([]);
        break; // EMPTY_LIST
      case 0x29:
        push(new PyTuple([]));
        break; // EMPTY_TUPLE
      case 0x74:
        push(new PyTuple(popMark()));
        break; // TUPLE
      case 0x85: {
        const a = pop();
        push(new PyTuple([a]));
        break;
      } // TUPLE1
      case 0x86: {
        const b = pop();
        const a = pop();
        push(new PyTuple([a, b]));
        break;
      } // TUPLE2
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        const a = pop();
        push(new PyTuple([a, b, c]));
        break;
      }
      case 0x64: {
        const d = new PyDict();
        setItems(d, popMark());
        push(d);
        break;
      } // DICT
      case 0x6c:
        push(popMark());
        break; // LIST
      case 0x73: {
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      } // SETITEM
      case 0x75: {
        const items = popMark();
        setItems(top(), items);
        break;
      } // SETITEMS
      case 0x61: {
        const v = pop();
        append(top(), [v]);
        break;
      } // APPEND
      case 0x65: {
        const items = popMark();
        append(top(), items);
        break;
      } // APPENDS
      case 0x71:
        put(u8());
        break; // BINPUT
      case 0x72:
        put(u32());
        break; // LONG_BINPUT
      case 0x94:
        put(memo.size);
        break; // MEMOIZE
      case 0x68:
        get(u8());
        break; // BINGET
      case 0x6a:
        get(u32());
        break; // LONG_BINGET
      case 0x63: {
        // GLOBAL: "module\nname\n"
        const module = line();
        push(global(module, line()));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL needs two strings');
        push(global(module as string, name as string));
        break;
      }
      case 0x52: {
        // REDUCE: callable(*args) — only via the allow-listed handler
        const args = pop();
        const fn = pop();
        if (!(fn instanceof PyGlobal)) return fail(`REDUCE on ${typeOf(fn)}, expected an allowed global`);
        if (!(args instanceof PyTuple)) return fail(`REDUCE arguments for ${fn.qualname} are not a tuple`);
        const handler = opts.globals.get(fn.qualname);
        if (!handler) return fail(`global "${fn.qualname}" may be referenced but not called`);
        try {
          push(handler(args.items));
        } catch (e) {
          if (e instanceof CheckpointError) throw e;
          fail(`${fn.qualname}: ${(e as Error).message}`);
        }
        break;
      }
      case 0x62: {
        // BUILD: only a dict's attribute state (OrderedDict._metadata of a state_dict)
        const state = pop();
        const obj = top();
        if (!(obj instanceof PyDict) || !(state === null || state instanceof PyDict)) {
          fail(`BUILD on ${typeOf(obj)} with ${typeOf(state)} state is not allowed`);
        }
        (obj as PyDict).state = state;
        break;
      }
      case 0x51: {
        // BINPERSID
        const pid = pop();
        if (!opts.persistentLoad) fail('pickle uses persistent ids, which this file type does not allow');
        push(opts.persistentLoad!(pid));
        break;
      }
      default: {
        const name = OPCODE_NAMES[op];
        fail(name ? `pickle opcode ${name} (0x${hex2(op)}) is not supported` : `unknown pickle opcode 0x${hex2(op)}`);
      }
    }
  }
}

/** Little-endian two's complement integer; a number when exactly representable. */
function longLE(b: Uint8Array): number | bigint {
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
  if (b.length && b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}

/** Short, non-recursive description of a value for error messages. */
export function typeOf(v: PyValue): string {
  if (v === null) return 'None';
  if (Array.isArray(v)) return 'list';
  if (v instanceof Uint8Array) return 'bytes';
  if (v instanceof PyTuple) return `tuple of ${v.items.length}`;
  if (v instanceof PyDict) return 'dict';
  if (v instanceof PyGlobal) return `global ${quote(v.qualname)}`;
  if (v instanceof PyFloat) return 'float';
  if (v instanceof PyObject) return v.typeName;
  if (typeof v === 'number') return 'int';
  return typeof v === 'string' ? 'str' : typeof v === 'boolean' ? 'bool' : 'int';
}
