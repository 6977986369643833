/**
 * How many threads a model runs on: the option, LLAVA_VISION_THREADS or the available cores, capped by
 * the backend, the tower layout and the attention heads; and how a load would split a model across them
 * (what `inspect` reports). No worker_threads here: reporting a split starts no thread.
 */
import * as os from 'os';
import type { CLIPVisionConfig } from '../config/clip';
import { ConfigError } from '../errors';
import type { TowerLayout } from '../model/layout';
import { maxRanks, planRanks } from '../model/parallel/partition';
import { ProjectorConfig, projectorDepth } from '../model/projector';

export const THREADS_ENV_VAR = 'LLAVA_VISION_THREADS';

/** The cores this process may use (Node ≥ 18.14: availableParallelism, else the CPU count). */
export function availableCores(): number {
  const fn = (os as { availableParallelism?: () => number }).availableParallelism;
  return Math.max(1, fn ? fn() : os.cpus().length);
}

/**
 * The thread count a load asks for: the option, else LLAVA_VISION_THREADS, else the available cores.
 * A ConfigError naming the option or variable when it is not a positive integer.
 */
export function requestedThreads(option: number | undefined): number {
  if (option !== undefined) {
    if (!Number.isInteger(option) || option < 1)
      throw new ConfigError(`threads must be a positive integer, got ${option}`);
    return option;
  }
  const env = process.env[THREADS_ENV_VAR];
  if (env === undefined || env === '') return availableCores();
  if (!/^\d+$/.test(env.trim()) || Number(env) < 1)
    throw new ConfigError(`${THREADS_ENV_VAR}="${env}" is not a positive integer`);
  return Number(env);
}

/**
 * Threads a tower runs on: the request, on the wasm backend with the `wasm` layout only (other
 * backends run their own threads or a GPU), at most one per attention head.
 */
export function effectiveThreads(
  requested: number,
  backend: string,
  config: CLIPVisionConfig,
  layout?: TowerLayout,
): number {
  return backend === 'wasm' && (layout ?? 'wasm') === 'wasm' ? Math.min(requested, maxRanks(config)) : 1;
}

/** How a load with the default thread count would split a model (what `inspect` reports). */
export interface ThreadsSummary {
  /** The thread count asked for, and where it came from. */
  requested: number;
  from: typeof THREADS_ENV_VAR | 'available cores';
  /** Threads the tower runs on (wasm; other backends run on one). */
  threads: number;
  /** Attention heads, MLP features and projector hidden features per thread. */
  heads: number[];
  features: number[];
  projectorHidden: number[] | null;
}

export function threadsSummary(config: CLIPVisionConfig, projector: ProjectorConfig | null): ThreadsSummary {
  const requested = requestedThreads(undefined);
  const threads = effectiveThreads(requested, 'wasm', config);
  const sharded = projector !== null && shardsProjector(projector, threads);
  const plans = planRanks(config, threads, sharded ? projector.outFeatures : null);
  return {
    requested,
    from: process.env[THREADS_ENV_VAR] ? THREADS_ENV_VAR : 'available cores',
    threads,
    heads: plans.map((p) => p.heads.count),
    features: plans.map((p) => p.features.count),
    projectorHidden: sharded ? plans.map((p) => p.projectorHidden!.count) : null,
  };
}

/** Whether a projector is sharded across `threads`: mlp2x_gelu, with at least one hidden feature per thread. */
export function shardsProjector(config: ProjectorConfig, threads: number): boolean {
  return threads > 1 && projectorDepth(config.type) === 2 && config.outFeatures >= threads;
}
