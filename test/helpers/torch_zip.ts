/**
 * Hand-assembled torch.save archives (zip + protocol-2 pickle), so tests need no Python: the
 * readers' normal inputs, and hostile ones built by changing one piece.
 */
import * as zlib from 'zlib';
import { crc32 } from '../../src/io/zip';

// ---------------------------------------------------------------------------------------------
// Hand-assembled zip archives.

export interface ZEntry {
  name: string;
  data: Uint8Array;
  method?: number;
  /** Overrides: the uncompressed size / CRC written in the headers. */
  size?: number;
  crc?: number;
  /** Writes the size as a zip64 extra field (the 32-bit field becomes 0xFFFFFFFF). */
  zip64Size?: bigint;
}

export function buildZip(entries: ZEntry[], opts: { zip64Eocd?: boolean } = {}): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const method = e.method ?? 0;
    const body = method === 8 ? zlib.deflateRawSync(e.data) : Buffer.from(e.data);
    const name = Buffer.from(e.name, 'utf8');
    const crc = e.crc ?? crc32(e.data);
    const usize = e.zip64Size !== undefined ? 0xffffffff : (e.size ?? e.data.length);
    const csize = method === 0 && e.size !== undefined ? e.size : body.length;
    const extra = Buffer.alloc(e.zip64Size !== undefined ? 12 : 0);
    if (e.zip64Size !== undefined) {
      extra.writeUInt16LE(1, 0);
      extra.writeUInt16LE(8, 2);
      extra.writeBigUInt64LE(e.zip64Size, 4);
    }
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(20, 4);
    lh.writeUInt16LE(method, 8);
    lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(csize, 18);
    lh.writeUInt32LE(usize, 22);
    lh.writeUInt16LE(name.length, 26);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0);
    ch.writeUInt16LE(20, 4);
    ch.writeUInt16LE(20, 6);
    ch.writeUInt16LE(method, 10);
    ch.writeUInt32LE(crc, 16);
    ch.writeUInt32LE(csize, 20);
    ch.writeUInt32LE(usize, 24);
    ch.writeUInt16LE(name.length, 28);
    ch.writeUInt16LE(extra.length, 30);
    ch.writeUInt32LE(offset, 42);
    locals.push(lh, name, body);
    centrals.push(ch, name, extra);
    offset += 30 + name.length + body.length;
  }
  const dir = Buffer.concat(centrals);
  const tail: Buffer[] = [];
  if (opts.zip64Eocd) {
    const z = Buffer.alloc(56);
    z.writeUInt32LE(0x06064b50, 0);
    z.writeBigUInt64LE(44n, 4);
    z.writeBigUInt64LE(BigInt(entries.length), 24);
    z.writeBigUInt64LE(BigInt(entries.length), 32);
    z.writeBigUInt64LE(BigInt(dir.length), 40);
    z.writeBigUInt64LE(BigInt(offset), 48);
    const loc = Buffer.alloc(20);
    loc.writeUInt32LE(0x07064b50, 0);
    loc.writeBigUInt64LE(BigInt(offset + dir.length), 8);
    loc.writeUInt32LE(1, 16);
    tail.push(z, loc);
  }
  const eocd = Buffer.alloc(22);
  eocd.writeUInt32LE(0x06054b50, 0);
  eocd.writeUInt16LE(opts.zip64Eocd ? 0xffff : entries.length, 8);
  eocd.writeUInt16LE(opts.zip64Eocd ? 0xffff : entries.length, 10);
  eocd.writeUInt32LE(opts.zip64Eocd ? 0xffffffff : dir.length, 12);
  eocd.writeUInt32LE(opts.zip64Eocd ? 0xffffffff : offset, 16);
  return Buffer.concat([...locals, dir, ...tail, eocd]);
}

// ---------------------------------------------------------------------------------------------
// Hand-assembled pickles (protocol 2, the opcodes torch.save emits).

export type Ops = number[];
export const enc = (s: string) => [...Buffer.from(s, 'utf8')];
export const u32le = (n: number) => [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24];
export const P = {
  proto: (v = 2): Ops => [0x80, v],
  stop: [0x2e],
  mark: [0x28],
  none: [0x4e],
  false: [0x89],
  emptyDict: [0x7d],
  emptyTuple: [0x29],
  reduce: [0x52],
  binpersid: [0x51],
  setitems: [0x75],
  str: (s: string): Ops => [0x58, ...u32le(Buffer.byteLength(s)), ...enc(s)],
  shortStr: (s: string): Ops => [0x8c, Buffer.byteLength(s), ...enc(s)],
  int: (n: number): Ops => (n >= 0 && n < 256 ? [0x4b, n] : [0x4a, ...u32le(n >>> 0)]),
  /** BINFLOAT: a Python float (big-endian double). */
  float: (x: number): Ops => {
    const b = Buffer.alloc(8);
    b.writeDoubleBE(x);
    return [0x47, ...b];
  },
  /** LONG1 with 8 bytes: values past int32. */
  long: (n: bigint): Ops => {
    const b = Buffer.alloc(8);
    b.writeBigInt64LE(n);
    return [0x8a, 8, ...b];
  },
  global: (m: string, n: string): Ops => [0x63, ...enc(`${m}\n${n}\n`)],
  stackGlobal: (m: string, n: string): Ops => [...P.shortStr(m), ...P.shortStr(n), 0x93],
  tuple: (...items: Ops[]): Ops => [0x28, ...items.flat(), 0x74],
};
export const call = (fn: Ops, ...args: Ops[]): Ops => [...fn, ...P.tuple(...args), ...P.reduce];

export interface TSpec {
  cls?: string;
  key?: string;
  numel: number;
  offset?: number;
  size: Ops[];
  stride: Ops[];
}
/** _rebuild_tensor_v2(('storage', torch.<cls>, key, 'cpu', numel) via BINPERSID, offset, size, stride, False, OrderedDict()) */
export function tensor(t: TSpec): Ops {
  return call(
    P.global('torch._utils', '_rebuild_tensor_v2'),
    [
      ...P.tuple(
        P.str('storage'),
        P.global('torch', t.cls ?? 'FloatStorage'),
        P.str(t.key ?? '0'),
        P.str('cpu'),
        P.int(t.numel),
      ),
      ...P.binpersid,
    ],
    P.int(t.offset ?? 0),
    P.tuple(...t.size),
    P.tuple(...t.stride),
    P.false,
    call(P.global('collections', 'OrderedDict')),
  );
}
/** {name: value, ...} as torch writes a state dict. */
export function stateDict(items: [string, Ops][]): Uint8Array {
  return Uint8Array.from([
    ...P.proto(),
    ...P.emptyDict,
    ...P.mark,
    ...items.flatMap(([k, v]) => [...P.str(k), ...v]),
    ...P.setitems,
    ...P.stop,
  ]);
}
export const ints = (...ns: number[]) => ns.map(P.int);

/** A torch.save-style archive: archive/data.pkl, archive/data/<key>, archive/version. */
export function torchZip(pkl: Uint8Array, storages: Record<string, Uint8Array>, extra: ZEntry[] = []): Buffer {
  return buildZip([
    { name: 'archive/data.pkl', data: pkl },
    ...Object.entries(storages).map(([k, data]) => ({ name: `archive/data/${k}`, data })),
    { name: 'archive/version', data: Buffer.from('3\n') },
    ...extra,
  ]);
}
export const f32bytes = (...v: number[]) => new Uint8Array(new Float32Array(v).buffer);
