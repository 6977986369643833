import * as tf from '../tf';
import { MergeType } from '../config/llava';
import { ConfigError } from '../errors';

export interface MergeOptions {
  mergeType: MergeType;
  /** The tower's patches per side (height = width of each tile's feature grid). */
  patchesPerSide: number;
  /** anyres only: [tiles across, tiles down] from get_anyres_image_grid_shape. */
  gridShape?: [number, number];
  /** The original image's PIL size (width, height), for `spatial_unpad`. */
  imageSize?: [number, number];
  /** `model.image_newline` [H], appended after each row by `spatial_unpad`. */
  imageNewline?: tf.Tensor1D | null;
}

/**
 * The per-image feature sequence LLaVA inserts into the LLM input: `prepare_inputs_labels_for_multimodal`
 * (llava/model/llava_arch.py). `projected` is [tiles, N, H] (tile 0 = the whole image for anyres).
 * Returns [M, H].
 */
export function mergeImageFeatures(projected: tf.Tensor3D, options: MergeOptions): tf.Tensor2D {
  const [tiles, n, hidden] = projected.shape;
  return tf.tidy(() => {
    if (options.mergeType === 'flat') return tf.reshape(projected, [tiles * n, hidden]);
    const unpad = options.mergeType === 'spatial_unpad';
    const newline = () => {
      if (!options.imageNewline)
        throw new ConfigError(
          `mm_patch_merge_type "spatial_unpad" needs model.image_newline, which the checkpoint lacks`,
        );
      if (options.imageNewline.shape[0] !== hidden)
        throw new ConfigError(`image_newline has width ${options.imageNewline.shape[0]}, features have ${hidden}`);
      return options.imageNewline;
    };
    if (tiles === 1) {
      // A single (non-anyres) image: no grid; spatial_unpad still ends it with one newline.
      const base = tf.reshape(projected, [n, hidden]);
      return unpad ? tf.concat([base, tf.reshape(newline(), [1, hidden])], 0) : base;
    }
    const side = options.patchesPerSide;
    if (side * side !== n) throw new ConfigError(`${n} features per tile is not a ${side}x${side} grid`);
    if (!options.gridShape)
      throw new ConfigError(
        `spatial merge of ${tiles} tiles needs the anyres grid shape (image_aspect_ratio 'anyres')`,
      );
    const [across, down] = options.gridShape;
    if (across * down !== tiles - 1) {
      throw new ConfigError(`anyres grid ${across}x${down} does not match ${tiles - 1} tiles`);
    }
    const base = tf.reshape(tf.slice(projected, [0, 0, 0], [1, n, hidden]), [n, hidden]);
    // [down, across, side, side, H] -> rows of the full grid: [down·side, across·side, H]
    const tileGrid = tf.reshape(tf.slice(projected, [1, 0, 0], [tiles - 1, n, hidden]), [
      down,
      across,
      side,
      side,
      hidden,
    ]);
    const grid = tf.reshape(tf.transpose(tileGrid, [0, 2, 1, 3, 4]), [down * side, across * side, hidden]);
    if (!unpad) return tf.concat([base, tf.reshape(grid, [-1, hidden])], 0);
    if (!options.imageSize) throw new ConfigError(`spatial_unpad needs the original image size`);
    const kept = unpadGrid(grid as tf.Tensor3D, options.imageSize);
    const [rows, cols] = kept.shape;
    const newlines = tf.tile(tf.reshape(newline(), [1, 1, hidden]), [rows, 1, 1]);
    const withNewlines = tf.reshape(tf.concat([kept, newlines], 1), [rows * (cols + 1), hidden]);
    return tf.concat([base, withNewlines], 0);
  }) as tf.Tensor2D;
}

/**
 * LLaVA's `unpad_image` on a [rows, cols, H] grid: removes the rows or columns that
 * `resize_and_pad_image` filled with padding. Python float division and int() truncation;
 * the same `(cur - new) // 2` is cut from both sides, so the kept extent can be new + 1.
 */
export function unpadGrid(grid: tf.Tensor3D, imageSize: [number, number]): tf.Tensor3D {
  const [origW, origH] = imageSize;
  const [curH, curW, hidden] = grid.shape;
  if (origW / origH > curW / curH) {
    const newH = Math.trunc(origH * (curW / origW));
    const pad = Math.floor((curH - newH) / 2);
    return tf.slice(grid, [pad, 0, 0], [curH - 2 * pad, curW, hidden]);
  }
  const newW = Math.trunc(origW * (curH / origH));
  const pad = Math.floor((curW - newW) / 2);
  return tf.slice(grid, [0, pad, 0], [curH, curW - 2 * pad, hidden]);
}
