/**
 * TorchBinFile (torch.save zip + restricted pickle): real fixtures read bit-exactly, and hostile
 * archives/pickles (hand-assembled here, so the test needs no Python) rejected with clear errors
 * and without touching the disk.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { CheckpointError } from '../src/errors';
import { f16BitsToF32, f32ToF16Bits } from '../src/io/dtype';
import { PyDict, unpickle } from '../src/io/pickle';
import { SafetensorsFile } from '../src/io/safetensors';
import { TorchBinFile } from '../src/io/torch_bin';
import { ZipReader, crc32 } from '../src/io/zip';
import { Ops, P, buildZip, call, enc, f32bytes, ints, stateDict, tensor, torchZip } from './helpers/torch_zip';
import { readJson } from './helpers/json';

const FIX = path.join(__dirname, 'fixtures');
const TB = path.join(FIX, 'torch_bin');
let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'torchbin-test-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// Rejection harness: the file must be refused with a CheckpointError naming it, and nothing written.

function listing(dir: string): string[] {
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: false })
    .map((n) => {
      const st = fs.statSync(path.join(dir, String(n)));
      return `${String(n)} ${st.size} ${st.mtimeMs}`;
    })
    .sort();
}

function write(name: string, bytes: Uint8Array): string {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, bytes);
  return p;
}

/** Opens (and reads every tensor of) `bytes`; expects a CheckpointError matching all patterns. */
function expectRejected(name: string, bytes: Uint8Array, ...patterns: (string | RegExp)[]): string {
  const p = write(name, bytes);
  const before = listing(tmp);
  const fixturesBefore = listing(TB);
  let err: unknown;
  try {
    const f = TorchBinFile.open(p);
    try {
      for (const k of f.keys()) f.read(k);
    } finally {
      f.close();
    }
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(CheckpointError);
  const msg = (err as Error).message;
  expect(msg.startsWith(p + ':')).toBe(true);
  for (const pat of patterns) expect(msg).toMatch(pat);
  expect(listing(tmp)).toEqual(before);
  expect(listing(TB)).toEqual(fixturesBefore);
  return msg;
}

const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

// ---------------------------------------------------------------------------------------------

describe('real torch.save fixtures', () => {
  const cases = ['s336_llava15_pad_mlp2x', 's336_llava_square_mlp2x'];
  test.each(cases)('%s mm_projector.bin equals the model.mm_projector.* shard tensors bit for bit', (c) => {
    const dir = path.join(FIX, 'cases', c, 'llava');
    const index = readJson<{ weight_map: Record<string, string> }>(path.join(dir, 'model.safetensors.index.json'));
    const expectedKeys = Object.keys(index.weight_map)
      .filter((k) => k.startsWith('model.mm_projector.'))
      .sort();
    const f = TorchBinFile.open(path.join(dir, 'mm_projector.bin'));
    try {
      expect(f.keys()).toEqual(expectedKeys);
      expect(f.has('model.mm_projector.0.weight')).toBe(true);
      expect(f.has('model.mm_projector.1.weight')).toBe(false);
      for (const k of expectedKeys) {
        const st = SafetensorsFile.open(path.join(dir, index.weight_map[k]));
        try {
          const want = st.readFloat32(k);
          const info = f.info(k);
          expect(info).toMatchObject({ name: k, dtype: 'F32', shape: st.info(k).shape, offset: 0 });
          expect(typeof info.storageKey).toBe('string');
          const got = f.readFloat32(k);
          expect(got.length).toBe(want.length);
          expect(
            Buffer.compare(
              Buffer.from(bits(got).buffer, got.byteOffset, got.byteLength),
              Buffer.from(bits(want).buffer, want.byteOffset, want.byteLength),
            ),
          ).toBe(0);
          const raw = f.read(k);
          expect(raw.dtype).toBe('F32');
          expect(raw.shape).toEqual(st.info(k).shape);
          expect(Buffer.from(raw.data).equals(Buffer.from(st.read(k).data))).toBe(true);
        } finally {
          st.close();
        }
      }
      expect(() => f.info('nope')).toThrow(/no tensor "nope"/);
    } finally {
      f.close();
    }
  });

  /** The expected raw bytes were written by tools/dev/gen_torch_bin_fixtures.py next to each file. */
  test.each(['state_dict_f16.bin', 'views_bf16.bin'])('%s: every tensor matches torch byte for byte', (file) => {
    const expected = readJson<Record<string, { dtype: string; shape: number[]; hex: string }>>(
      path.join(TB, file + '.expected.json'),
    );
    const f = TorchBinFile.open(path.join(TB, file));
    try {
      expect(f.keys()).toEqual(Object.keys(expected).sort());
      for (const [k, e] of Object.entries(expected)) {
        const r = f.read(k);
        expect({ k, dtype: r.dtype, shape: r.shape, hex: Buffer.from(r.data).toString('hex') }).toEqual({
          k,
          dtype: e.dtype,
          shape: e.shape,
          hex: e.hex,
        });
      }
    } finally {
      f.close();
    }
  });

  test('F16 nn.Module state_dict (OrderedDict + _metadata via BUILD) decodes to float32', () => {
    const f = TorchBinFile.open(path.join(TB, 'state_dict_f16.bin'));
    try {
      expect(f.keys()).toEqual(['0.bias', '0.weight', '2.bias', '2.weight']);
      expect(f.info('0.weight')).toMatchObject({ dtype: 'F16', shape: [3, 4], stride: [4, 1], offset: 0 });
      // values(n, f16, 0.1) = (arange(n) - n/3) * 0.1 rounded to half: spot-check exact halves.
      const w = f.readFloat32('0.weight');
      expect(w.length).toBe(12);
      expect(w[4]).toBe(0); // (4 - 4) * 0.1
      expect(w[5]).toBe(f16BitsToF32(f32ToF16Bits(0.1))); // 0.1 rounded to half
    } finally {
      f.close();
    }
  });

  test('BF16 views: transposed, offset slices, strided, broadcast, scalar, empty; Parameter; int/bool dtypes', () => {
    const f = TorchBinFile.open(path.join(TB, 'views_bf16.bin'));
    try {
      const m = f.info('bf16.matrix');
      const t = f.info('bf16.transposed');
      const rows = f.info('bf16.rows_1_3');
      expect(t).toMatchObject({ dtype: 'BF16', shape: [6, 4], stride: [1, 6], storageKey: m.storageKey });
      expect(rows).toMatchObject({ shape: [2, 6], offset: 6, storageKey: m.storageKey });
      expect(f.info('bf16.broadcast').stride).toEqual([0, 1]);
      expect(f.info('bf16.scalar')).toMatchObject({ shape: [], stride: [] });
      const mat = f.readFloat32('bf16.matrix');
      const tr = f.readFloat32('bf16.transposed');
      for (let i = 0; i < 4; i++) for (let j = 0; j < 6; j++) expect(tr[j * 4 + i]).toBe(mat[i * 6 + j]);
      expect([...f.readFloat32('bf16.rows_1_3')]).toEqual([...mat.subarray(6, 18)]);
      expect([...f.readFloat32('bf16.scalar')]).toEqual([1.5]);
      expect(f.readFloat32('bf16.empty').length).toBe(0);
      expect([...f.readFloat32('bf16.broadcast')]).toEqual([1, -2, 1, -2, 1, -2]);
      expect(f.info('f32.param')).toMatchObject({ dtype: 'F32', shape: [5] });
      expect(f.info('i64.position_ids')).toMatchObject({ dtype: 'I64', shape: [1, 7] });
      expect(() => f.readFloat32('i64.position_ids')).toThrow(/dtype I64 cannot be read as float32/);
      expect([...new BigInt64Array(f.read('i64.position_ids').data.slice().buffer)]).toEqual([
        0n,
        1n,
        2n,
        3n,
        4n,
        5n,
        6n,
      ]);
      expect([...f.read('bool.mask').data]).toEqual([1, 0, 1]);
    } finally {
      f.close();
    }
  });

  test('tiny CLIP vision tower pytorch_model.bin equals its safetensors source', () => {
    const f = TorchBinFile.open(path.join(TB, 'tiny_clip_vision_f16', 'pytorch_model.bin'));
    const st = SafetensorsFile.open(path.join(FIX, 'cases', 'tiny_clip_vision_only_f16', 'model', 'model.safetensors'));
    try {
      expect(f.keys()).toEqual([...st.keys(), 'vision_model.embeddings.position_ids'].sort());
      for (const k of st.keys()) {
        const a = f.read(k);
        const b = st.read(k);
        expect([k, a.dtype, a.shape]).toEqual([k, b.dtype, b.shape]);
        expect(Buffer.from(a.data).equals(Buffer.from(b.data))).toBe(true);
      }
      const n = st.info('vision_model.embeddings.position_embedding.weight').shape[0];
      expect(f.info('vision_model.embeddings.position_ids')).toMatchObject({ dtype: 'I64', shape: [1, n] });
    } finally {
      f.close();
      st.close();
    }
  });

  test('a deflated data.pkl and a zip64 end-of-central-directory read the same; deflated storages are refused', () => {
    const src = path.join(FIX, 'cases', 's336_llava15_pad_mlp2x', 'llava', 'mm_projector.bin');
    const zip = ZipReader.open(src);
    const entries = zip
      .entries()
      .map((e) => ({ name: e.name, data: zip.read(e.name), method: e.name.endsWith('data.pkl') ? 8 : 0 }));
    zip.close();
    const p = write('deflated.bin', buildZip(entries, { zip64Eocd: true }));
    const a = TorchBinFile.open(src);
    const b = TorchBinFile.open(p);
    try {
      expect(b.keys()).toEqual(a.keys());
      for (const k of a.keys()) expect(Buffer.from(b.read(k).data).equals(Buffer.from(a.read(k).data))).toBe(true);
    } finally {
      a.close();
      b.close();
    }
    // torch.save never compresses tensor data; a deflated storage is refused when the file is opened.
    expectRejected(
      'deflated_storages.bin',
      buildZip(entries.map((e) => ({ ...e, method: 8 }))),
      'storage "0" is compressed (zip method 8)',
      're-save it with torch.save',
    );
  });

  test('the hand-assembled archive builder makes files the reader accepts', () => {
    const pkl = stateDict([
      ['w', tensor({ numel: 6, size: ints(2, 3), stride: ints(3, 1) })],
      ['row1', tensor({ numel: 6, offset: 3, size: ints(3), stride: ints(1) })],
    ]);
    const p = write(
      'ok.bin',
      torchZip(pkl, { 0: f32bytes(1, 2, 3, 4, 5, 6) }, [{ name: 'archive/byteorder', data: Buffer.from('little') }]),
    );
    const f = TorchBinFile.open(p);
    try {
      expect([...f.readFloat32('w')]).toEqual([1, 2, 3, 4, 5, 6]);
      expect([...f.readFloat32('row1')]).toEqual([4, 5, 6]);
    } finally {
      f.close();
    }
  });
});

describe('hostile pickles are refused without executing anything', () => {
  const allowedList = /\(allowed: collections\.OrderedDict, torch\._utils\._rebuild_tensor_v2, /;
  const pwned = () => path.join(tmp, 'pwned');
  const zipOf = (ops: Ops) => torchZip(Uint8Array.from(ops), {});

  test('os.system via GLOBAL + REDUCE', () => {
    const ops = [...P.proto(), ...call(P.global('os', 'system'), P.str(`touch ${pwned()}`)), ...P.stop];
    expectRejected(
      'os_system.bin',
      zipOf(ops),
      'pickle references global "os.system", which is not allowed',
      allowedList,
      /pickle offset 2\)/,
    );
    expect(fs.existsSync(pwned())).toBe(false);
  });

  test('builtins.eval via GLOBAL', () => {
    const ops = [...P.proto(), ...call(P.global('builtins', 'eval'), P.str('__import__("os")')), ...P.stop];
    expectRejected('eval.bin', zipOf(ops), 'global "builtins.eval", which is not allowed');
  });

  test('posix.system via STACK_GLOBAL (protocol 4)', () => {
    const ops = [...P.proto(4), ...call(P.stackGlobal('posix', 'system'), P.str(`touch ${pwned()}`)), ...P.stop];
    expectRejected('posix_system.bin', zipOf(ops), 'global "posix.system", which is not allowed');
    expect(fs.existsSync(pwned())).toBe(false);
  });

  test('torch.storage._load_from_bytes (a nested full pickle) inside a state dict', () => {
    const pkl = stateDict([['w', call(P.global('torch.storage', '_load_from_bytes'), [0x43, 1, 0x80])]]);
    expectRejected(
      'load_from_bytes.bin',
      torchZip(pkl, {}),
      'global "torch.storage._load_from_bytes", which is not allowed (it would unpickle nested bytes',
    );
  });

  test('a hostile class smuggled in as the storage type of a persistent id', () => {
    const pkl = stateDict([['w', tensor({ cls: 'nn.Module', numel: 1, size: ints(1), stride: ints(1) })]]);
    expectRejected('bad_storage_cls.bin', torchZip(pkl, { 0: f32bytes(1) }), 'global "torch.nn.Module"');
  });

  test('an allowed class may be referenced but not called', () => {
    const ops = [...P.proto(), ...call(P.global('torch', 'FloatStorage'), P.int(1)), ...P.stop];
    expectRejected('call_storage.bin', zipOf(ops), 'global "torch.FloatStorage" may be referenced but not called');
  });

  test('unknown and unsupported opcodes are named with their offset', () => {
    expectRejected('op_ff.bin', zipOf([...P.proto(), 0xff]), 'unknown pickle opcode 0xff (pickle offset 2)');
    expectRejected(
      'op_inst.bin',
      zipOf([...P.proto(), 0x69, ...enc('os\nsystem\n')]),
      'pickle opcode INST (0x69) is not supported (pickle offset 2)',
    );
    expectRejected(
      'op_newobj.bin',
      zipOf([...P.proto(), ...P.global('collections', 'OrderedDict'), ...P.emptyTuple, 0x81]),
      'NEWOBJ',
    );
  });

  test('BUILD on anything but a dict is refused', () => {
    const ops = [
      ...P.proto(),
      ...P.emptyDict,
      ...P.mark,
      ...P.str('w'),
      ...tensor({ numel: 1, size: ints(1), stride: ints(1) }),
      ...P.emptyDict,
      0x62,
      ...P.setitems,
      ...P.stop,
    ];
    expectRejected('build.bin', torchZip(Uint8Array.from(ops), { 0: f32bytes(1) }), 'BUILD on tensor');
  });

  test('truncated pickles, wrong top-level objects and non-tensor values', () => {
    expectRejected('trunc.bin', zipOf([...P.proto(), 0x58, 100, 0, 0, 0, 65]), 'truncated pickle');
    expectRejected('list.bin', zipOf([...P.proto(), 0x5d, ...P.stop]), 'top-level object is list, expected a dict');
    expectRejected('notensor.bin', torchZip(stateDict([['x', P.int(3)]]), {}), '"x" is int, not a tensor');
    expectRejected('proto1.bin', zipOf([...P.proto(1), ...P.none, ...P.stop]), 'unsupported pickle protocol 1');
  });

  test('stack and memo limits stop resource blow-ups', () => {
    // Default limit through the file reader: a million and one NONEs.
    expectRejected(
      'stack.bin',
      zipOf([...P.proto(), ...new Array<number>(1_000_001).fill(0x4e), ...P.stop]),
      'pickle stack exceeds 1000000 items',
    );
    const opts = { file: 'x.pkl', globals: new Map() };
    const nones = Uint8Array.from([...P.proto(), ...new Array<number>(20).fill(0x4e), ...P.stop]);
    expect(() => unpickle(nones, { ...opts, maxStack: 8 })).toThrow(/x\.pkl: pickle stack exceeds 8 items/);
    const puts = Uint8Array.from([...P.proto(), ...P.none, ...[0, 1, 2, 3, 4, 5].flatMap((i) => [0x71, i]), ...P.stop]);
    expect(() => unpickle(puts, { ...opts, maxMemo: 4 })).toThrow(/pickle memo exceeds 4 entries/);
    expect(unpickle(puts, opts)).toBeNull();
    const d = unpickle(Uint8Array.from([...P.proto(), ...P.emptyDict, ...P.stop]), opts);
    expect(d).toBeInstanceOf(PyDict);
  });
});

describe('tensors that reach outside their storage are refused', () => {
  test('storage offset past the storage data', () => {
    const pkl = stateDict([['proj.w', tensor({ numel: 4, offset: 100, size: ints(1), stride: ints(1) })]]);
    expectRejected(
      'offset.bin',
      torchZip(pkl, { 0: f32bytes(1, 2, 3, 4) }),
      'tensor "proj.w": offset 100, shape [1], stride [1] reach element 100 but storage "0" has 4 elements',
    );
  });

  test('size x stride beyond the storage', () => {
    const pkl = stateDict([['proj.w', tensor({ numel: 8, size: ints(4, 4), stride: ints(4, 1) })]]);
    expectRejected(
      'extent.bin',
      torchZip(pkl, { 0: f32bytes(...new Array<number>(8).fill(0)) }),
      'tensor "proj.w"',
      'reach element 15 but storage "0" has 8 elements',
    );
  });

  test('huge strides (past 2^53) and negative sizes', () => {
    const big = stateDict([['w', tensor({ numel: 2, size: ints(2), stride: [P.long(2n ** 62n)] })]]);
    expectRejected(
      'bigstride.bin',
      torchZip(big, { 0: f32bytes(1, 2) }),
      'stride must be a tuple of non-negative integers',
    );
    const neg = stateDict([['w', tensor({ numel: 2, size: ints(-1), stride: ints(1) })]]);
    expectRejected(
      'negsize.bin',
      torchZip(neg, { 0: f32bytes(1, 2) }),
      'size must be a tuple of non-negative integers',
    );
  });

  test('storage numel disagreeing with its entry, missing entries, odd keys', () => {
    const pkl = stateDict([['w', tensor({ numel: 8, size: ints(2), stride: ints(1) })]]);
    expectRejected(
      'numel.bin',
      torchZip(pkl, { 0: f32bytes(1, 2) }),
      'tensor "w": storage "0" should hold 8 F32 elements (32 bytes) but its entry has 8 bytes',
    );
    expectRejected('missing.bin', torchZip(pkl, {}), 'tensor "w": storage "0" has no zip entry');
    const evil = stateDict([['w', tensor({ key: '../x', numel: 1, size: ints(1), stride: ints(1) })]]);
    expectRejected('key.bin', torchZip(evil, {}), 'storage key "../x" is not a plain name');
  });
});

describe('hostile or unsupported archives are refused', () => {
  const okPkl = stateDict([['w', tensor({ numel: 2, size: ints(2), stride: ints(1) })]]);

  test.each([
    ['../evil', 'contains a ".." segment'],
    ['archive/../../evil', 'contains a ".." segment'],
    ['/abs', 'is an absolute path'],
    ['C:/abs', 'is an absolute path'],
    ['archive\\data\\0', 'contains a backslash'],
    ['archive/\0x', 'contains NUL'],
  ])('entry name %j', (name, why) => {
    expectRejected(
      'name.bin',
      torchZip(okPkl, { 0: f32bytes(1, 2) }, [{ name, data: Buffer.from('x') }]),
      `zip entry name ${JSON.stringify(name)} ${why}`,
    );
  });

  test('stored entry declaring more bytes than the file holds', () => {
    const z = torchZip(okPkl, {}, [{ name: 'archive/data/0', data: f32bytes(1, 2), size: 0x7fffffff }]);
    expectRejected(
      'stored_huge.bin',
      z,
      'entry "archive/data/0" (2147483647 bytes at offset',
      'extends past the end of the file',
    );
  });

  // Deflate is still read for data.pkl (small by rule): its inflation is bounded by the declared size.
  test('deflate bomb: data.pkl inflating far past its declared size', () => {
    const zeros = new Uint8Array(1 << 24); // 16 MiB of zeros deflates to ~16 KiB
    const z = buildZip([
      { name: 'archive/data.pkl', data: zeros, method: 8, size: okPkl.length, crc: crc32(okPkl) },
      { name: 'archive/data/0', data: f32bytes(1, 2) },
    ]);
    expectRejected('bomb.bin', z, 'entry "archive/data.pkl" inflates past its declared size of');
  });

  test('deflate entry declaring an absurd size (zip64, 1 TiB)', () => {
    const z = torchZip(okPkl, {}, [{ name: 'archive/data/0', data: f32bytes(1, 2), method: 8, zip64Size: 2n ** 40n }]);
    expectRejected('zip64_huge.bin', z, 'declares 1099511627776 bytes, over the 4294967296-byte limit');
  });

  test('deflate entry shorter than declared', () => {
    const z = buildZip([
      { name: 'archive/data.pkl', data: okPkl, method: 8, size: okPkl.length + 4 },
      { name: 'archive/data/0', data: f32bytes(1, 2) },
    ]);
    expectRejected('short.bin', z, `inflates to ${okPkl.length} bytes, declared ${okPkl.length + 4}`);
  });

  test('CRC32 mismatch', () => {
    const z = torchZip(okPkl, {}, [{ name: 'archive/data/0', data: f32bytes(1, 2), crc: 0x12345678 }]);
    expectRejected('crc.bin', z, 'entry "archive/data/0" CRC32 mismatch (stored 0x12345678');
  });

  test('compression methods other than stored/deflate', () => {
    const z = torchZip(okPkl, {}, [{ name: 'archive/data/0', data: f32bytes(1, 2), method: 12 }]);
    expectRejected('bzip2.bin', z, 'entry "archive/data/0" uses compression method 12');
  });

  test('byteorder other than little, duplicate and missing data.pkl', () => {
    expectRejected(
      'big.bin',
      torchZip(okPkl, { 0: f32bytes(1, 2) }, [{ name: 'archive/byteorder', data: Buffer.from('big') }]),
      'byteorder is "big", only "little" is supported',
    );
    expectRejected(
      'dup.bin',
      torchZip(okPkl, { 0: f32bytes(1, 2) }, [{ name: 'archive/data.pkl', data: okPkl }]),
      'duplicate entry "archive/data.pkl"',
    );
    expectRejected(
      'two.bin',
      torchZip(okPkl, { 0: f32bytes(1, 2) }, [{ name: 'other/data.pkl', data: okPkl }]),
      'expected one "<archive>/data.pkl" entry in a torch.save zip, found 2',
    );
    expectRejected('none.bin', buildZip([{ name: 'a/b', data: okPkl }]), 'found 0');
  });

  test('legacy (pre-1.6) and non-zip files get a clear message', () => {
    expectRejected(
      'legacy.bin',
      Uint8Array.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46]),
      'legacy (pre-1.6, non-zip) torch.save format is not supported',
    );
    expectRejected('text.bin', Buffer.from('hello world'), 'not a torch.save zip archive');
    expectRejected(
      'truncated.bin',
      torchZip(okPkl, { 0: f32bytes(1, 2) }).subarray(0, 60),
      'no end-of-central-directory',
    );
    expect(() => TorchBinFile.open(path.join(tmp, 'does-not-exist.bin'))).toThrow(/cannot open/);
  });
});
