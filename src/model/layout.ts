import * as tf from '../tf';

/**
 * How the tower stores and runs its weights, chosen once when it is built (from the backend). Both
 * compute the same function (they differ only in how GEMMs are grouped, so in float32 rounding);
 * checkpoint keys, `params()` and export are the same.
 * - `wasm`: for tfjs-backend-wasm's XNNPACK, whose only fast GEMM is a plain 2-D one: q/k/v stored
 *   per head, attention head by head, the MLP in blocks with fc1 as the left operand (docs/performance.md,
 *   "What makes it fast on wasm"). Also used on cpu and tensorflow.
 * - `batched`: for GPUs, where each dispatch has a fixed cost: whole weights, one GEMM per projection,
 *   and every head's scores and context in one batched matMul each.
 */
export type TowerLayout = 'wasm' | 'batched';
export const TOWER_LAYOUTS: readonly TowerLayout[] = ['wasm', 'batched'];

export function layoutForBackend(backend: string): TowerLayout {
  return backend === 'webgpu' ? 'batched' : 'wasm';
}

/** The layout for the active backend. */
export function defaultTowerLayout(): TowerLayout {
  return layoutForBackend(tf.getBackend());
}
