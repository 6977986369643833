import * as tf from '../tf';
import { CheckpointError, shapeText } from '../errors';
import { prefaultMemory } from '../backend';
import { markWritten, unwrittenHeapView } from './wasm_heap';
import { Block, decodeBlock, encodeBlock } from '../io/blocks';
import type { Region } from '../io/safetensors';
import { DType, DTYPE_SIZE, isDType, isFloatDType, numel } from '../io/dtype';
import { WasmBlockDecoder } from './kernels/wasm_decoder';
import { Module, Param, namedParams, storedAsIs } from './module';

/** What the loader needs from a checkpoint (safetensors, sharded, torch .bin): names, shapes, float data. */
export interface TensorSource {
  readonly source: string;
  has(name: string): boolean;
  info(name: string): { shape: number[]; dtype: string };
  readFloat32(name: string): Float32Array;
  /**
   * Optional: the tensor's little-endian bytes in its own dtype, into the first bytes of `into` when
   * given (returned as a view). Lets the loader decode straight into the backend's memory.
   */
  readBytes?(name: string, into?: Uint8Array): Uint8Array;
  /**
   * Optional: a block of the tensor (seen as a row-major matrix of `region.cols` columns) as the bytes
   * of an [nr, nc] matrix in its own dtype. Lets a tensor-parallel shard read only its slices.
   */
  readRegion?(name: string, region: Region, into?: Uint8Array): Uint8Array;
}

/** Maps a module path (`vision_model.embeddings.class_embedding`) to the checkpoint key of a layout. */
export type KeyMap = (modulePath: string) => string;

const sameShape = (a: number[], b: number[]) => a.length === b.length && a.every((v, i) => v === b[i]);
const fmt = shapeText;
const bytesOf = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/**
 * Loads every parameter of `module` from `source`: a walk over module paths, each mapped to its
 * checkpoint key. A missing key, a shape that disagrees with the config or a non-float dtype is an error
 * naming the key, raised before anything is written.
 *
 * Tensors are read one at a time and decoded (and, for derived layouts, transposed) in one pass. A module
 * built with `init: 'uninitialised'` (WeightInit) on wasm is filled in place: each tensor goes straight into its
 * variables' memory in the wasm heap (an F32 tensor stored as is straight from the file), so the
 * weights are never held twice. Anywhere else each variable gets a new tensor.
 */
/**
 * Checks that `source` holds `key` with `expected` shape and a float dtype (a CheckpointError naming
 * the file and tensor otherwise) and gives its dtype.
 */
export function checkTensor(source: TensorSource, key: string, expected: number[]): DType {
  if (!source.has(key))
    throw new CheckpointError(`${source.source}: missing tensor "${key}" (expected shape ${fmt(expected)})`);
  const { shape, dtype } = source.info(key);
  if (!sameShape(shape, expected))
    throw new CheckpointError(
      `${source.source}: tensor "${key}" has shape ${fmt(shape)} but the config expects ${fmt(expected)}`,
    );
  if (!isDType(dtype) || !isFloatDType(dtype))
    throw new CheckpointError(`${source.source}: tensor "${key}": dtype ${dtype} cannot be read as float32`);
  return dtype;
}

export function loadWeights(module: Module, source: TensorSource, keyFor: KeyMap = (p) => p): string[] {
  // Check everything before writing anything: a bad checkpoint leaves the model untouched.
  const tensors = [...namedParams(module)].map(([path, param]) => {
    const key = keyFor(path);
    const dtype = checkTensor(source, key, param.checkpointShape);
    const shape = param.checkpointShape;
    // A parameter holding only part of its tensor (a shard) reads just the rows and columns its blocks cover.
    const region = source.readRegion ? coveredRegion(param) : null;
    const elements = region ? region.nr * region.nc : numel(shape);
    return { key, param, dtype, region, bytes: elements * DTYPE_SIZE[dtype] };
  });
  const readRegion = source.readRegion?.bind(source);
  const readBytes = source.readBytes
    ? (key: string, into: Uint8Array | undefined, region: Region | null) =>
        region ? readRegion!(key, region, into) : source.readBytes!(key, into)
    : undefined;
  const direct = (t: (typeof tensors)[number]) => !!readBytes && t.dtype === 'F32' && storedAsIs(t.param);
  const largest = tensors.reduce((m, t) => (direct(t) ? m : Math.max(m, t.bytes)), 0);
  const decoder = readBytes && largest > 0 ? WasmBlockDecoder.create(largest) : null;
  const buffer = readBytes && !decoder ? new Uint8Array(largest) : null;
  try {
    for (const t of tensors) {
      const { key, param, dtype, bytes, region } = t;
      if (direct(t)) {
        overwriteVariable(param.variables[0], (out) => void readBytes!(key, bytesOf(out), null));
        continue;
      }
      // Blocks relative to what is read: the region, or the whole tensor.
      const cols = region ? region.nc : param.cols;
      const blocks = region
        ? param.blocks.map((b) => ({ ...b, r0: b.r0 - region.r0, c0: b.c0 - region.c0 }))
        : param.blocks;
      // Heap views are taken after every allocation and used before the next one (a heap growth detaches them).
      const inPlace = decoder ? param.variables.map((v) => unwrittenHeapView(v.read())) : [];
      if (decoder && inPlace.every((o) => o !== null)) {
        const input = decoder.input(bytes);
        readBytes!(key, input, region);
        decoder.decode(dtype, input, cols, blocks, inPlace, key);
        for (const v of param.variables) markWritten(v.read());
        continue;
      }
      const [fileDType, data]: [DType, Uint8Array] = readBytes
        ? [dtype, readBytes(key, buffer ?? new Uint8Array(bytes), region)]
        : ['F32', bytesOf(source.readFloat32(key))];
      const [dataCols, dataBlocks] = readBytes ? [cols, blocks] : [param.cols, param.blocks];
      param.variables.forEach((v, j) =>
        overwriteVariable(v, (out) => decodeBlock(fileDType, data, dataCols, dataBlocks[j], out, key)),
      );
    }
  } finally {
    decoder?.dispose();
  }
  return tensors.map(({ key }) => key);
}

/**
 * The rows and columns of a parameter's [rows, cols] view its blocks cover, when that is less than the
 * whole tensor (a tensor-parallel shard); null when they cover all of it.
 */
function coveredRegion(param: Param): Region | null {
  const cols = param.cols;
  const rows = numel(param.checkpointShape) / cols;
  const extent = (b: Block) => ({ r1: b.r0 + b.nr, c1: b.c0 + b.nc });
  let [r0, c0, r1, c1] = [rows, cols, 0, 0];
  for (const b of param.blocks) {
    r0 = Math.min(r0, b.r0);
    c0 = Math.min(c0, b.c0);
    r1 = Math.max(r1, extent(b).r1);
    c1 = Math.max(c1, extent(b).c1);
  }
  if (param.blocks.length === 0 || (r0 === 0 && c0 === 0 && r1 === rows && c1 === cols)) return null;
  return { cols, r0, nr: r1 - r0, c0, nc: c1 - c0 };
}

/**
 * For a module just built for loading: its variables' wasm heap memory faulted in on several threads
 * (`prefaultMemory`) before `loadWeights` writes it, rather than page by page on this thread. A no-op on
 * other backends.
 */
export async function prefaultWeights(module: Module): Promise<void> {
  const views: Float32Array[] = [];
  for (const [, param] of namedParams(module)) {
    for (const v of param.variables) {
      const view = unwrittenHeapView(v.read());
      if (view) views.push(view);
    }
  }
  await prefaultMemory(views);
}

/** Sets a parameter from float32 data in its checkpoint (PyTorch) layout. */
export function writeParam(param: Param, data: Float32Array): void {
  if (data.length !== numel(param.checkpointShape))
    throw new RangeError(`${data.length} values for a tensor of shape ${fmt(param.checkpointShape)}`);
  param.variables.forEach((v, j) =>
    overwriteVariable(v, (out) => decodeBlock('F32', bytesOf(data), param.cols, param.blocks[j], out, 'data')),
  );
}

/**
 * Replaces a variable's data with what `fill` writes into the array it is given: the variable's own
 * memory while it is fresh and unwritten (`unwrittenHeapView`), else a new array uploaded as a new
 * tensor (other backends may keep the array they are given, so it is never reused).
 */
function overwriteVariable(variable: tf.LayerVariable, fill: (out: Float32Array) => void): void {
  const current = variable.read();
  const inPlace = unwrittenHeapView(current);
  if (inPlace) {
    fill(inPlace);
    markWritten(current);
    return;
  }
  const data = new Float32Array(current.size);
  fill(data);
  const value = tf.tensor(data, current.shape, 'float32');
  variable.write(value);
  value.dispose();
}

/** A parameter's data in its checkpoint (PyTorch) layout. */
export function readParam(param: Param): Float32Array {
  return toCheckpointLayout(
    param,
    param.variables.map((v) => v.read().dataSync() as Float32Array),
  );
}

/** Per-variable data of a parameter (its values, or e.g. their gradients) -> one array in the checkpoint's layout. */
export function toCheckpointLayout(param: Param, parts: Float32Array[]): Float32Array {
  const out = new Float32Array(numel(param.checkpointShape));
  parts.forEach((part, j) => encodeBlock(part, out, param.cols, param.blocks[j]));
  return out;
}

/** The module's parameters as float32 checkpoint tensors (PyTorch layout), keyed by `keyFor(path)`. */
export function exportWeights(
  module: Module,
  keyFor: KeyMap = (p) => p,
): Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> {
  const out: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const [path, param] of namedParams(module))
    out[keyFor(path)] = { dtype: 'F32', shape: [...param.checkpointShape], data: readParam(param) };
  return out;
}

/** Frees every variable below `module`. */
export function disposeWeights(module: Module): void {
  for (const [, param] of namedParams(module)) for (const v of param.variables) v.dispose();
}
