/**
 * Training the multimodal projector on a frozen tower (LLaVA stage-1 style): losses, one optimizer
 * step, gradients in checkpoint layout, saving/loading the projector under LLaVA or llava-hf names,
 * and a feature cache so the tower runs once per image, not once per step.
 */
import * as fs from 'fs';
import * as tf from '../tf';
import { DatasetProgress, StoredDType, openEncodedDataset, writeEncodedDataset } from '../dataset';
import { LlavaVision } from '../api/llava_vision';
import { openTensorSource } from '../loading/sources';
import { CheckpointError, ConfigError, ImageError, shapeText } from '../errors';
import { numel } from '../io/dtype';
import {
  CHECKPOINT_KINDS,
  PROJECTOR_PREFIXES,
  findProjectorKeys,
  inferProjectorType,
} from '../loading/checkpoint_kinds';
import { SafetensorsFile, TensorToWrite, writeSafetensors } from '../io/safetensors';
import { namedParams } from '../model/module';
import { Projector } from '../model/projector';
import { seededRandom } from '../random';

export { seededRandom };
import { KeyMap, exportWeights, loadWeights, toCheckpointLayout, writeParam } from '../model/weights';

export type LossFn = (prediction: tf.Tensor, target: tf.Tensor) => tf.Scalar;

/**
 * Sum of all elements in two levels (blocks of ~sqrt(n), then the block sums). A single float32
 * loop over n terms drifts by up to ~n·ulp; torch's reductions are cascaded, and the parity bound on
 * the loss is a few ulp, so the sum is split the same way. Differentiable (pad/reshape/sum).
 */
export function blockedSum(x: tf.Tensor): tf.Scalar {
  return tf.tidy(() => {
    const n = x.size;
    const flat = tf.reshape(x, [n]);
    if (n <= 64) return tf.sum<tf.Scalar>(flat);
    const block = Math.ceil(Math.sqrt(n));
    const rows = Math.ceil(n / block);
    const padded = rows * block === n ? flat : tf.pad(flat, [[0, rows * block - n]]);
    return tf.sum<tf.Scalar>(tf.sum(tf.reshape(padded, [rows, block]), 1));
  });
}

/** `torch.nn.functional.mse_loss(prediction, target)` with `reduction='mean'` (or `'sum'`). */
export function mseLoss(prediction: tf.Tensor, target: tf.Tensor, reduction: 'mean' | 'sum' = 'mean'): tf.Scalar {
  if (!tf.util.arraysEqual(prediction.shape, target.shape)) {
    throw new ConfigError(
      `mseLoss: prediction shape ${shapeText(prediction.shape)} and target shape ${shapeText(target.shape)} differ`,
    );
  }
  return tf.tidy(() => {
    const total = blockedSum(tf.squaredDifference(prediction, target));
    return reduction === 'sum' ? total : tf.div<tf.Scalar>(total, prediction.size);
  });
}

/** The projector's trainable tf.Variables (what to pass as `varList` to `optimizer.minimize`). */
export function trainableVariables(projector: Projector): tf.Variable[] {
  return projector.trainableWeights.map((w) => w.read() as tf.Variable);
}

export interface StepOptions {
  /** Default `mseLoss` (mean). */
  loss?: LossFn;
}

/**
 * One optimizer step on the projector: loss(projector(features), target), gradients of the
 * projector's trainable weights only, `optimizer.applyGradients`. Returns the loss before the step
 * (torch's `loss.item()` of that forward). No tensor is left behind.
 */
export function trainStep(
  projector: Projector,
  features: tf.Tensor,
  target: tf.Tensor,
  optimizer: tf.Optimizer,
  options: StepOptions = {},
): number {
  const loss = options.loss ?? mseLoss;
  const cost = optimizer.minimize(() => loss(projector.call(features), target), true, trainableVariables(projector));
  const value = cost!.dataSync()[0];
  cost!.dispose();
  return value;
}

export interface ProjectorGradients {
  loss: number;
  /** Keyed by `keyFor(module path)`; data in the checkpoint's (PyTorch) layout, e.g. [out, in] weights. */
  grads: Record<string, { shape: number[]; data: Float32Array }>;
}

/** Loss and gradients of every projector parameter, in PyTorch layout and names (`0.weight`, ...). */
export function projectorGradients(
  projector: Projector,
  features: tf.Tensor,
  target: tf.Tensor,
  options: StepOptions & { keyFor?: KeyMap } = {},
): ProjectorGradients {
  const loss = options.loss ?? mseLoss;
  const keyFor = options.keyFor ?? ((p: string) => p);
  const { value, grads } = tf.variableGrads(
    () => loss(projector.call(features), target),
    trainableVariables(projector),
  );
  try {
    const out: ProjectorGradients = { loss: value.dataSync()[0], grads: {} };
    for (const [path, param] of namedParams(projector)) {
      const parts = param.variables.map((v) => {
        const g = grads[(v.read() as tf.Variable).name];
        if (!g) throw new ConfigError(`no gradient for projector parameter ${path} (is it trainable?)`);
        return g.dataSync() as Float32Array;
      });
      out.grads[keyFor(path)] = { shape: [...param.checkpointShape], data: toCheckpointLayout(param, parts) };
    }
    return out;
  } finally {
    tf.dispose([value, ...Object.values(grads)]);
  }
}

// ------------------------------------------------------------------------------------- save / load

export type ProjectorNames = 'llava' | 'llava_hf';

export interface SaveProjectorOptions {
  /**
   * `llava` (default): `model.mm_projector.<idx>.<weight|bias>` (`model.mm_projector.weight` for a
   * bare `linear`), the keys of LLaVA's checkpoints and `mm_projector.bin`.
   * `llava_hf`: `multi_modal_projector.linear_{1,2}.<weight|bias>` (mlp2x_gelu only, as in llava-hf).
   */
  names?: ProjectorNames;
  /** Extra `__metadata__` entries. */
  metadata?: Record<string, string>;
}

/** Key map of a projector naming scheme. */
export function projectorKeyMap(names: ProjectorNames): KeyMap {
  return names === 'llava' ? CHECKPOINT_KINDS.llava.projectorKey! : CHECKPOINT_KINDS.llava_hf.projectorKey!;
}

/**
 * Writes the projector's weights as float32 safetensors (PyTorch [out, in] layout), atomically.
 * Metadata records `format: pt` and `mm_projector_type`. Returns the written keys.
 */
export function saveProjector(projector: Projector, file: string, options: SaveProjectorOptions = {}): string[] {
  const names = options.names ?? 'llava';
  if (names !== 'llava' && names !== 'llava_hf')
    throw new ConfigError(`saveProjector: names must be "llava" or "llava_hf", got "${String(names)}"`);
  if (projector.type === 'identity')
    throw new ConfigError(`saveProjector: an identity projector has no weights to save (${file})`);
  if (names === 'llava_hf' && projector.type !== 'mlp2x_gelu') {
    throw new ConfigError(
      `saveProjector: llava-hf names exist only for mlp2x_gelu projectors (linear_1, linear_2), this one is ${projector.type}`,
    );
  }
  const tensors: Record<string, TensorToWrite> = exportWeights(projector, projectorKeyMap(names));
  writeSafetensors(file, tensors, { format: 'pt', mm_projector_type: projector.type, ...options.metadata });
  return Object.keys(tensors).sort();
}

/**
 * Loads projector weights saved by `saveProjector` (either naming), a LLaVA checkpoint or
 * `mm_projector.bin`, or a llava-hf checkpoint into `projector`. The file's projector type must
 * match. Returns the keys read.
 */
export function loadProjectorWeights(projector: Projector, file: string): string[] {
  const source = openTensorSource(file);
  try {
    const keys = source.keys();
    const found = findProjectorKeys(keys);
    if (!found)
      throw new CheckpointError(`${file}: no projector tensors (${PROJECTOR_PREFIXES.map((p) => p + '*').join(', ')})`);
    const type = inferProjectorType(keys, found.prefix);
    if (type !== projector.type)
      throw new CheckpointError(
        `${file}: holds a ${type ?? 'unknown'} projector (${found.prefix}*), the model's is ${projector.type}`,
      );
    return loadWeights(projector, source, found.keyFor);
  } finally {
    source.close();
  }
}

/**
 * `nn.Linear.reset_parameters()` distribution for every linear of the projector: weight and bias
 * uniform in ±1/sqrt(in_features) (kaiming_uniform with a=sqrt(5)). Same distribution as torch, not
 * the same numbers (seeded JS PRNG). A fresh Projector starts at zeros, which cannot train an MLP.
 */
export function initProjector(projector: Projector, seed = 0): void {
  const rand = seededRandom(seed);
  for (const linear of projector.linears) {
    const bound = 1 / Math.sqrt(linear.inFeatures);
    for (const [, param] of namedParams(linear)) {
      const data = Float32Array.from({ length: numel(param.checkpointShape) }, () => (2 * rand() - 1) * bound);
      writeParam(param, data);
    }
  }
}

// ------------------------------------------------------------------------------------ feature cache

/** Cache key of image i: the names `llava-vision encode --save features` writes (`images.<i>.features`, [1, N, D]). */
export const featureKey = (i: number): string => `images.${i}.features`;

/** Writes features [B, N, D] as `images.<i>.features` [1, N, D] (float32), atomically. */
export function saveFeatureCache(
  file: string,
  features: tf.Tensor3D | Float32Array[],
  shape?: [number, number],
  metadata: Record<string, string> = {},
): void {
  const tensors: Record<string, TensorToWrite> = {};
  if (Array.isArray(features)) {
    if (!shape) throw new ConfigError('saveFeatureCache: pass the [N, D] shape with per-image arrays');
    features.forEach((data, i) => {
      tensors[featureKey(i)] = { dtype: 'F32', shape: [1, ...shape], data };
    });
  } else {
    const [b, n, d] = features.shape;
    const all = features.dataSync() as Float32Array;
    for (let i = 0; i < b; i++)
      tensors[featureKey(i)] = { dtype: 'F32', shape: [1, n, d], data: all.slice(i * n * d, (i + 1) * n * d) };
  }
  writeSafetensors(file, tensors, { kind: 'llava-vision feature cache', ...metadata });
}

export interface FeatureCacheOptions {
  /** Images per shard (default DEFAULT_SHARD_SIZE). */
  shardSize?: number;
  /** Stored dtype, F32 (default), F16 or BF16. */
  dtype?: StoredDType;
  /** Model instances (see encodeImages). */
  workers?: number;
  onProgress?: (progress: DatasetProgress) => void;
}

/**
 * The feature cache for training: images encoded once (decode, process_images, tower; no projector)
 * into a dataset folder of `images.<i>.features` [tiles, N, D] shards — what `llava-vision encode
 * --save features --out-dir DIR` writes — streamed, so memory does not grow with the number of
 * images, and resumed when run again on the same folder. Train from it with
 * `openEncodedDataset(dir).batches({ name: 'features', ... })`. Returns the number of images stored;
 * an image that cannot be encoded is an error here (after the others are stored).
 */
export async function encodeFeatureCache(
  model: LlavaVision,
  images: string[],
  dir: string,
  options: FeatureCacheOptions = {},
): Promise<number> {
  if (dir.endsWith('.safetensors')) {
    throw new ConfigError(
      `encodeFeatureCache writes a dataset folder (shards + manifest), not one file: name a folder instead of ${dir} (loadFeatureCache still reads single files)`,
    );
  }
  const summary = await writeEncodedDataset(model, images, dir, { outputs: ['features'], ...options });
  if (summary.failedTotal) {
    const ds = openEncodedDataset(dir);
    const failures = ds.failures;
    ds.close();
    throw new ImageError(
      `${failures.length} image(s) could not be encoded into ${dir}: ${failures.map((f) => f.error).join('; ')}`,
    );
  }
  return summary.images;
}

/**
 * All features of a cache as one [B, N, D] tensor: a dataset folder (`encodeFeatureCache`,
 * `encode --save features --out-dir`), or a single file of `images.<i>.features` (`saveFeatureCache`,
 * `encode --save features --out`). For caches that do not fit in memory, stream
 * `openEncodedDataset(dir).batches(...)` instead.
 */
export function loadFeatureCache(file: string): tf.Tensor3D {
  if (!fs.existsSync(file)) throw new CheckpointError(`${file}: feature cache not found`);
  if (fs.statSync(file).isDirectory()) return loadFeatureDataset(file);
  const st = SafetensorsFile.open(file);
  try {
    const indices = st
      .keys()
      .map((k) => /^images\.(\d+)\.features$/.exec(k))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
    if (indices.length === 0)
      throw new CheckpointError(`${file}: no images.<i>.features tensors (write it with encode --save features)`);
    indices.forEach((idx, i) => {
      if (idx !== i)
        throw new CheckpointError(
          `${file}: features are not numbered 0..${indices.length - 1} (missing ${featureKey(i)})`,
        );
    });
    let nd: number[] | null = null;
    const parts: Float32Array[] = [];
    for (const i of indices) {
      const { shape } = st.info(featureKey(i));
      const s = shape.length === 3 && shape[0] === 1 ? shape.slice(1) : shape;
      if (s.length !== 2)
        throw new CheckpointError(
          `${file}: ${featureKey(i)} has shape ${shapeText(shape)}, expected [1, N, D] or [N, D]`,
        );
      if (nd && (nd[0] !== s[0] || nd[1] !== s[1]))
        throw new CheckpointError(
          `${file}: ${featureKey(i)} has shape ${shapeText(shape)} but ${featureKey(0)} is ${shapeText(nd)}`,
        );
      nd = s;
      parts.push(st.readFloat32(featureKey(i)));
    }
    const [n, d] = nd!;
    const all = new Float32Array(indices.length * n * d);
    parts.forEach((p, i) => all.set(p, i * n * d));
    return tf.tensor3d(all, [indices.length, n, d]);
  } finally {
    st.close();
  }
}

function loadFeatureDataset(dir: string): tf.Tensor3D {
  const ds = openEncodedDataset(dir);
  try {
    if (ds.failures.length || ds.missing.length) {
      throw new CheckpointError(
        `${dir}: ${ds.failures.length} failed and ${ds.missing.length} missing image(s): the cache is incomplete`,
      );
    }
    if (ds.length === 0) throw new CheckpointError(`${dir}: no images`);
    const parts = Array.from({ length: ds.length }, (_, i) => ds.read(i, ['features']).tensors.features);
    const shape = parts[0].shape;
    for (const [i, p] of parts.entries()) {
      if (p.shape.length !== 3 || p.shape[0] !== 1 || !tf.util.arraysEqual(p.shape, shape)) {
        throw new CheckpointError(
          `${dir}: ${featureKey(i)} has shape ${shapeText(p.shape)}, expected ${shapeText([1, ...shape.slice(1)])} like image 0 (one tile per image)`,
        );
      }
    }
    const all = new Float32Array(parts.length * parts[0].data.length);
    parts.forEach((p, i) => all.set(p.data, i * p.data.length));
    return tf.tensor3d(all, [parts.length, shape[1], shape[2]]);
  } finally {
    ds.close();
  }
}
