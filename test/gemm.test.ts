/**
 * The project's SGEMM (src/model/kernels/gemm.wat, gemm.ts). Each output element is summed in one
 * documented order (blocks of GEMM_BLOCK_K multiply-adds, the blocks' sums added in order of k, input
 * parts in order), so the kernel is checked bit for bit against a JS emulation of that order (fused
 * multiply-add emulated exactly), on ragged shapes, row strides and unaligned heap offsets, with guard
 * zones around the output; then against float64 and XNNPACK for accuracy; then through tfjs tensors.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import * as tf from '../src/tf';
import { initBackend } from '../src/backend';
import { seededRandom } from '../src/random';
import {
  GEMM_BLOCK_K,
  GemmExports,
  activeGemm,
  enableRelaxedSimd,
  gemm,
  setGemmChoice,
} from '../src/model/kernels/gemm';
import { WASM_BASE64 as FMA_WASM } from '../src/model/kernels/gemm_wasm';
import { WASM_BASE64 as MUL_ADD_WASM } from '../src/model/kernels/gemm_muladd_wasm';
import { Linear } from '../src/model/linear';
import { withoutRelaxedSimd } from '../tools/build_kernels';
import { disposeWeights } from '../src/model/weights';

beforeAll(() => initBackend({ backend: 'wasm', log: null }));

// ------------------------------------------------------------------------------- the emulated order

type Madd = (a: number, b: number, c: number) => number;

/** a·b + c rounded once to float32 (a·b is exact in float64; the sum's rounding error is carried by TwoSum). */
const fusedMadd: Madd = (a, b, c) => {
  const p = a * b;
  const s = p + c;
  const bb = s - p;
  const e = p - (s - bb) + (c - bb);
  const r = Math.fround(s);
  if (e === 0 || s === r) return r;
  // s exactly halfway between two floats: the exact value is on e's side of it.
  const other = 2 * s - r;
  if (Math.fround(other) !== other) return r;
  return Math.sign(e) === Math.sign(s - r) ? other : r;
};
const unfusedMadd: Madd = (a, b, c) => Math.fround(Math.fround(a * b) + c);

interface Part {
  k: number;
  a: (i: number, k: number) => number;
  b: (k: number, j: number) => number;
}

/**
 * Element (i, j) of Σ_parts Σ_k a·b in the kernel's order: per part, chains of GEMM_BLOCK_K
 * multiply-adds, each block's sum added to C (the first one written, unless C starts at `initial`).
 */
function emulateAt(madd: Madd, i: number, j: number, parts: Part[], initial?: number): number {
  let c = initial ?? 0;
  let first = initial === undefined;
  for (const { k, a, b } of parts) {
    for (let k0 = 0; k0 < k; k0 += GEMM_BLOCK_K) {
      let acc = 0;
      for (let q = k0; q < Math.min(k, k0 + GEMM_BLOCK_K); q++) acc = madd(a(i, q), b(q, j), acc);
      c = first ? acc : Math.fround(c + acc);
      first = false;
    }
  }
  return c;
}

/** The whole [m, n] result of `emulateAt`. */
function emulate(madd: Madd, m: number, n: number, parts: Part[], initial?: Float32Array): Float32Array {
  return Float32Array.from({ length: m * n }, (_, e) => emulateAt(madd, Math.floor(e / n), e % n, parts, initial?.[e]));
}

/**
 * Rows to check against the emulation: all of a small result, else the first and last 9 (every edge
 * tile and block) and a spread of the others.
 */
function rowsToCheck(m: number, n: number, k: number): number[] {
  if (m * n * k <= 4e6) return Array.from({ length: m }, (_, i) => i);
  const rows = new Set<number>();
  for (let i = 0; i < 9; i++) rows.add(i).add(m - 1 - i);
  for (let i = 9; i < m - 9; i += 37) rows.add(i);
  return [...rows].filter((i) => i >= 0 && i < m).sort((a, b) => a - b);
}

/** Whether `got` matches the emulation with `madd` on the rows of `rowsToCheck` (null) or where it first differs. */
function differsFromEmulation(madd: Madd, got: Float32Array, m: number, n: number, parts: Part[]): string | null {
  const k = parts.reduce((s, p) => s + p.k, 0);
  for (const i of rowsToCheck(m, n, k)) {
    for (let j = 0; j < n; j++) {
      const want = emulateAt(madd, i, j, parts);
      if (!Object.is(got[i * n + j], want)) return `element (${i}, ${j}): ${got[i * n + j]} vs ${want}`;
    }
  }
  return null;
}

function firstBitDifference(got: Float32Array, want: Float32Array): string | null {
  const [g, w] = [
    new Uint32Array(got.buffer, got.byteOffset, got.length),
    new Uint32Array(want.buffer, want.byteOffset, want.length),
  ];
  for (let i = 0; i < got.length; i++) if (g[i] !== w[i]) return `element ${i}: ${got[i]} vs ${want[i]}`;
  return null;
}

// --------------------------------------------------------------------------- the raw kernel, own memory

type Kernel = GemmExports;
interface WasmApi {
  Memory: new (d: { initial: number; maximum: number }) => { buffer: ArrayBuffer; grow(pages: number): number };
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: unknown };
}
const WebAssemblyApi = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

function rawKernel(base64: string): { kernel: Kernel; heap: () => Float32Array } {
  const memory = new WebAssemblyApi.Memory({ initial: 1, maximum: 65536 });
  memory.grow(2048); // 128 MiB
  const kernel = new WebAssemblyApi.Instance(
    new WebAssemblyApi.Module(Uint8Array.from(Buffer.from(base64, 'base64'))),
    { env: { memory } },
  ).exports as Kernel;
  return { kernel, heap: () => new Float32Array(memory.buffer) };
}

const SENTINEL = -1234.5; // never a product of the data below

describe.each([
  ['fma', FMA_WASM],
  ['mul-add', MUL_ADD_WASM],
])('the %s build of the kernel', (name, base64) => {
  beforeAll(() => expect(enableRelaxedSimd()).toBe(true));

  // [M, N, K]: 1s, primes, non-multiples of the 4x8 tile and of the blocks, K past one block and K = 4096.
  const shapes: [number, number, number][] = [
    [1, 1, 1],
    [1, 8, 3],
    [4, 8, 256],
    [5, 9, 257],
    [3, 17, 4096],
    [13, 7, 513],
    [37, 23, 100],
    [8, 64, 31],
    [67, 61, 2],
    [2, 300, 300],
  ];
  const modes = ['pack_t', 'pack_t transposed', 'pack_n', 'direct'] as const;

  test.each(shapes)(
    'M=%i N=%i K=%i: every operand mode, strided and unaligned, equals the emulated order bit for bit; nothing outside C written',
    (m, n, k) => {
      const { kernel, heap } = rawKernel(base64);
      const rand = seededRandom(m * 1000003 + n * 1009 + k);
      const madds: Madd[] = name === 'fma' ? [fusedMadd, unfusedMadd] : [unfusedMadd];
      let fusedSeen = 0;
      for (const mode of modes) {
        if (mode === 'direct' && n % 8 !== 0) continue;
        // Byte offsets ≡ 4, 8, 12 (mod 16); rows padded, so every stride differs from the width.
        const lda = k + 3,
          ldb = n + 5,
          ldc = n + 2;
        const transposedOut = mode === 'pack_t transposed';
        const [aAt, bAt, packAt, cAt, scratchAt] = [1028, 1 << 22, 2 << 22, (3 << 22) + 12, 4 << 22];
        const h = heap();
        // A [m, k] at aAt (lda); B given as [n, k] (pack_t) or [k, n] (pack_n, direct) at bAt.
        const bRows = mode.startsWith('pack_t') ? n : k;
        const bCols = mode.startsWith('pack_t') ? k : n;
        const bLd = mode.startsWith('pack_t') ? k + 1 : ldb;
        for (let i = 0; i < m; i++) for (let q = 0; q < k; q++) h[aAt / 4 + i * lda + q] = rand() * 2 - 1;
        for (let r = 0; r < bRows; r++) for (let q = 0; q < bCols; q++) h[(bAt + 8) / 4 + r * bLd + q] = rand() * 2 - 1;
        const bOf = (q: number, j: number) =>
          mode.startsWith('pack_t') ? h[(bAt + 8) / 4 + j * bLd + q] : h[(bAt + 8) / 4 + q * bLd + j];
        // C (or Cᵀ) with a guard of sentinels all around.
        const [cRows, cCols, cLd] = transposedOut ? [n, m, m + 2] : [m, n, ldc];
        const cBase = cAt / 4;
        h.fill(SENTINEL, cBase - 64, cBase + cRows * cLd + 64);
        const panels = Math.ceil(n / 8);
        h.fill(SENTINEL, (packAt + 12) / 4, (packAt + 12) / 4 + panels * k * 8 + 64);
        const a = (i: number, q: number) => h[aAt / 4 + i * lda + q];

        for (const add of [0, 1]) {
          const before = Float32Array.from(h.subarray(cBase, cBase + cRows * cLd));
          if (mode === 'pack_t' || mode === 'pack_t transposed') kernel.pack_t(bAt + 8, bLd * 4, n, k, packAt + 12);
          if (mode === 'pack_n') kernel.pack_n(bAt + 8, bLd * 4, k, n, packAt + 12);
          if (mode !== 'direct') {
            // The packed panels: exactly their documented size written, zeros past column N.
            const p = (packAt + 12) / 4;
            expect(h[p + panels * k * 8]).toBe(SENTINEL);
            let nonzeroPadding = 0;
            for (let q = 0; q < k; q++)
              for (let l = n % 8 || 8; l < 8; l++) if (h[p + (panels - 1) * k * 8 + q * 8 + l] !== 0) nonzeroPadding++;
            expect(nonzeroPadding).toBe(0);
          }
          const [b, bpanel, bk] = mode === 'direct' ? [bAt + 8, 32, bLd * 4] : [packAt + 12, k * 32, 32];
          kernel.gemm(
            aAt,
            lda * 4,
            b,
            bpanel,
            bk,
            cAt,
            cLd * 4,
            transposedOut ? 1 : 0,
            m,
            n,
            k,
            add,
            GEMM_BLOCK_K,
            256,
            scratchAt,
          );
          const got = new Float32Array(m * n);
          for (let i = 0; i < m; i++)
            for (let j = 0; j < n; j++)
              got[i * n + j] = transposedOut ? h[cBase + j * cLd + i] : h[cBase + i * cLd + j];
          const prior = add
            ? Float32Array.from({ length: m * n }, (_, e) =>
                transposedOut ? before[(e % n) * cLd + Math.floor(e / n)] : before[Math.floor(e / n) * cLd + (e % n)],
              )
            : null;
          const wanted = madds.map((madd) => emulate(madd, m, n, [{ k, a, b: bOf }], prior ?? undefined));
          const match = wanted.findIndex((w) => firstBitDifference(got, w) === null);
          if (match < 0) throw new Error(`${name} ${mode} add=${add}: ${firstBitDifference(got, wanted[0])}`);
          if (name === 'fma' && match === 0) fusedSeen++;
          // Nothing outside the C elements changed (the padding between rows included).
          for (let r = -64; r < cRows * cLd + 64; r++) {
            const inside = r >= 0 && r < cRows * cLd && r % cLd < cCols;
            if (!inside && h[cBase + r] !== SENTINEL) throw new Error(`${mode}: wrote outside C at ${r}`);
          }
        }
      }
      if (name === 'fma')
        expect(fusedSeen === 0 || fusedSeen === modes.filter((md) => md !== 'direct' || n % 8 === 0).length * 2).toBe(
          true,
        );
    },
  );
});

// ------------------------------------------------------------------------------ through tfjs tensors

/** A [rows, cols] tensor of seeded values in [-1, 1). */
function randomTensor(rows: number, cols: number, seed: number): tf.Tensor2D {
  const rand = seededRandom(seed);
  return tf.tensor2d(
    Float32Array.from({ length: rows * cols }, () => rand() * 2 - 1),
    [rows, cols],
  );
}

/** The build the active GEMM runs: its multiply-add (the fma build may also be unfused, on CPUs without FMA). */
function maddsOf(): Madd[] {
  return activeGemm() === 'fma' ? [fusedMadd, unfusedMadd] : [unfusedMadd];
}

describe('gemm() on the wasm backend with our kernel', () => {
  beforeAll(() => expect(activeGemm()).toMatch(/^(fma|mul-add)$/));

  test.each([
    // [M, N, K parts, layout, packed]: out-in with X packed (C written transposed) or W packed, by
    // default the smaller; in-out read in place (N = 64) or packed; parts summed.
    [577, 64, [1024], 'out-in', 'x'],
    [577, 64, [1024], 'out-in', 'w'],
    [7, 5, [3], 'out-in', 'x'],
    [67, 131, [300, 41], 'out-in', undefined],
    [133, 67, [300, 41], 'out-in', 'x'],
    [577, 577, [64], 'out-in', undefined],
    [577, 64, [577], 'in-out', undefined],
    [33, 100, [196, 196, 196], 'in-out', undefined],
    [1, 1, [1], 'in-out', undefined],
  ] as [number, number, number[], 'out-in' | 'in-out', 'x' | 'w' | undefined][])(
    'M=%i N=%i K=%j %s, packed %s: bit-identical to the emulated order, and from run to run',
    (m, n, ks, layout, pack) => {
      const xs = ks.map((k, j) => randomTensor(m, k, 100 + j));
      const ws = ks.map((k, j) => (layout === 'out-in' ? randomTensor(n, k, 200 + j) : randomTensor(k, n, 200 + j)));
      const before = tf.memory().numTensors;
      const y = gemm(xs, ws, layout, { pack });
      expect(y.shape).toEqual([m, n]);
      const got = y.dataSync() as Float32Array;
      const again = gemm(xs, ws, layout, { pack });
      expect(firstBitDifference(again.dataSync() as Float32Array, got)).toBeNull();
      tf.dispose([y, again]);
      expect(tf.memory().numTensors).toBe(before);
      const parts: Part[] = ks.map((k, j) => {
        const x = xs[j].dataSync();
        const w = ws[j].dataSync();
        return { k, a: (i, q) => x[i * k + q], b: (q, c) => (layout === 'out-in' ? w[c * k + q] : w[q * n + c]) };
      });
      const diffs = maddsOf().map((madd) => differsFromEmulation(madd, got, m, n, parts));
      expect(diffs).toContain(null);
      tf.dispose([...xs, ...ws]);
    },
  );

  test('a row of the output does not depend on the other rows (any M, any position)', () => {
    const x = randomTensor(577, 1024, 1);
    const w = randomTensor(64, 1024, 2);
    const all = gemm([x], [w], 'out-in').dataSync();
    for (const [start, rows] of [
      [0, 1],
      [576, 1],
      [100, 7],
      [3, 300],
    ]) {
      const part = tf.slice(x, [start, 0], [rows, 1024]);
      const y = gemm([part], [w], 'out-in');
      expect(
        firstBitDifference(y.dataSync() as Float32Array, all.slice(start * 64, (start + rows) * 64) as Float32Array),
      ).toBeNull();
      tf.dispose([part, y]);
    }
    tf.dispose([x, w]);
  });

  test('a packed operand is never reused for another tensor, nor for another shape of the same data', () => {
    const w = randomTensor(64, 128, 3);
    const x1 = randomTensor(50, 128, 4);
    const x2 = randomTensor(50, 128, 5);
    const y1 = gemm([x1], [w], 'out-in');
    const y2 = gemm([x2], [w], 'out-in');
    const ref2 = tf.matMul(x2, w, false, true);
    expect(tf.max(tf.abs(tf.sub(y2, ref2))).dataSync()[0]).toBeLessThan(1e-4);
    const reshaped = tf.reshape<tf.Rank.R2>(x1, [100, 64]);
    const w2 = randomTensor(64, 64, 6);
    const y3 = gemm([reshaped], [w2], 'out-in');
    expect(tf.max(tf.abs(tf.sub(y3, tf.matMul(reshaped, w2, false, true)))).dataSync()[0]).toBeLessThan(1e-4);
    tf.dispose([w, x1, x2, y1, y2, ref2, reshaped, w2, y3]);
  });

  test("accuracy against float64: no worse than XNNPACK on the forward's shapes (K = 1024, 4096)", () => {
    for (const [m, n, k] of [
      [577, 64, 1024],
      [200, 16, 4096],
    ]) {
      const x = randomTensor(m, k, 7);
      const w = randomTensor(n, k, 8);
      const ours = gemm([x], [w], 'out-in').dataSync();
      const xnnpack = tf.matMul(x, tf.transpose(w)).dataSync();
      const [xv, wv] = [x.dataSync(), w.dataSync()];
      let [sq, sqX] = [0, 0];
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let exact = 0;
          for (let q = 0; q < k; q++) exact += xv[i * k + q] * wv[j * k + q];
          sq += (ours[i * n + j] - exact) ** 2;
          sqX += (xnnpack[i * n + j] - exact) ** 2;
        }
      }
      const [rms, rmsX] = [Math.sqrt(sq / (m * n)), Math.sqrt(sqX / (m * n))];
      expect(rms).toBeLessThan(rmsX);
      expect(rms).toBeLessThan(2 ** -24 * Math.sqrt(k) * 4); // a few float32 roundings of the O(√K) sum
      tf.dispose([x, w]);
    }
  });

  test('gradients equal those of the same product through tfjs matMul', () => {
    const xs = [randomTensor(9, 20, 11), randomTensor(9, 7, 12)];
    for (const layout of ['out-in', 'in-out'] as const) {
      const ws =
        layout === 'out-in'
          ? [randomTensor(5, 20, 13), randomTensor(5, 7, 14)]
          : [randomTensor(20, 5, 13), randomTensor(7, 5, 14)];
      const dy = randomTensor(9, 5, 15);
      const loss =
        (f: (...t: tf.Tensor2D[]) => tf.Tensor2D) =>
        (...t: tf.Tensor[]) =>
          tf.sum(tf.mul(f(...(t as tf.Tensor2D[])), dy));
      const ours = tf.grads(loss((x0, x1, w0, w1) => gemm([x0, x1], [w0, w1], layout)))([...xs, ...ws]);
      const reference = tf.grads(
        loss((x0, x1, w0, w1) =>
          tf.add(tf.matMul(x0, w0, false, layout === 'out-in'), tf.matMul(x1, w1, false, layout === 'out-in')),
        ),
      )([...xs, ...ws]);
      ours.forEach((g, i) => expect(tf.max(tf.abs(tf.sub(g, reference[i]))).dataSync()[0]).toBeLessThan(1e-5));
      tf.dispose([...ws, dy, ...ours, ...reference]);
    }
    tf.dispose(xs);
  });

  test('frozen Linears are stored [out, in] for the kernel, trainable ones [in, out]; both give the same outputs as under XNNPACK', () => {
    const x = randomTensor(10, 12, 21);
    const outputs: Record<string, Float32Array> = {};
    for (const g of ['auto', 'xnnpack'] as const) {
      setGemmChoice(g);
      for (const trainable of [false, true]) {
        const lin = new Linear({ inFeatures: 12, outFeatures: 8, trainable, split: { along: 'in', parts: 2 } });
        const own = g === 'auto';
        expect(lin.ownGemm).toBe(own);
        expect(lin.kernels[0].shape).toEqual(own && !trainable ? [8, 6] : [6, 8]);
        const params = lin.params();
        const rand = seededRandom(5);
        const weight = Float32Array.from({ length: 8 * 12 }, () => rand() - 0.5);
        // Write the checkpoint's [out, in] weight through the layer's own blocks.
        params.weight.variables.forEach((v, j) => {
          const b = params.weight.blocks[j];
          const block = new Float32Array(b.nr * b.nc);
          for (let r = 0; r < b.nr; r++)
            for (let c = 0; c < b.nc; c++)
              block[b.transposed ? c * b.nr + r : r * b.nc + c] = weight[(b.r0 + r) * 12 + b.c0 + c];
          v.write(tf.tensor(block, v.shape as number[]));
        });
        const y = lin.apply(x) as tf.Tensor;
        outputs[`${g} ${trainable}`] = y.dataSync() as Float32Array;
        tf.dispose(y);
        disposeWeights(lin);
      }
    }
    setGemmChoice('auto');
    const ref = outputs['xnnpack false'];
    for (const [k, v] of Object.entries(outputs)) {
      for (let i = 0; i < ref.length; i++) expect(Math.abs(v[i] - ref[i])).toBeLessThan(1e-5 + 1e-5 * Math.abs(ref[i]));
      expect(k).toBeTruthy();
    }
    x.dispose();
  });
});

// ------------------------------------------------------------------------------ LLAVA_VISION_GEMM

describe('LLAVA_VISION_GEMM', () => {
  const probe = (value: string | undefined) => {
    const script = `
      const { initBackend } = require('./dist/src/backend');
      const { activeGemm } = require('./dist/src/model/kernels/gemm');
      const { Linear } = require('./dist/src/model/linear');
      initBackend({ backend: 'wasm', log: (l) => console.log(l) }).then(() => {
        const lin = new Linear({ inFeatures: 4, outFeatures: 3, trainable: false });
        console.log(JSON.stringify({ gemm: activeGemm(), own: lin.ownGemm, shape: lin.kernel.shape }));
      }).catch((e) => { console.log('ERROR ' + e.name + ': ' + e.message); });`;
    const env = { ...process.env };
    delete env.LLAVA_VISION_GEMM;
    if (value !== undefined) env.LLAVA_VISION_GEMM = value;
    const r = spawnSync(process.execPath, ['-e', script], { cwd: path.join(__dirname, '..'), env, encoding: 'utf8' });
    return r.stdout.trim().split('\n');
  };

  test("xnnpack forces tfjs's matMul: named in the log line, weights in the [in, out] layout", () => {
    const [line, json] = probe('xnnpack');
    expect(line).toMatch(/tfjs backend "wasm" \(.*GEMM xnnpack \(tfjs's XNNPACK\)\)/);
    expect(JSON.parse(json)).toEqual({ gemm: 'xnnpack', own: false, shape: [4, 3] });
  });

  test('by default the FMA kernel runs where relaxed SIMD does (Node 20: behind the V8 flag set at backend start), and fma forces it', () => {
    for (const value of [undefined, 'auto', 'fma']) {
      const [line, json] = probe(value);
      expect(line).toMatch(/GEMM fma \(own kernel, relaxed-SIMD FMA\)/);
      expect(JSON.parse(json)).toEqual({ gemm: 'fma', own: true, shape: [3, 4] });
    }
    const [line] = probe('mul-add');
    expect(line).toMatch(/GEMM mul-add \(own kernel, SIMD mul \+ add\)/);
  });

  test('an unknown value is a ConfigError naming the variable and the choices', () => {
    expect(probe('blas')[0]).toBe(
      'ERROR ConfigError: LLAVA_VISION_GEMM="blas" is not a GEMM (choose from auto, fma, mul-add, xnnpack)',
    );
  });
});

test('the mul-add build rewrites every relaxed multiply-add of the .wat, and refuses a form it cannot rewrite', () => {
  expect(withoutRelaxedSimd('(local.set $c (f32x4.relaxed_madd (local.get $a) (local.get $b) (local.get $c)))')).toBe(
    '(local.set $c (f32x4.add (f32x4.mul (local.get $a) (local.get $b)) (local.get $c)))',
  );
  expect(() =>
    withoutRelaxedSimd('(f32x4.relaxed_madd (v128.load (local.get $p)) (local.get $b) (local.get $c))'),
  ).toThrow(/cannot rewrite/);
  // A mention in a comment is not an instruction.
  expect(withoutRelaxedSimd(';; f32x4.relaxed_madd is rewritten\n(nop)')).toBe(
    ';; f32x4.relaxed_madd is rewritten\n(nop)',
  );
});
