import * as tf from '../tf';
import { allocateUninitialized } from './wasm_heap';
import { Block } from '../io/blocks';
import { numel } from '../io/dtype';

/**
 * One checkpoint tensor of a block, named as in HF checkpoints (`weight`, `bias`, ...).
 * `checkpointShape` is the PyTorch shape. The tensor lives in one variable or in several, each holding
 * one block of the tensor viewed as a row-major [rows, `cols`] matrix, as is or transposed (e.g. the
 * patch kernel kept as [C·P·P, D], one slice per attention head), so the backend runs plain 2-D GEMMs on
 * them without slicing anything at run time. Loading and exporting are copies of those blocks.
 */
export interface Param {
  /** Every variable holding the tensor, in the order of `blocks`. */
  readonly variables: tf.LayerVariable[];
  /** The variable of a tensor stored whole; throws for one stored in parts (use `variables`). */
  readonly variable: tf.LayerVariable;
  readonly checkpointShape: number[];
  readonly cols: number;
  readonly blocks: Block[];
}

/** A tensor in one variable: in the checkpoint's layout, or `transposed` as a [rows, rest] matrix (e.g. [C·P·P, D] for a [D, C, P, P] conv). */
export function wholeParam(variable: tf.LayerVariable, checkpointShape: number[], transposed = false): Param {
  const n = numel(checkpointShape);
  const rows = transposed ? checkpointShape[0] : 1;
  return {
    variables: [variable],
    variable,
    checkpointShape,
    cols: n / rows,
    blocks: [{ r0: 0, nr: rows, c0: 0, nc: n / rows, transposed }],
  };
}

/** A tensor stored as blocks of a [rows, `cols`] view of it, one variable per block. */
export function blocksParam(
  variables: tf.LayerVariable[],
  checkpointShape: number[],
  cols: number,
  blocks: Block[],
): Param {
  return {
    variables,
    get variable(): tf.LayerVariable {
      if (variables.length === 1) return variables[0];
      throw new Error(
        `this tensor (checkpoint shape [${checkpointShape.join(', ')}]) is stored in ${variables.length} parts: use Param.variables`,
      );
    },
    checkpointShape,
    cols,
    blocks,
  };
}

/** True when the parameter is one variable holding the tensor exactly as the checkpoint lays it out. */
export function storedAsIs(p: Param): boolean {
  const [b] = p.blocks;
  return p.blocks.length === 1 && !b.transposed && b.nr * b.nc === numel(p.checkpointShape);
}

/**
 * How a module's weights start out. `zeros` (LayerNorm scales: ones), written by the backend in place.
 * `uninitialised`, for modules whose every weight a checkpoint load overwrites next: on wasm their
 * memory is then only allocated, not written (zeroing ViT-L is a separate first pass over 1.2 GB of
 * fresh memory), and the loader fills it in place; whoever builds such a module
 * must load every weight or dispose it. Off wasm both start at zeros.
 */
export type WeightInit = 'zeros' | 'uninitialised';

type Zeros = ReturnType<typeof tf.initializers.zeros>;
// tfjs-layers exports its initializers as factories only: extend the class `zeros()` instantiates.
const ZerosInitializer = tf.initializers.zeros().constructor as new () => Zeros;

/**
 * The Initializer `addWeight` gets for `init`: the constant `value` written by the backend in place
 * (`tf.fill`, where `tf.initializers.zeros()` builds a JS array and copies it in, a second pass over
 * the memory), or for `uninitialised` memory left as the allocator gives it (see WeightInit).
 */
class InitialWeights extends ZerosInitializer {
  constructor(
    private readonly init: WeightInit,
    private readonly value: number,
  ) {
    super();
  }

  override apply(shape: tf.Shape, dtype: tf.DataType = 'float32'): tf.Tensor {
    const dims = shape.map((n) => n ?? 1);
    return (
      (this.init === 'uninitialised' ? allocateUninitialized(dims, dtype) : null) ?? tf.fill(dims, this.value, dtype)
    );
  }
}

export function initialWeights(init: WeightInit = 'zeros', value = 0): Zeros {
  return new InitialWeights(init, value);
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
