import * as tf from '@tensorflow/tfjs';
import { CheckpointError } from '../errors';
import { Module, Param, namedParams } from './module';

/** What the loader needs from a checkpoint (safetensors, sharded, torch .bin): names, shapes, float data. */
export interface TensorSource {
  readonly source: string;
  has(name: string): boolean;
  info(name: string): { shape: number[]; dtype: string };
  readFloat32(name: string): Float32Array;
  /** Optional: the same data into the first elements of `out`, returned as a view (no fresh array). */
  readFloat32Into?(name: string, out: Float32Array): Float32Array;
}

/** Maps a module path (`vision_model.embeddings.class_embedding`) to the checkpoint key of a layout. */
export type KeyMap = (modulePath: string) => string;

const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);
const sameShape = (a: number[], b: number[]) => a.length === b.length && a.every((v, i) => v === b[i]);
const fmt = (s: number[]) => `[${s.join(', ')}]`;

/**
 * Loads every parameter of `module` from `source`: a walk over module paths, each mapped to its
 * checkpoint key. A missing key or a shape that disagrees with the config is an error naming the key.
 * Tensors are read and uploaded one at a time (a split tensor part by part), so peak memory stays near
 * the converted weights.
 */
export function loadWeights(module: Module, source: TensorSource, keyFor: KeyMap = (p) => p): string[] {
  const params = [...namedParams(module)];
  // Check everything before writing anything: a bad checkpoint leaves the model untouched.
  for (const [path, param] of params) {
    const key = keyFor(path);
    if (!source.has(key)) {
      throw new CheckpointError(`${source.source}: missing tensor "${key}" (expected shape ${fmt(param.checkpointShape)})`);
    }
    const { shape } = source.info(key);
    if (!sameShape(shape, param.checkpointShape)) {
      throw new CheckpointError(
        `${source.source}: tensor "${key}" has shape ${fmt(shape)} but the config expects ${fmt(param.checkpointShape)}`,
      );
    }
  }
  const loaded: string[] = [];
  // The wasm backend copies a tensor's data into its own heap on creation, so two scratch arrays (read,
  // converted) can serve every tensor in turn: fresh arrays cost a page fault per 4 KB, seconds for
  // ViT-L. Other backends may keep the array they are given: those get fresh ones.
  const reuse = tf.getBackend() === 'wasm';
  const largest = Math.max(0, ...params.map(([p]) => numel(source.info(keyFor(p)).shape)));
  const readBuf = reuse && source.readFloat32Into ? new Float32Array(largest) : null;
  const scratch = reuse ? new Float32Array(largest) : undefined;
  for (const [path, param] of params) {
    const key = keyFor(path);
    const data = readBuf ? source.readFloat32Into!(key, readBuf) : source.readFloat32(key);
    const into = scratch;
    const parts = param.split ? param.split(data, into) : [param.fromCheckpoint ? param.fromCheckpoint(data, into) : data];
    param.variables.forEach((variable, i) => {
      const value = tf.tensor(parts[i], variable.shape as number[], 'float32');
      variable.write(value);
      value.dispose();
    });
    loaded.push(key);
  }
  return loaded;
}

/** A parameter's data in its checkpoint (PyTorch) layout. */
export function readParam(param: Param): Float32Array {
  const data = param.variables.map((v) => v.read().dataSync() as Float32Array);
  if (param.join) return param.join(data);
  return param.toCheckpoint ? param.toCheckpoint(data[0]) : Float32Array.from(data[0]);
}

/** The module's parameters as float32 checkpoint tensors (PyTorch layout), keyed by `keyFor(path)`. */
export function exportWeights(module: Module, keyFor: KeyMap = (p) => p): Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> {
  const out: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const [path, param] of namedParams(module)) out[keyFor(path)] = { dtype: 'F32', shape: [...param.checkpointShape], data: readParam(param) };
  return out;
}

/** Frees every variable below `module`. */
export function disposeWeights(module: Module): void {
  for (const [, param] of namedParams(module)) for (const v of param.variables) v.dispose();
}
