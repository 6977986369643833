import * as tf from '@tensorflow/tfjs';

/**
 * One checkpoint tensor of a block, named as in HF checkpoints (`weight`, `bias`, ...).
 * `checkpointShape` is the PyTorch shape. The tensor lives in one variable, possibly in another layout
 * (`fromCheckpoint`/`toCheckpoint`, e.g. the patch kernel kept as [C·P·P, D]), or in several variables,
 * the parts of a derived layout (`split`/`join`, e.g. one slice per attention head), so the backend runs
 * plain 2-D GEMMs on them without slicing anything at run time.
 */
export interface Param {
  /** Every variable holding the tensor, in `split` order (one for a tensor stored whole). */
  readonly variables: tf.LayerVariable[];
  /** The variable of a tensor stored whole; throws for one stored in parts (use `variables`). */
  readonly variable: tf.LayerVariable;
  readonly checkpointShape: number[];
  /**
   * Checkpoint (PyTorch-layout) data -> the variable's data, for a tensor stored whole in another layout.
   * With `scratch` (at least as long as `data`) the result may be a view of it, valid until its next use.
   */
  readonly fromCheckpoint?: (data: Float32Array, scratch?: Float32Array) => Float32Array;
  readonly toCheckpoint?: (data: Float32Array) => Float32Array;
  /** Checkpoint data -> one array per variable (views of `scratch` when given), and back, for a tensor stored in parts. */
  readonly split?: (data: Float32Array, scratch?: Float32Array) => Float32Array[];
  readonly join?: (parts: Float32Array[]) => Float32Array;
}

/** A tensor stored in one variable (in the checkpoint's layout unless `layout` converts it). */
export function wholeParam(
  variable: tf.LayerVariable,
  checkpointShape: number[],
  layout: { fromCheckpoint: (data: Float32Array, scratch?: Float32Array) => Float32Array; toCheckpoint: (data: Float32Array) => Float32Array } | null = null,
): Param {
  return { variables: [variable], variable, checkpointShape, ...layout };
}

/** A tensor stored as the parts of a derived layout, one variable per part. */
export function partsParam(
  variables: tf.LayerVariable[],
  checkpointShape: number[],
  split: (data: Float32Array, scratch?: Float32Array) => Float32Array[],
  join: (parts: Float32Array[]) => Float32Array,
): Param {
  if (variables.length === 1) {
    return wholeParam(variables[0], checkpointShape, { fromCheckpoint: (d, scratch) => split(d, scratch)[0], toCheckpoint: (d) => join([d]) });
  }
  return {
    variables,
    get variable(): tf.LayerVariable {
      throw new Error(`this tensor (checkpoint shape [${checkpointShape.join(', ')}]) is stored in ${variables.length} parts: use Param.variables`);
    },
    checkpointShape,
    split,
    join,
  };
}

type Initializer = ReturnType<typeof tf.initializers.zeros>;

/**
 * The initial value of weights a checkpoint load overwrites: zeros written by the backend in place
 * (`tf.fill`), where `tf.initializers.zeros()` builds a JS array and copies it in (~1 s more for ViT-L).
 */
export function zerosInPlace(): Initializer {
  return { apply: (shape: number[], dtype?: tf.DataType) => tf.fill(shape, 0, dtype ?? 'float32') } as unknown as Initializer;
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

/** How many variables (tensors) hold the parameters below `module`: one per part of a split tensor. */
export function countVariables(module: Module): number {
  let n = 0;
  for (const [, p] of namedParams(module)) n += p.variables.length;
  return n;
}

/** Row-major [rows, cols] -> [cols, rows] (into `out` when given). */
export function transpose2d(data: Float32Array, rows: number, cols: number, out?: Float32Array): Float32Array {
  return transposeRegion(data, cols, 0, rows, 0, cols, out);
}

const TILE = 64;

/**
 * The [nr, nc] block at (r0, c0) of a row-major matrix with `cols` columns, transposed: [nc, nr]
 * (into the first nr·nc elements of `out` when given). Tiled, so both sides are walked in cache-sized
 * squares, four source rows at a time so each output row gets four adjacent writes (~1.7x a plain
 * tiled loop; a checkpoint load transposes ~200 M elements for ViT-L).
 */
export function transposeRegion(data: Float32Array, cols: number, r0: number, nr: number, c0: number, nc: number, out?: Float32Array): Float32Array {
  out = out ? out.subarray(0, nr * nc) : new Float32Array(nr * nc);
  for (let rb = 0; rb < nr; rb += TILE) {
    const rEnd = Math.min(rb + TILE, nr);
    for (let cb = 0; cb < nc; cb += TILE) {
      const cEnd = Math.min(cb + TILE, nc);
      let r = rb;
      for (; r + 4 <= rEnd; r += 4) {
        const s0 = (r0 + r) * cols + c0;
        const [s1, s2, s3] = [s0 + cols, s0 + 2 * cols, s0 + 3 * cols];
        for (let c = cb; c < cEnd; c++) {
          const o = c * nr + r;
          out[o] = data[s0 + c];
          out[o + 1] = data[s1 + c];
          out[o + 2] = data[s2 + c];
          out[o + 3] = data[s3 + c];
        }
      }
      for (; r < rEnd; r++) {
        const src = (r0 + r) * cols + c0;
        for (let c = cb; c < cEnd; c++) out[c * nr + r] = data[src + c];
      }
    }
  }
  return out;
}

/** Writes `block` ([nc, nr], i.e. transposed) back into the [nr, nc] region at (r0, c0) of `data`. */
export function untransposeRegion(block: Float32Array, data: Float32Array, cols: number, r0: number, nr: number, c0: number, nc: number): void {
  for (let rb = 0; rb < nr; rb += TILE) {
    const rEnd = Math.min(rb + TILE, nr);
    for (let cb = 0; cb < nc; cb += TILE) {
      const cEnd = Math.min(cb + TILE, nc);
      for (let r = rb; r < rEnd; r++) {
        const dst = (r0 + r) * cols + c0;
        for (let c = cb; c < cEnd; c++) data[dst + c] = block[c * nr + r];
      }
    }
  }
}
