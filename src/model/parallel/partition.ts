/**
 * How a tower and projector are cut into tensor-parallel shards (Megatron-LM's layout, with threads for
 * GPUs): attention heads, MLP intermediate features and the projector's hidden width are split into
 * contiguous ranges, one per thread, as evenly as they go (16 heads over 3 threads: 6, 5, 5).
 */
import { CLIPVisionConfig } from '../../config/clip';

/** Features `start .. start + count − 1` of one dimension (heads, intermediate features, ...). */
export interface FeatureRange {
  start: number;
  count: number;
}

/** `total` split into `parts` contiguous ranges, the first `total % parts` one longer than the rest. */
export function splitRange(total: number, parts: number): FeatureRange[] {
  const base = Math.floor(total / parts);
  const longer = total % parts;
  const out: FeatureRange[] = [];
  for (let j = 0, start = 0; j < parts; j++) {
    const count = base + (j < longer ? 1 : 0);
    out.push({ start, count });
    start += count;
  }
  return out;
}

/** What one thread (rank) of a sharded model holds. */
export interface RankPlan {
  rank: number;
  ranks: number;
  /** Attention heads of every layer. */
  heads: FeatureRange;
  /** MLP intermediate features of every layer (fc1 outputs, fc2 inputs). */
  features: FeatureRange;
  /** The projector's hidden features (first Linear's outputs, last Linear's inputs); null when not sharded. */
  projectorHidden: FeatureRange | null;
}

/**
 * The most threads a tower can be split over: every thread needs at least one attention head (and
 * so at least one intermediate feature, since intermediate_size ≥ heads in every CLIP).
 */
export function maxRanks(config: CLIPVisionConfig): number {
  return Math.max(1, Math.min(config.numAttentionHeads, config.intermediateSize));
}

/** The plan of every rank: `ranks` ≤ maxRanks(config); `projectorHidden` is the projector's hidden width when it is sharded. */
export function planRanks(config: CLIPVisionConfig, ranks: number, projectorHidden: number | null): RankPlan[] {
  if (!Number.isInteger(ranks) || ranks < 1 || ranks > maxRanks(config))
    throw new RangeError(`cannot shard a tower with ${config.numAttentionHeads} heads over ${ranks} threads`);
  const heads = splitRange(config.numAttentionHeads, ranks);
  const features = splitRange(config.intermediateSize, ranks);
  const hidden = projectorHidden === null ? null : splitRange(projectorHidden, ranks);
  return heads.map((h, rank) => ({
    rank,
    ranks,
    heads: h,
    features: features[rank],
    projectorHidden: hidden ? hidden[rank] : null,
  }));
}
