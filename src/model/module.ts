import * as tf from '@tensorflow/tfjs';

/**
 * One trainable/loadable tensor of a block, named as in HF checkpoints (`weight`, `bias`, ...).
 * `checkpointShape` is the PyTorch shape; `fromCheckpoint` reorders checkpoint data into the
 * variable's layout when they differ (e.g. Linear kernels are kept as [in, out] so the wasm
 * backend runs its fast non-transposed GEMM).
 */
export interface Param {
  variable: tf.LayerVariable;
  checkpointShape: number[];
  fromCheckpoint?: (data: Float32Array) => Float32Array;
  toCheckpoint?: (data: Float32Array) => Float32Array;
}

/** A node of the module tree whose paths mirror checkpoint keys. */
export interface Module {
  /** Leaf tensors of this module, by their last key segment. */
  params(): Record<string, Param>;
  /** Sub-modules, by key segment (`embeddings`, `layers`, `0`, ...). */
  children(): Record<string, Module>;
}

/** A module with children only (e.g. HF's `encoder` holding `layers`), not a layer itself. */
export class ModuleGroup implements Module {
  constructor(private readonly members: Record<string, Module>) {}
  params(): Record<string, Param> {
    return {};
  }
  children(): Record<string, Module> {
    return this.members;
  }
}

/** Every parameter below `module`, with its full dotted key. */
export function* namedParams(module: Module, prefix = ''): Generator<[string, Param]> {
  for (const [name, p] of Object.entries(module.params())) yield [prefix + name, p];
  for (const [name, child] of Object.entries(module.children())) yield* namedParams(child, `${prefix}${name}.`);
}

/** Row-major [rows, cols] -> [cols, rows]. */
export function transpose2d(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = data[base + c];
  }
  return out;
}
