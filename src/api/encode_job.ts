import * as tf from '@tensorflow/tfjs';
import { ConfigError } from '../errors';
import { TensorToWrite } from '../io/safetensors';
import { EncodeResult, LlavaVision, OutputName } from './llava_vision';

export interface EncodeJobOptions {
  outputs: OutputName[];
  /** Images per forward; results are identical whatever the batch size. */
  batchSize?: number;
  interpolatePosEncoding?: boolean;
  onProgress?: (done: number, total: number) => void;
}

/** Output tensors of image i, named as the CLI writes them (users script against these names). */
export function imageTensorNames(i: number, result: EncodeResult, row: number): Record<string, TensorToWrite> {
  const out: Record<string, TensorToWrite> = {};
  const take = (t: tf.Tensor, name: string) => {
    const [, ...rest] = t.shape;
    const slice = tf.tidy(() => t.slice([row, ...rest.map(() => 0)], [1, ...rest]));
    out[`images.${i}.${name}`] = { dtype: 'F32', shape: slice.shape, data: slice.dataSync() as Float32Array };
    slice.dispose();
  };
  result.hiddenStates?.forEach((h, k) => take(h, `hidden_states.${k}`));
  if (result.features) take(result.features, 'features');
  if (result.projected) take(result.projected, 'projected');
  if (result.poolerOutput) take(result.poolerOutput, 'pooler_output');
  return out;
}

/**
 * Runs N images' pixel values [N, 3, H, W] through the model in batches and returns the named
 * per-image tensors `images.<i>.<output>` with a leading axis of 1.
 */
export function encodePixelValues(model: LlavaVision, pixels: tf.Tensor4D, options: EncodeJobOptions): Record<string, TensorToWrite> {
  const batchSize = options.batchSize ?? 1;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new ConfigError(`batch size must be a positive integer, got ${batchSize}`);
  const [n, c, h, w] = pixels.shape;
  const out: Record<string, TensorToWrite> = {};
  for (let start = 0; start < n; start += batchSize) {
    const count = Math.min(batchSize, n - start);
    const batch = pixels.slice([start, 0, 0, 0], [count, c, h, w]);
    const result = model.encode(batch, { outputs: options.outputs, interpolatePosEncoding: options.interpolatePosEncoding });
    for (let r = 0; r < count; r++) Object.assign(out, imageTensorNames(start + r, result, r));
    tf.dispose([batch, ...(result.hiddenStates ?? []), result.features, result.projected, result.poolerOutput].filter(Boolean) as tf.Tensor[]);
    options.onProgress?.(start + count, n);
  }
  return out;
}
