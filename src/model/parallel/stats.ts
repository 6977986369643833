/** Where a sharded forward's time goes on the coordinating thread (ms), for `npm run bench`. */
export interface CoordinatorStats {
  steps: number;
  /** LayerNorms into shared memory (float64 JS). */
  layerNormMs: number;
  /** This thread's own shard's partial products. */
  computeMs: number;
  /** Waiting for the other threads after its own part. */
  waitMs: number;
  /** Summing partials, bias and residual (float64 JS). */
  reduceMs: number;
  /** Patch embedding and pre_layrnorm. */
  embedMs: number;
}

export const emptyStats = (): CoordinatorStats => ({
  steps: 0,
  layerNormMs: 0,
  computeMs: 0,
  waitMs: 0,
  reduceMs: 0,
  embedMs: 0,
});
