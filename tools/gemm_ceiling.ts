/**
 * GEMM accounting for `npm run bench`: which matrix products a forward runs, how long they take inside
 * the forward, and how fast the same calls run on their own (the "GEMM ceiling").
 *
 * A `GemmMeter` wraps `tf.engine().runKernel` (dev tool only; the library never does this) and, for the
 * `BatchMatMul` / `_FusedMatMul` kernels, times each call and can record it: kernel, attributes, and for
 * every operand its shape and identity: a model weight (the variable itself, so the replay hits the
 * backend's cached packed copy exactly as the forward does) or an activation (a tensor living only inside
 * the forward; operands that were one tensor in the forward are one tensor in the replay, so per-call
 * packing of activations is replayed too). `replayGemms` then runs exactly those kernel calls, on random
 * activations of the same shapes, timing only the kernel calls.
 */
import * as tf from '../src/tf';

const GEMM_KERNELS = new Set(['BatchMatMul', '_FusedMatMul']);

type Operand = { kind: 'weight'; tensor: tf.Tensor; shape: number[] } | { kind: 'activation'; group: number; shape: number[] };

export interface GemmCall {
  kernel: string;
  inputs: Record<string, Operand>;
  attrs: Record<string, unknown>;
  flops: number;
}

export interface GemmTotals {
  calls: number;
  ms: number;
  flops: number;
}

type RunKernel = (name: string, inputs: Record<string, tf.Tensor>, attrs?: Record<string, unknown>) => tf.Tensor | tf.Tensor[];

/** 2·batch·m·k·n of one matMul call (operands [..., m, k] × [..., k, n], transposes applied). */
export function gemmFlops(a: number[], b: number[], attrs: Record<string, unknown>): number {
  const m = attrs.transposeA ? a[a.length - 1] : a[a.length - 2];
  const k = attrs.transposeA ? a[a.length - 2] : a[a.length - 1];
  const n = attrs.transposeB ? b[b.length - 2] : b[b.length - 1];
  const batch = Math.max(a.slice(0, -2).reduce((x, y) => x * y, 1), b.slice(0, -2).reduce((x, y) => x * y, 1));
  return 2 * batch * m * k * n;
}

export class GemmMeter {
  private readonly engine = tf.engine() as unknown as { runKernel: RunKernel };
  private readonly original: RunKernel;
  private readonly weights = new Map<object, tf.Tensor>(); // dataId -> the weight tensor
  private recording: { calls: GemmCall[]; groups: Map<object, number> } | null = null;
  private totals: GemmTotals = { calls: 0, ms: 0, flops: 0 };

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
      this.totals.ms += performance.now() - t0;
      this.totals.calls++;
      this.totals.flops += gemmFlops(inputs.a.shape, inputs.b.shape, attrs ?? {});
      return out;
    };
  }

  /**
   * Runs `fn`, returning its result and the GEMM time, count and FLOPs inside it. (The time is that of
   * the kernel calls: on a GPU backend they only enqueue work, so only the count and FLOPs mean anything.)
   */
  async measure<T>(fn: () => T | Promise<T>): Promise<{ result: T; gemm: GemmTotals }> {
    this.totals = { calls: 0, ms: 0, flops: 0 };
    const result = await fn();
    return { result, gemm: { ...this.totals } };
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

  private capture(kernel: string, inputs: Record<string, tf.Tensor>, attrs: Record<string, unknown>): void {
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
    rec.calls.push({ kernel, inputs: operands, attrs: { ...attrs }, flops: gemmFlops(inputs.a.shape, inputs.b.shape, attrs) });
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
  calls.forEach((c, i) => Object.values(c.inputs).forEach((op) => op.kind === 'activation' && lastUse.set(op.group, i)));
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
            if (!templates.has(key(op.shape))) templates.set(key(op.shape), tf.randomNormal(op.shape, 0, 1, 'float32', 7));
            live.set(op.group, tf.clone(templates.get(key(op.shape))!)); // a new tensor: packed afresh, like the forward's
          }
          inputs[name] = live.get(op.group)!;
        }
      }
      const t0 = performance.now();
      const out = engine.runKernel(call.kernel, inputs, call.attrs);
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
 * on a GPU it includes the transfer of the result).
 */
export async function gemmRate(m: number, k: number, n: number, reps = 5): Promise<number> {
  const a = tf.randomNormal([m, k]);
  const b = tf.randomNormal([k, n]);
  const bias = tf.randomNormal([n]);
  try {
    tf.dispose(tf.fused.matMul({ a, b, bias })); // packs b once
    const times: number[] = [];
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      const y = tf.fused.matMul({ a, b, bias });
      await y.data();
      times.push(performance.now() - t0);
      y.dispose();
    }
    times.sort((x, y) => x - y);
    return (2 * m * k * n) / (times[times.length >> 1] / 1000) / 1e9;
  } finally {
    tf.dispose([a, b, bias]);
  }
}
