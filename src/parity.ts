/**
 * The golden fixtures' parity rule, for this project's tests and for users' own Jest parity suites:
 * max|ours − truth| ≤ k · torch_fp32_max_abs_err + f32_storage_max_abs_err, i.e. our float32 error
 * against the float64 truth stays within a small multiple of PyTorch float32's own error.
 */
export const DEFAULT_PARITY_K = 4;

export interface ParityMeta {
  torch_fp32_max_abs_err?: number;
  f32_storage_max_abs_err?: number;
}

export interface ParityResult {
  maxAbsErr: number;
  bound: number;
  /** maxAbsErr / torch_fp32_max_abs_err: 1 means "as far from the truth as PyTorch fp32". */
  ratio: number;
  ok: boolean;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= m)) m = d; // a NaN anywhere makes m NaN, which fails every bound
  }
  return m;
}

/** The rule's bound for one tensor: k · torch_fp32_max_abs_err + f32_storage_max_abs_err (a missing field counts 0). */
export function parityBound(meta: ParityMeta, k = DEFAULT_PARITY_K): number {
  return k * (meta.torch_fp32_max_abs_err ?? 0) + (meta.f32_storage_max_abs_err ?? 0);
}

export function checkParity(
  ours: ArrayLike<number>,
  truth: ArrayLike<number>,
  meta: ParityMeta,
  k = DEFAULT_PARITY_K,
): ParityResult {
  const maxAbsErr = maxAbsDiff(ours, truth);
  const torchErr = meta.torch_fp32_max_abs_err ?? 0;
  const bound = parityBound(meta, k);
  return {
    maxAbsErr,
    bound,
    ratio: torchErr > 0 ? maxAbsErr / torchErr : maxAbsErr === 0 ? 0 : Infinity,
    ok: maxAbsErr <= bound,
  };
}
