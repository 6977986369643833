/**
 * Seeded, bounded mutation fuzzing of every reader of untrusted input (issue 13): safetensors, index
 * JSON, torch .bin (zip + pickle), the JSON scanner, the vision / LLaVA / preprocessor configs (each
 * with its checkpoint check), and images through decoding and LLaVA's preprocessing.
 *
 * Every case must end in success or in one of the package's errors, within a time bound, and the
 * process must stay under 1.5 GB; a case that succeeds must also satisfy the reader's invariant (a
 * safetensors file's tensors tile its data region; a config that passes its checkpoint check has the
 * checkpoint's sizes). `FUZZ_CASES` (default 250 per reader) and `FUZZ_SEED` (default 13) pick the run;
 * `npm run fuzz` runs thousands. A failing case is reported with its reader, index and seed.
 */
import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';
import { clipVisionConfigFromJson } from '../src/config/clip';
import { llavaSettingsFromJson } from '../src/config/llava';
import { parsePreprocessorConfig } from '../src/config/preprocessor';
import { LlavaVisionError, shapeText } from '../src/errors';
import { decodeImage, processImages } from '../src/image';
import { CLIPImageProcessor } from '../src/image/processor';
import { Checkpoint } from '../src/io/checkpoint';
import { parseJsonWithLimits } from '../src/io/json';
import { SafetensorsFile, serializeSafetensors } from '../src/io/safetensors';
import { readIndex } from '../src/io/shards';
import { TorchBinFile } from '../src/io/torch_bin';
import { DTYPE_SIZE } from '../src/io/dtype';
import { crc32 } from '../src/io/zip';
import { ReferenceFile } from '../src/check/reference';
import { checkProjectorAgainstWeights, checkVisionConfigAgainstWeights } from '../src/model/config_checks';
import { CASES } from './helpers/golden';
import { pngHeader } from './helpers/images';
import { isolatedTempDir } from './helpers/isolation';
import { Ops, P, buildZip, call, ints } from './helpers/torch_zip';
import { JsonObject, readJson } from './helpers/json';
import { Rng, rng } from './helpers/rng';

const N = Number(process.env.FUZZ_CASES ?? 250);
const SEED = Number(process.env.FUZZ_SEED ?? 13);
const RSS_LIMIT = 1.5 * 2 ** 30;
/** `npm run fuzz`: also the slow-but-bounded cases (big real images, 4096-pixel preprocessor sizes). */
const LONG = N >= 1000;
/**
 * Per case: generous for a shared 2-core VM, where a 2-megapixel PNG can take 4 s to decode and
 * preprocess under load; a regression here is a hang (minutes) or GBs, not 10% slower.
 */
const CASE_MS = Number(process.env.FUZZ_CASE_MS ?? (LONG ? 10_000 : 4000));
const CASE = path.join(CASES, 'tiny_llava_linear_sel-1_patch');
const TOWER = path.join(CASE, 'clip_tower');
const LLAVA = path.join(CASE, 'llava');

jest.setTimeout(Math.max(120_000, N * 1000));
const tmp = isolatedTempDir('fuzz-');

/** Values a hostile file puts where a number, string or list belongs. */
const HOSTILE: unknown[] = [
  0,
  -1,
  1,
  2,
  3,
  7,
  255,
  256,
  65536,
  4097,
  30000,
  1e6,
  1e9,
  2 ** 31,
  2 ** 32,
  2 ** 53,
  2 ** 53 + 2,
  1e308,
  -1e308,
  1.5,
  0.1,
  -0,
  '7',
  '',
  'x'.repeat(10_000),
  null,
  true,
  [],
  [1],
  [2, 3],
  [30000, 30000],
  {},
  { a: 1 },
];
const deepValue = (depth: number): unknown => {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = [v];
  return v;
};
/** JSON.stringify that survives a 30,000-deep value (the built-in recurses). */
const deepJson = (v: unknown): string => {
  let depth = 0;
  let inner = v;
  while (Array.isArray(inner) && inner.length === 1 && depth < 1e6) {
    inner = inner[0];
    depth++;
  }
  return depth > 1000 ? '['.repeat(depth) + JSON.stringify(inner) + ']'.repeat(depth) : JSON.stringify(v);
};
const hostile = (r: Rng): unknown => (r.chance(0.08) ? deepValue(r.pick([2, 5, 40, 3000, 30000])) : r.pick(HOSTILE));

interface Failure {
  reader: string;
  index: number;
  what: string;
  problem: string;
}
const failures: Failure[] = [];
/** Per reader: cases accepted and refused (a fuzzer whose cases all end the same way tests little). */
const outcomes: Record<string, { accepted: number; refused: number }> = {};
let maxRss = 0;

/**
 * Runs one case: `fn` must return or throw a LlavaVisionError, within CASE_MS; `check` (on success)
 * asserts the reader's invariant.
 */
async function fuzzCase(reader: string, index: number, what: string, fn: () => unknown): Promise<void> {
  const t0 = Date.now();
  let problem: string | null = null;
  let refusal = '';
  const tally = (outcomes[reader] ??= { accepted: 0, refused: 0 });
  try {
    await fn();
    tally.accepted++;
  } catch (e) {
    tally.refused++;
    refusal = e instanceof Error ? e.message : String(e);
    if (!(e instanceof LlavaVisionError))
      problem = `raw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`.slice(0, 500);
    else if (e.message.includes('\n') || e.message.length > 2000)
      problem = `message of ${e.message.length} chars / lines: ${e.message.slice(0, 200)}`;
  }
  const ms = Date.now() - t0;
  if (process.env.FUZZ_TRACE)
    process.stderr.write(
      `${reader} #${index} ${ms} ms ${problem ? 'FAIL' : 'ok'}: ${what.slice(0, 100)}${refusal ? ` -> ${refusal.slice(0, 160)}` : ''}\n`,
    );
  if (!problem && ms > CASE_MS) problem = `took ${ms} ms`;
  maxRss = Math.max(maxRss, process.memoryUsage().rss);
  if (!problem && process.memoryUsage().rss > RSS_LIMIT)
    problem = `RSS ${Math.round(process.memoryUsage().rss / 2 ** 20)} MB`;
  if (problem) failures.push({ reader, index, what, problem });
}

/** Throws (a plain Error: counted as a failure) when a successful result breaks an invariant. */
function invariant(ok: boolean, message: string): void {
  if (!ok) throw new Error(`invariant: ${message}`);
}

// ------------------------------------------------------------------------------------ safetensors

describe(`fuzz (seed ${SEED}, ${N} cases per reader)`, () => {
  test('safetensors: byte flips, header length, inserted/removed bytes, hostile header values', async () => {
    const r = rng(SEED);
    const base = serializeSafetensors(
      {
        a: { dtype: 'F32', shape: [2, 3], data: new Float32Array(6).fill(1.5) },
        b: { dtype: 'F16', shape: [4], data: new Uint16Array(4).fill(0x3c00) },
        c: { dtype: 'BF16', shape: [], data: new Uint16Array([0x3f80]) },
        d: { dtype: 'I64', shape: [2], data: new BigInt64Array([1n, 2n]) },
      },
      { k: 'v' },
    );
    const headerLen = Number(base.readBigUInt64LE(0));
    type Header = Record<string, Record<string, unknown>>;
    const header = JSON.parse(base.subarray(8, 8 + headerLen).toString('utf8')) as Header;
    const copy = () => JSON.parse(JSON.stringify(header)) as Header;
    const data = base.subarray(8 + headerLen);
    const withHeader = (h: string, d: Uint8Array = data, delta = 0) => {
      const json = Buffer.from(h, 'utf8');
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(Math.max(0, json.length + delta)));
      return Buffer.concat([len, json, Buffer.from(d)]);
    };
    for (let i = 0; i < N; i++) {
      let bytes: Buffer = Buffer.from(base);
      const kind = r.int(8);
      let what = '';
      if (kind === 0) {
        const at = r.int(bytes.length);
        bytes[at] = r.int(256);
        what = `byte ${at} = ${bytes[at]}`;
      } else if (kind === 1) {
        const delta = r.pick([-9, -8, -2, -1, 1, 2, 8, 1000]);
        bytes.writeBigUInt64LE(BigInt(Math.max(0, headerLen + delta)), 0);
        what = `header length ${delta > 0 ? '+' : ''}${delta}`;
      } else if (kind === 2 || kind === 3) {
        const at = 8 + r.int(bytes.length - 8);
        const n = 1 + r.int(8);
        bytes =
          kind === 2
            ? Buffer.concat([bytes.subarray(0, at), Buffer.alloc(n, 0x20), bytes.subarray(at)])
            : Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + n)]);
        what = `${kind === 2 ? 'insert' : 'remove'} ${n} at ${at}`;
      } else if (kind === 4) {
        const h = copy();
        const name = r.pick(['a', 'b', 'c', 'd', '__metadata__']);
        const field = r.pick(['dtype', 'shape', 'data_offsets', 'k', 'extra']);
        const value = hostile(r);
        if (name === '__metadata__') h[name][field] = value;
        else if (field === 'shape' || field === 'data_offsets') {
          const arr = [...(h[name][field] as unknown[])];
          if (arr.length && r.chance(0.7)) arr[r.int(arr.length)] = value;
          else arr.push(value);
          h[name][field] = arr;
        } else h[name][field] = value;
        what = `${name}.${field} <- ${deepJson(value).slice(0, 40)}`;
        bytes = withHeader(stringifyDeep(h));
      } else if (kind === 5) {
        const text = JSON.stringify(header);
        const dup = text.replace('{', `{"a":${JSON.stringify(header.a)},`);
        bytes = withHeader(dup);
        what = 'duplicate key "a"';
      } else if (kind === 6) {
        const h = copy();
        const [x, y] = [r.pick(['a', 'b', 'c', 'd']), r.pick(['a', 'b', 'c', 'd'])];
        [h[x].data_offsets, h[y].data_offsets] = [h[y].data_offsets, h[x].data_offsets];
        h[x].data_offsets = (h[x].data_offsets as number[]).map((o) => o + r.pick([0, 0, 1, -1, 4]));
        bytes = withHeader(JSON.stringify(h) + ' '.repeat(r.int(4)), data, r.pick([0, 0, -1]));
        what = `offsets of ${x} <-> ${y}, shifted`;
      } else {
        bytes = bytes.subarray(0, r.int(bytes.length));
        what = `truncated to ${bytes.length}`;
      }
      const p = path.join(tmp(), `st-${i}.safetensors`);
      fs.writeFileSync(p, bytes);
      await fuzzCase('safetensors', i, what, () => {
        const st = SafetensorsFile.open(p);
        try {
          let total = 0;
          for (const k of st.keys()) total += st.readBytes(k).byteLength;
          // Accepted: the tensors tile the data region exactly (no shifted weights).
          invariant(
            total === fs.statSync(p).size - st.dataStart,
            `tensors hold ${total} bytes of a ${fs.statSync(p).size - st.dataStart}-byte data region`,
          );
        } finally {
          st.close();
        }
      });
    }
  });

  // ---------------------------------------------------------------------------------- index JSON

  test('index JSON: hostile weight_map and metadata values, duplicate keys, deep nesting, byte flips', async () => {
    const r = rng(SEED + 1);
    const base = {
      metadata: { total_size: 64 },
      weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' },
    };
    for (let i = 0; i < N; i++) {
      const j = JSON.parse(JSON.stringify(base)) as Record<string, Record<string, unknown>>;
      let text: string;
      const kind = r.int(4);
      if (kind === 0) {
        const where = r.pick(['weight_map', 'metadata', 'root']);
        const key = r.pick(['a', 'b', 'total_size', 'weight_map', 'metadata']);
        const value = r.chance(0.3) ? r.pick(['../x', '/etc/passwd', '.', '..', 'a\\b', 'a\0b']) : hostile(r);
        if (where === 'root') (j as Record<string, unknown>)[key] = value;
        else j[where][key] = value;
        text = stringifyDeep(j);
      } else if (kind === 1) {
        text = JSON.stringify(j).replace('"a":', `"b":"x.safetensors","a":`);
      } else if (kind === 2) {
        text = JSON.stringify(j).replace(
          '"model-00001-of-00002.safetensors"',
          deepJson(deepValue(r.pick([3, 50, 20_000]))),
        );
      } else {
        const t = JSON.stringify(j).split('');
        t[r.int(t.length)] = String.fromCharCode(r.int(128));
        text = t.join('');
      }
      const p = path.join(tmp(), `index-${i}.json`);
      fs.writeFileSync(p, text);
      await fuzzCase('index', i, text.slice(0, 80), () => {
        const { weightMap } = readIndex(p);
        for (const f of weightMap.values())
          invariant(typeof f === 'string' && !f.includes('/') && f !== '..', `shard name ${f}`);
      });
    }
  });

  // ----------------------------------------------------------------------------- reference files

  test('reference files (llava-vision check): hostile __metadata__ expected / run values, deep nesting, duplicate keys', async () => {
    const r = rng(SEED + 7);
    const tensors = {
      pixel_values: { dtype: 'F32' as const, shape: [2, 3, 2, 2], data: new Float32Array(24).fill(0.5) },
      features: { dtype: 'F16' as const, shape: [2, 4], data: new Uint16Array(8).fill(0x3c00) },
    };
    const expected: Record<string, Record<string, unknown>> = {
      pixel_values: { exact: true, shape: [2, 3, 2, 2] },
      features: { torch_fp32_max_abs_err: 1e-6, f32_storage_max_abs_err: 1e-7, what: 'w' },
    };
    const run: Record<string, unknown> = {
      select_layer: -2,
      select_feature: 'patch',
      images: ['a.png', 'b.png'],
      tiles_per_image: [1, 1],
    };
    for (let i = 0; i < N; i++) {
      const e = JSON.parse(JSON.stringify(expected)) as typeof expected;
      const u = JSON.parse(JSON.stringify(run)) as typeof run;
      let expectedText: string;
      let runText: string;
      const kind = r.int(4);
      if (kind === 0) {
        const name = r.pick(['pixel_values', 'features', 'missing']);
        e[name] ??= {};
        e[name][
          r.pick(['exact', 'torch_fp32_max_abs_err', 'f32_storage_max_abs_err', 'ref_max_abs', 'what', 'shape'])
        ] = hostile(r);
        expectedText = stringifyDeep(e);
        runText = JSON.stringify(u);
      } else if (kind === 1) {
        u[
          r.pick(['select_layer', 'select_feature', 'images', 'tiles_per_image', 'interpolate_pos_encoding', 'other'])
        ] = hostile(r);
        expectedText = JSON.stringify(e);
        runText = stringifyDeep(u);
      } else if (kind === 2) {
        expectedText = JSON.stringify(e).replace('"features":', `"features":{},"features":`);
        runText = deepJson(deepValue(r.pick([2, 3, 4, 20_000])));
      } else {
        const t = JSON.stringify(e).split('');
        t[r.int(t.length)] = String.fromCharCode(r.int(128));
        expectedText = t.join('');
        runText = JSON.stringify(u);
      }
      const p = path.join(tmp(), `reference-${i}.safetensors`);
      fs.writeFileSync(
        p,
        serializeSafetensors(tensors, { format: 'llava-vision-reference/1', expected: expectedText, run: runText }),
      );
      await fuzzCase('reference', i, `${expectedText.slice(0, 60)} | ${runText.slice(0, 40)}`, () => {
        const ref = ReferenceFile.open(p);
        try {
          for (const name of ref.keys()) {
            const meta = ref.meta(name);
            for (const v of [meta.torch_fp32_max_abs_err, meta.f32_storage_max_abs_err])
              invariant(v === undefined || (Number.isFinite(v) && v >= 0), `${name}: bound field ${v}`);
            invariant(
              ref.read(name).data.length === ref.readRows(name, 0, ref.info(name).shape[0]).length,
              `${name}: rows`,
            );
          }
          const layer = ref.run.select_layer;
          invariant(layer === undefined || Number.isSafeInteger(layer), `select_layer ${String(layer)}`);
        } finally {
          ref.close();
        }
      });
    }
  });

  // -------------------------------------------------------------------------------------- .bin

  test('torch .bin: hostile sizes, strides, offsets, numel, floats, storage types, compression, pickle bytes', async () => {
    const r = rng(SEED + 2);
    const int = (): Ops => {
      const v = r.pick([0, 1, 2, 3, 4, 6, 255, 256, 65536, 300_000, 1_000_000, 2 ** 31 - 1, -1]);
      return r.chance(0.1)
        ? P.long(r.pick([2n ** 40n, 2n ** 62n, -(2n ** 40n), 1_000_000_000n]))
        : r.chance(0.05)
          ? P.float(v)
          : P.int(v);
    };
    const BOMB = 4 * 2 ** 20; // elements: 16 MiB of F32 zeros deflate to ~16 KiB
    for (let i = 0; i < N; i++) {
      const bomb = r.chance(0.05);
      // Stride 0 (a broadcast view) is where a tiny storage turns into a huge tensor.
      const zeroStrides = r.chance(0.3);
      const broadcast = !bomb && zeroStrides && r.chance(0.5); // otherwise valid: only the view is hostile
      // Or a valid [128, 128] tensor under many names: every layer of a big config on one small storage.
      const shared = !bomb && !broadcast && r.chance(0.1);
      const valid = bomb || broadcast || shared;
      const numel = bomb ? BOMB : shared ? 16384 : r.pick([0, 1, 4, 6, 8, 1024]);
      const dims = bomb || shared ? 2 : broadcast ? 1 + r.int(2) : r.int(4);
      const size = bomb
        ? ints(2048, 2048)
        : shared
          ? ints(128, 128)
          : broadcast
            ? Array.from({ length: dims }, () => P.int(r.pick([3, 2048, 65536, 300_000, 1_000_000])))
            : Array.from({ length: dims }, int);
      const stride = bomb
        ? ints(2048, 1)
        : shared
          ? ints(128, 1)
          : Array.from({ length: broadcast || r.chance(0.9) ? dims : dims + 1 }, () =>
              zeroStrides ? P.int(0) : int(),
            );
      const cls = valid
        ? 'FloatStorage'
        : r.pick(['FloatStorage', 'HalfStorage', 'BFloat16Storage', 'LongStorage', 'BoolStorage', 'Evil']);
      const t = call(
        P.global('torch._utils', r.chance(0.95) ? '_rebuild_tensor_v2' : 'eval'),
        [
          ...P.tuple(
            P.str('storage'),
            P.global('torch', cls),
            P.str(r.chance(0.95) ? '0' : '../0'),
            P.str('cpu'),
            P.int(numel),
          ),
          ...P.binpersid,
        ],
        valid || r.chance(0.7) ? P.int(0) : int(),
        P.tuple(...size),
        P.tuple(...stride),
        P.false,
        call(P.global('collections', 'OrderedDict')),
      );
      const copies = shared ? 1 + r.int(1000) : 1;
      const items = Array.from({ length: copies }, (_, c) => [...P.str(`model.layers.${c}.weight`), ...t]).flat();
      const pkl = [...P.proto(), ...P.emptyDict, ...P.mark, ...items, ...P.setitems, ...P.stop];
      if (!valid && r.chance(0.15)) pkl[r.int(pkl.length)] = r.int(256);
      const es = { FloatStorage: 4, HalfStorage: 2, BFloat16Storage: 2, LongStorage: 8, BoolStorage: 1, Evil: 4 }[cls]!;
      const storage = new Uint8Array(valid || r.chance(0.9) ? numel * es : r.int(64));
      const method = bomb || (!valid && r.chance(0.15)) ? 8 : 0;
      const declared = !valid && r.chance(0.1) ? r.pick([2 ** 30, 2 ** 32 - 1]) : undefined;
      const bytes = buildZip([
        { name: 'archive/data.pkl', data: Uint8Array.from(pkl), method: !valid && r.chance(0.2) ? 8 : 0 },
        { name: 'archive/data/0', data: storage, method, size: declared, crc: declared ? crc32(storage) : undefined },
      ]);
      const p = path.join(tmp(), `bin-${i}.bin`);
      fs.writeFileSync(p, bytes);
      await fuzzCase(
        'torch_bin',
        i,
        `${copies > 1 ? `${copies} names, ` : ''}${bomb ? 'deflate bomb ' : ''}${cls}(${numel}) size ${dims} dims${zeroStrides ? ' stride 0' : ''}, method ${method}`,
        () => {
          const f = TorchBinFile.open(p);
          let total = 0;
          try {
            for (const k of f.keys()) {
              const info = f.info(k);
              const n = info.shape.reduce((a, b) => a * b, 1);
              const out = f.read(k).data;
              // Accepted: the work is bounded by the file's real size (a repeated view by 1 MiB at most).
              invariant(
                out.byteLength <= Math.max(bytes.length, 2 ** 20),
                `read ${out.byteLength} bytes from a ${bytes.length}-byte file`,
              );
              invariant(
                out.byteLength === n * DTYPE_SIZE[info.dtype],
                `${out.byteLength} bytes for ${n} ${info.dtype}`,
              );
              total += out.byteLength;
            }
            // And all tensors together: shared storages (tied weights) at most 4 times.
            invariant(
              total <= 4 * bytes.length + 2 ** 20,
              `read ${total} bytes in all from a ${bytes.length}-byte file`,
            );
          } finally {
            f.close();
          }
        },
      );
    }
  });

  // ------------------------------------------------------------------------------- JSON scanner

  test('JSON scanner: token soup and hostile values; what it accepts is within the depth limit', async () => {
    const r = rng(SEED + 3);
    const pieces = [
      '{',
      '}',
      '[',
      ']',
      ',',
      ':',
      '"a"',
      '"b"',
      '"\\u0061"',
      '"\\"',
      '"\\\\"',
      '1',
      'null',
      ' ',
      '"x"',
      '"',
    ];
    for (let i = 0; i < N * 4; i++) {
      const text = r.chance(0.5)
        ? Array.from({ length: 1 + r.int(20) }, () => r.pick(pieces)).join('')
        : stringifyDeep({ a: hostile(r), b: [hostile(r)], c: { d: hostile(r) } });
      await fuzzCase('json', i, text.slice(0, 60), () => {
        const v = parseJsonWithLimits(text, { maxDepth: 8, rejectDuplicateKeys: true }, (p) => new LlavaVisionError(p));
        invariant(depthOf(v) <= 8, `accepted a value ${depthOf(v)} levels deep`);
      });
    }
  });

  // ------------------------------------------------------------------------------------ configs

  test('vision, LLaVA and preprocessor configs: bounded when read, and sized like the checkpoint once checked', async () => {
    const r = rng(SEED + 4);
    const tower = Checkpoint.open(TOWER);
    const llava = Checkpoint.open(LLAVA);
    const source = (ck: Checkpoint) => ({
      source: ck.source,
      has: (k: string) => ck.has(k),
      info: (k: string) => ck.info(k),
      readFloat32: (k: string) => ck.readFloat32(k),
    });
    const visionBase = readJson<JsonObject>(path.join(TOWER, 'config.json'));
    const llavaBase = readJson<JsonObject>(path.join(LLAVA, 'config.json'));
    const preBase = readJson<JsonObject>(path.join(TOWER, 'preprocessor_config.json'));
    const image = { width: 37, height: 23, data: new Uint8Array(37 * 23 * 3).fill(90) };
    const mutate = (base: JsonObject, keys: string[]) => {
      const j = JSON.parse(JSON.stringify(base)) as Record<string, unknown>;
      for (let k = 1 + r.int(3); k > 0; k--)
        j[r.pick(keys)] = r.chance(0.2)
          ? r.pick(['mlp1000000x_gelu', 'mlp33x_gelu', 'mlp2x_gelu', 'identity', 'pad', 'anyres'])
          : hostile(r);
      return j;
    };
    try {
      for (let i = 0; i < N; i++) {
        const v = mutate(visionBase, [
          'hidden_size',
          'intermediate_size',
          'num_hidden_layers',
          'num_attention_heads',
          'num_channels',
          'image_size',
          'patch_size',
          'layer_norm_eps',
          'hidden_act',
          'projection_dim',
        ]);
        await fuzzCase('vision config', i, stringifyDeep(v).slice(0, 120), () => {
          const cfg = clipVisionConfigFromJson(v, 'config.json');
          checkVisionConfigAgainstWeights(cfg, source(tower), (p) => p, 'config.json');
          // Passed: every size the build allocates is the checkpoint's (fewer layers than stored is allowed, as in HF).
          invariant(
            cfg.hiddenSize === 64 &&
              cfg.intermediateSize === 128 &&
              cfg.numChannels === 3 &&
              cfg.patchSize === 14 &&
              Math.floor(cfg.imageSize / 14) === 4 &&
              cfg.numHiddenLayers <= 3,
            `passed with ${JSON.stringify(cfg)}`,
          );
        });
        const l = mutate(llavaBase, [
          'hidden_size',
          'mm_hidden_size',
          'mm_projector_type',
          'mm_vision_select_layer',
          'image_grid_pinpoints',
          'mm_vision_tower',
          'image_aspect_ratio',
        ]);
        await fuzzCase('llava config', i, stringifyDeep(l).slice(0, 120), () => {
          const s = llavaSettingsFromJson(l, 'config.json');
          const type = s.projectorType ?? 'linear';
          const out = s.projectorOut ?? 48;
          if (type !== 'identity') {
            checkProjectorAgainstWeights(
              { type, inFeatures: s.projectorIn ?? 64, outFeatures: out },
              source(llava),
              (p) => `model.mm_projector.${p}`,
              'config',
            );
            invariant(
              type === 'linear' && out === 48 && (s.projectorIn ?? 64) === 64,
              `passed with ${type} ${s.projectorIn} -> ${out}`,
            );
          }
        });
        const pj = mutate(preBase, [
          'size',
          'crop_size',
          'resample',
          'image_mean',
          'image_std',
          'rescale_factor',
          'do_center_crop',
          'do_resize',
        ]);
        const aspect = r.pick(['square', 'pad', 'anyres'] as const);
        await fuzzCase('preprocessor config', i, `${aspect} ${stringifyDeep(pj).slice(0, 120)}`, () => {
          const processor = new CLIPImageProcessor(parsePreprocessorConfig(pj, 'preprocessor_config.json'));
          const { size, cropSize } = processor.config;
          const side = Math.max(
            cropSize.height,
            cropSize.width,
            'shortestEdge' in size ? size.shortestEdge : Math.max(size.height, size.width),
          );
          // Within the bounds but slow to compute in a unit test: the long run (npm run fuzz) does these too.
          if (side > 1024 && !LONG) return;
          processImages([image], processor, {
            aspect,
            gridPinpoints: [
              [56, 112],
              [112, 56],
            ],
          });
        });
      }
    } finally {
      tower.close();
      llava.close();
    }
  });

  // ------------------------------------------------------------------------------------- images

  test('images: extreme sizes (real and header-only), byte flips, every aspect mode', async () => {
    const r = rng(SEED + 5);
    const processor = CLIPImageProcessor.fromFile(TOWER);
    const sides = [1, 2, 3, 37, 300, 3000, 30000, 100000, 1_000_000];
    for (let i = 0; i < N; i++) {
      let w = r.pick(sides);
      let h = r.pick(sides);
      let bytes: Buffer;
      let what: string;
      // Real PNGs of up to 4 M pixels in the long run; the suite's run keeps to small ones (seconds in total).
      if (w * h <= (LONG ? 4_000_000 : 200_000) && r.chance(0.7)) {
        const grey = r.chance(0.2);
        const made = sharp({
          create: { width: w, height: h, channels: r.pick([3, 4] as const), background: { r: 9, g: 99, b: 199 } },
        });
        const deep16 = r.chance(0.15);
        const shaped = grey ? made.greyscale() : made;
        bytes = await (deep16 ? shaped.toColourspace(grey ? 'grey16' : 'rgb16') : shaped).png().toBuffer();
        what = `png ${w}x${h}${grey ? ' grey' : ''}${deep16 ? ' 16-bit' : ''}`;
      } else {
        [w, h] = [Math.min(w, 2 ** 31 - 1), Math.min(h, 2 ** 31 - 1)];
        const [depth, colour] = r.pick([
          [8, 2],
          [8, 6],
          [16, 2],
          [16, 6],
          [8, 0],
          [16, 0],
          [16, 4],
        ]);
        bytes = pngHeader(w, h, depth, colour);
        what = `header-only png ${w}x${h}, ${depth}-bit colour type ${colour}`;
      }
      if (r.chance(0.2)) {
        const at = 16 + r.int(Math.max(1, bytes.length - 16));
        bytes = Buffer.from(bytes);
        bytes[at] = r.int(256);
        what += `, byte ${at} flipped`;
      }
      const aspect = r.pick(['square', 'pad', 'anyres'] as const);
      await fuzzCase('image', i, `${what}, ${aspect}`, async () => {
        const img = await decodeImage(bytes, { name: what });
        const [out] = processImages([img], processor, {
          aspect,
          gridPinpoints: [
            [56, 112],
            [112, 56],
            [112, 112],
          ],
        });
        invariant(out.shape[2] === 56 && out.shape[3] === 56, `pixel values ${shapeText(out.shape)}`);
      });
    }
  });

  // Last in the file, so it sees every reader's cases (jest runs a file's tests in order).
  test('every case ended in success or a clean package error, within time and memory bounds', () => {
    if (LONG || process.env.FUZZ_TRACE)
      process.stderr.write(`fuzz outcomes: ${JSON.stringify(outcomes)}; peak RSS ${Math.round(maxRss / 2 ** 20)} MB\n`);
    // All readers' failures in one report, each reproducible from its reader, index and the seed.
    expect(failures.slice(0, 20)).toEqual([]);
    for (const [reader, { accepted, refused }] of Object.entries(outcomes)) {
      expect([reader, accepted > 0, refused > 0]).toEqual([reader, true, true]);
    }
    expect(maxRss).toBeLessThan(RSS_LIMIT);
  });
});

/** Nesting depth of a parsed JSON value, without recursion. */
function depthOf(v: unknown): number {
  let max = 0;
  const stack: [unknown, number][] = [[v, 0]];
  while (stack.length) {
    const [x, d] = stack.pop()!;
    if (x === null || typeof x !== 'object') continue;
    max = Math.max(max, d + 1);
    for (const y of Object.values(x)) stack.push([y, d + 1]);
  }
  return max;
}

/** JSON.stringify, keeping a 30,000-deep array value (which the built-in cannot write) as text. */
function stringifyDeep(v: unknown): string {
  if (Array.isArray(v) && v.length === 1 && Array.isArray(v[0])) return deepJson(v);
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    return `{${Object.entries(v)
      .map(([k, x]) => `${JSON.stringify(k)}:${stringifyDeep(x)}`)
      .join(',')}}`;
  }
  if (Array.isArray(v)) return `[${v.map(stringifyDeep).join(',')}]`;
  return JSON.stringify(v) ?? 'null';
}
