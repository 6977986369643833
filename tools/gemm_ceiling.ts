/**
 * GEMM accounting for `npm run bench`: which matrix products a forward runs, how long they take inside
 * the forward, and how fast the same calls run on their own (the "GEMM ceiling").
 *
 * A `GemmMeter` wraps `tf.engine().runKernel` (dev tool only; the library never does this) and, for the
 * `BatchMatMul` / `_FusedMatMul` kernels and the project's own (`LlavaVisionGemm`, kernels/gemm.ts),
 * times each call (also per shape) and can record it: kernel, attributes, and for
 * every operand its shape and identity: a model weight (the variable itself, so the replay hits the
 * backend's cached packed copy exactly as the forward does) or an activation (a tensor living only inside
 * the forward; operands that were one tensor in the forward are one tensor in the replay, so per-call
 * packing of activations is replayed too). `replayGemms` then runs exactly those kernel calls, on random
 * activations of the same shapes, timing only the kernel calls.
 */
import * as tf from '../src/tf';
import {
  GEMM_KERNEL,
  GemmAttrs,
  GemmName,
  activeGemm,
  gemm,
  setGemmChoice,
  usesOwnGemm,
} from '../src/model/kernels/gemm';

const GEMM_KERNELS = new Set(['BatchMatMul', '_FusedMatMul', GEMM_KERNEL]);

type Operand =
  { kind: 'weight'; tensor: tf.Tensor; shape: number[] } | { kind: 'activation'; group: number; shape: number[] };

export interface GemmCall {
  kernel: string;
  inputs: Record<string, Operand>;
  /** The kernel takes its inputs as an array (the project's: x0, w0, x1, w1, ...). */
  arrayInputs: boolean;
  attrs: Record<string, unknown>;
  flops: number;
}

export interface GemmTotals {
  calls: number;
  ms: number;
  flops: number;
  /**
   * The same per product shape, `MxKxN` with M ≥ N (so a product and its transpose, e.g. XNNPACK's
   * W·xᵀ and our x·Wᵀ, share a key): a call summing several products (the project's kernel, with
   * parts) counts once per part, its time shared in proportion to their FLOPs.
   */
  byShape: Record<string, { calls: number; ms: number; flops: number }>;
}

type KernelInputs = Record<string, tf.Tensor> | tf.Tensor[];
type RunKernel = (name: string, inputs: KernelInputs, attrs?: Record<string, unknown>) => tf.Tensor | tf.Tensor[];

/** 2·batch·m·k·n of one matMul call (operands [..., m, k] × [..., k, n], transposes applied). */
export function gemmFlops(a: number[], b: number[], attrs: Record<string, unknown>): number {
  const { m, k, n, batch } = matMulDims(a, b, attrs);
  return 2 * batch * m * k * n;
}

function matMulDims(
  a: number[],
  b: number[],
  attrs: Record<string, unknown>,
): { m: number; k: number; n: number; batch: number } {
  const m = attrs.transposeA ? a[a.length - 1] : a[a.length - 2];
  const k = attrs.transposeA ? a[a.length - 2] : a[a.length - 1];
  const n = attrs.transposeB ? b[b.length - 2] : b[b.length - 1];
  const batch = Math.max(
    a.slice(0, -2).reduce((x, y) => x * y, 1),
    b.slice(0, -2).reduce((x, y) => x * y, 1),
  );
  return { m, k, n, batch };
}

/** A GEMM kernel call's products (one per part): shape keys (see GemmTotals.byShape) and FLOPs (2 per multiply-add). */
export function gemmShape(
  kernel: string,
  inputs: KernelInputs,
  attrs: Record<string, unknown>,
): { key: string; flops: number }[] {
  const key = (m: number, k: number, n: number, batch = 1) =>
    `${batch > 1 ? `${batch}x` : ''}${Math.max(m, n)}x${k}x${Math.min(m, n)}`;
  if (kernel === GEMM_KERNEL) {
    const ts = inputs as tf.Tensor2D[];
    const { layout } = attrs as unknown as GemmAttrs;
    const m = ts[0].shape[0];
    const n = layout === 'out-in' ? ts[1].shape[0] : ts[1].shape[1];
    const parts: { key: string; flops: number }[] = [];
    for (let j = 0; j < ts.length; j += 2)
      parts.push({ key: key(m, ts[j].shape[1], n), flops: 2 * m * ts[j].shape[1] * n });
    return parts;
  }
  const { a, b } = inputs as Record<string, tf.Tensor>;
  const { m, k, n, batch } = matMulDims(a.shape, b.shape, attrs);
  return [{ key: key(m, k, n, batch), flops: 2 * batch * m * k * n }];
}

const emptyTotals = (): GemmTotals => ({ calls: 0, ms: 0, flops: 0, byShape: {} });

export class GemmMeter {
  private readonly engine = tf.engine() as unknown as { runKernel: RunKernel };
  private readonly original: RunKernel;
  private readonly weights = new Map<object, tf.Tensor>(); // dataId -> the weight tensor
  private recording: { calls: GemmCall[]; groups: Map<object, number> } | null = null;
  private totals: GemmTotals = emptyTotals();

  /** Starts metering; `weights` are the model's variables (operands that are not activations). */
  constructor(weights: tf.Tensor[]) {
    for (const w of weights) this.weights.set(w.dataId, w);
    const engine = this.engine;
    const original = (this.original = engine.runKernel);
    engine.runKernel = (name, inputs, attrs) => {
      if (!GEMM_KERNELS.has(name)) return original.call(engine, name, inputs, attrs);
      if (this.recording) this.capture(name, inputs, attrs ?? {});
      const t0 = performance.now();
      const out = original.call(engine, name, inputs, attrs);
      const ms = performance.now() - t0;
      const parts = gemmShape(name, inputs, attrs ?? {});
      const flops = parts.reduce((sum, p) => sum + p.flops, 0);
      const t = this.totals;
      t.ms += ms;
      t.calls++;
      t.flops += flops;
      for (const p of parts) {
        const s = (t.byShape[p.key] ??= { calls: 0, ms: 0, flops: 0 });
        s.ms += flops ? (ms * p.flops) / flops : 0;
        s.calls++;
        s.flops += p.flops;
      }
      return out;
    };
  }

  /**
   * Runs `fn`, returning its result and the GEMM time, count and FLOPs inside it. (The time is that of
   * the kernel calls: on a GPU backend they only enqueue work, so only the count and FLOPs mean anything.)
   */
  async measure<T>(fn: () => T | Promise<T>): Promise<{ result: T; gemm: GemmTotals }> {
    const totals = (this.totals = emptyTotals());
    const result = await fn();
    // A snapshot: the meter goes on counting into its totals until the next measure.
    return {
      result,
      gemm: { ...totals, byShape: Object.fromEntries(Object.entries(totals.byShape).map(([k, v]) => [k, { ...v }])) },
    };
  }

  /** Like `measure`, also recording every GEMM call for `replayGemms`. */
  async record<T>(fn: () => T | Promise<T>): Promise<{ result: T; gemm: GemmTotals; calls: GemmCall[] }> {
    this.recording = { calls: [], groups: new Map() };
    try {
      const { result, gemm } = await this.measure(fn);
      return { result, gemm, calls: this.recording.calls };
    } finally {
      this.recording = null;
    }
  }

  /** Starts recording every GEMM call (for `replayGemms`) until `stopRecording`. */
  startRecording(): void {
    this.recording = { calls: [], groups: new Map() };
  }

  /** The calls recorded since `startRecording`. */
  stopRecording(): GemmCall[] {
    const calls = this.recording?.calls ?? [];
    this.recording = null;
    return calls;
  }

  private capture(kernel: string, inputs: KernelInputs, attrs: Record<string, unknown>): void {
    const rec = this.recording!;
    const operands: Record<string, Operand> = {};
    for (const [key, t] of Object.entries(inputs)) {
      if (!t) continue;
      const weight = this.weights.get(t.dataId);
      if (weight) operands[key] = { kind: 'weight', tensor: weight, shape: t.shape };
      else {
        if (!rec.groups.has(t.dataId)) rec.groups.set(t.dataId, rec.groups.size);
        operands[key] = { kind: 'activation', group: rec.groups.get(t.dataId)!, shape: t.shape };
      }
    }
    rec.calls.push({
      kernel,
      inputs: operands,
      arrayInputs: Array.isArray(inputs),
      attrs: { ...attrs },
      flops: gemmShape(kernel, inputs, attrs).reduce((sum, p) => sum + p.flops, 0),
    });
  }

  dispose(): void {
    this.engine.runKernel = this.original;
  }
}

/**
 * Runs the recorded GEMM calls alone, in order, with the same weights and fresh random activations
 * of the same shapes (one tensor per recorded activation, freed after its last use, outside the
 * timing). Returns the kernel time in ms.
 */
export function replayGemms(calls: GemmCall[]): number {
  const engine = tf.engine() as unknown as { runKernel: RunKernel };
  const lastUse = new Map<number, number>();
  calls.forEach((c, i) =>
    Object.values(c.inputs).forEach((op) => op.kind === 'activation' && lastUse.set(op.group, i)),
  );
  const templates = new Map<string, tf.Tensor>();
  const views = new Map<string, tf.Tensor>();
  const live = new Map<number, tf.Tensor>();
  const key = (shape: number[]) => shape.join('x');
  let ms = 0;
  try {
    calls.forEach((call, i) => {
      const inputs: Record<string, tf.Tensor> = {};
      for (const [name, op] of Object.entries(call.inputs)) {
        if (op.kind === 'weight') {
          const k = `${op.tensor.id}:${key(op.shape)}`;
          if (!views.has(k)) views.set(k, tf.reshape(op.tensor, op.shape)); // same data: same cached packing
          inputs[name] = views.get(k)!;
        } else {
          if (!live.has(op.group)) {
            if (!templates.has(key(op.shape)))
              templates.set(key(op.shape), tf.randomNormal(op.shape, 0, 1, 'float32', 7));
            live.set(op.group, tf.clone(templates.get(key(op.shape))!)); // a new tensor: packed afresh, like the forward's
          }
          inputs[name] = live.get(op.group)!;
        }
      }
      const t0 = performance.now();
      const out = engine.runKernel(
        call.kernel,
        call.arrayInputs ? Object.keys(inputs).map((k) => inputs[k]) : inputs,
        call.attrs,
      );
      ms += performance.now() - t0;
      tf.dispose(out);
      for (const op of Object.values(call.inputs)) {
        if (op.kind === 'activation' && lastUse.get(op.group) === i && live.has(op.group)) {
          live.get(op.group)!.dispose();
          live.delete(op.group);
        }
      }
    });
  } finally {
    tf.dispose([...live.values(), ...templates.values(), ...views.values()]);
  }
  return ms;
}

/**
 * The backend's GEMM rate on one shape with a weight-like (cached) right operand, e.g. [577, 1024] ×
 * [1024, 1024]: a reference point, not the ceiling. GFLOP/s, median of `reps` (each read back, so
 * on a GPU it includes the transfer of the result). With the project's GEMM: a Linear's product
 * (x · Wᵀ, W stored [n, k]), x packed afresh each call as in the forward.
 */
export async function gemmRate(m: number, k: number, n: number, reps = 5): Promise<number> {
  const rates = await gemmRates([[m, k, n]], [null], reps);
  return rates[0][0];
}

/**
 * `gemmRate` of each shape under each GEMM (`null`: the active one; else switched to with
 * setGemmChoice, wasm only), their calls interleaved so that drift hits them alike: rates[shape][gemm].
 */
export async function gemmRates(
  shapes: [number, number, number][],
  gemms: (GemmName | null)[],
  reps = 5,
): Promise<number[][]> {
  const before = activeGemm();
  const times = shapes.map(() => gemms.map(() => [] as number[]));
  const run = async (a: tf.Tensor2D, w: { kn: tf.Tensor2D; nk: tf.Tensor2D }, bias: tf.Tensor1D) => {
    const t0 = performance.now();
    const y = usesOwnGemm() ? gemm([a], [w.nk], 'out-in', { pack: 'x' }) : tf.fused.matMul({ a, b: w.kn, bias });
    await y.data();
    const ms = performance.now() - t0;
    y.dispose();
    return ms;
  };
  try {
    for (const [s, [m, k, n]] of shapes.entries()) {
      // Two inputs taken in turn: the project's GEMM packs its input afresh each call, as in the forward.
      const as = [tf.randomNormal<tf.Rank.R2>([m, k]), tf.randomNormal<tf.Rank.R2>([m, k])];
      const kn = tf.randomNormal<tf.Rank.R2>([k, n]);
      const w = { kn, nk: tf.transpose(kn) };
      const bias = tf.randomNormal<tf.Rank.R1>([n]);
      try {
        for (const name of gemms) {
          if (name) setGemmChoice(name);
          await run(as[0], w, bias); // packs the weight once (XNNPACK)
        }
        for (let r = 0; r < reps; r++) {
          for (const [g, name] of gemms.entries()) {
            if (name) setGemmChoice(name);
            times[s][g].push(await run(as[r % 2], w, bias));
          }
        }
      } finally {
        tf.dispose([...as, kn, w.nk, bias]);
      }
    }
  } finally {
    if (before && gemms.some((g) => g !== null)) setGemmChoice(before);
  }
  return times.map((perGemm, s) => {
    const [m, k, n] = shapes[s];
    return perGemm.map((ts) => (2 * m * k * n) / ([...ts].sort((x, y) => x - y)[ts.length >> 1] / 1000) / 1e9);
  });
}
