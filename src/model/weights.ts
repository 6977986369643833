import * as tf from '@tensorflow/tfjs';
import { CheckpointError } from '../errors';
import { Module, namedParams } from './module';

/** What the loader needs from a checkpoint (safetensors, sharded, torch .bin): names, shapes, float data. */
export interface TensorSource {
  readonly source: string;
  has(name: string): boolean;
  info(name: string): { shape: number[]; dtype: string };
  readFloat32(name: string): Float32Array;
}

/** Maps a module path (`vision_model.embeddings.class_embedding`) to the checkpoint key of a layout. */
export type KeyMap = (modulePath: string) => string;

const sameShape = (a: number[], b: number[]) => a.length === b.length && a.every((v, i) => v === b[i]);
const fmt = (s: number[]) => `[${s.join(', ')}]`;

/**
 * Loads every parameter of `module` from `source`: a walk over module paths, each mapped to its
 * checkpoint key. A missing key or a shape that disagrees with the config is an error naming the key.
 * Tensors are read and uploaded one at a time, so peak memory stays near the converted weights.
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
  for (const [path, param] of params) {
    const key = keyFor(path);
    let data = source.readFloat32(key);
    if (param.fromCheckpoint) data = param.fromCheckpoint(data);
    const value = tf.tensor(data, param.variable.shape as number[], 'float32');
    param.variable.write(value);
    value.dispose();
    loaded.push(key);
  }
  return loaded;
}

/** The module's parameters as float32 checkpoint tensors (PyTorch layout), keyed by `keyFor(path)`. */
export function exportWeights(module: Module, keyFor: KeyMap = (p) => p): Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> {
  const out: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
  for (const [path, param] of namedParams(module)) {
    let data = param.variable.read().dataSync() as Float32Array;
    data = param.toCheckpoint ? param.toCheckpoint(data) : Float32Array.from(data);
    out[keyFor(path)] = { dtype: 'F32', shape: [...param.checkpointShape], data };
  }
  return out;
}

/** Frees every variable below `module`. */
export function disposeWeights(module: Module): void {
  for (const [, param] of namedParams(module)) param.variable.dispose();
}
