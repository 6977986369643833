/**
 * Loading a model sharded across threads (LoadOptions.threads > 1): every thread builds only its shard
 * of each layer and reads only its slices of the checkpoint (rows of q/k/v and fc1, columns of out_proj
 * and fc2), all threads at once; this thread also holds the embeddings, the LayerNorms and the biases
 * added after the reductions. No thread holds a whole tower weight it does not run; the projector is
 * also held whole on this thread, as the layer that trains (LlavaVision.projector).
 */
import * as os from 'os';
import { CLIPVisionConfig } from '../../config/clip';
import type { TowerLayout } from '../../model/layout';
import { ConfigError } from '../../errors';
import { checkVisionConfigAgainstWeights } from '../../model/config_checks';
import { CLIPVisionEmbeddings } from '../../model/embeddings';
import { Module, ModuleGroup, namedParams } from '../../model/module';
import { ShardedProjector, ShardedVisionModel } from '../../model/parallel/coordinator';
import { readHostTowerWeights, readVector } from '../../model/parallel/host_weights';
import { maxRanks, planRanks, splitRange } from '../../model/parallel/partition';
import { RankCompute, TowerShard, projectorShard } from '../../model/parallel/shards';
import { Projector, ProjectorConfig, projectorDepth } from '../../model/projector';
import { KeyMap, disposeWeights, loadWeights, prefaultWeights } from '../../model/weights';
import { OpenedSource, openTensorSource } from '../../loading/sources';
import type { CLIPVisionTower } from '../../api/vision_tower';
import { ShardTeam } from './team';

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

/** The shard threads and this thread's own shards (rank 0). */
export class ShardedRuntime {
  readonly rank0 = new RankCompute();

  private constructor(readonly team: ShardTeam) {}

  /** Spawns the threads (they start their backends while this thread goes on). */
  static start(threads: number): ShardedRuntime {
    return new ShardedRuntime(ShardTeam.spawn(threads));
  }

  get threads(): number {
    return this.team.ranks;
  }

  /** Ends the threads and frees this thread's shards. */
  close(): void {
    this.rank0.dispose();
    this.team.close();
  }

  /** After a failed load: frees this thread's shards and waits until every thread has ended. */
  async abort(): Promise<void> {
    this.rank0.dispose();
    await this.team.terminate();
  }
}

/** Module path -> checkpoint key for every parameter of a shard (the same paths on every rank). */
function keyTable(module: Module, keyFor: KeyMap): Record<string, string> {
  return Object.fromEntries([...namedParams(module)].map(([p]) => [p, keyFor(p)]));
}

/** Awaits the threads' start and loads; the first failure is thrown (after all have settled). */
async function allLoaded(team: ShardTeam, loads: Promise<void>[]): Promise<void> {
  const settled = await Promise.allSettled([team.ready, ...loads]);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;
}

/**
 * Loads `tower` sharded across the runtime's threads, from its own folder or from `weights` (a
 * LLaVA-1.6 or llava-hf checkpoint holding the tower under a prefix), and attaches it.
 */
export async function loadShardedTower(
  runtime: ShardedRuntime,
  tower: CLIPVisionTower,
  weights?: { tensors: OpenedSource; keyFor: KeyMap },
): Promise<void> {
  const { team, rank0 } = runtime;
  const own = weights ? null : openTensorSource(tower.visionTowerName);
  const tensors = weights?.tensors ?? own!;
  const keyFor = weights?.keyFor ?? ((p: string) => p);
  const config = tower.config;
  let shard: TowerShard | null = null;
  let embeddings: CLIPVisionEmbeddings | null = null;
  try {
    checkVisionConfigAgainstWeights(config, tensors, keyFor, tower.configFile);
    const plans = planRanks(config, team.ranks, null);
    shard = new TowerShard(config, plans[0]);
    const keys = keyTable(shard, keyFor);
    const others = allLoaded(
      team,
      plans
        .slice(1)
        .map((plan) => team.load(plan.rank, { type: 'loadTower', config, plan, entry: tensors.source, keys })),
    );
    others.catch(() => undefined); // awaited below; not an unhandled rejection while this thread loads
    embeddings = new CLIPVisionEmbeddings(config, {
      name: 'vision_model/embeddings',
      trainable: false,
      init: 'uninitialised',
    });
    const embeddingsModule = new ModuleGroup({ vision_model: new ModuleGroup({ embeddings }) });
    const host = readHostTowerWeights(config, tensors, keyFor);
    await prefaultWeights(shard);
    await prefaultWeights(embeddingsModule);
    loadWeights(embeddingsModule, tensors, keyFor);
    loadWeights(shard, tensors, keyFor);
    await others;
    rank0.tower = shard;
    tower.attachSharded(new ShardedVisionModel(config, embeddings, host, rank0, team));
  } catch (e) {
    shard?.dispose();
    if (embeddings) for (const w of embeddings.weights) w.dispose();
    throw e;
  } finally {
    own?.close();
  }
}

/** Whether a projector is sharded across `threads`: mlp2x_gelu, with at least one hidden feature per thread. */
export function shardsProjector(config: ProjectorConfig, threads: number): boolean {
  return threads > 1 && projectorDepth(config.type) === 2 && config.outFeatures >= threads;
}

/** Loads an mlp2x_gelu projector sharded across the runtime's threads (`source` must be re-openable by its name). */
export async function loadShardedProjector(
  runtime: ShardedRuntime,
  config: ProjectorConfig,
  source: OpenedSource,
  keyFor: KeyMap,
): Promise<ShardedProjector> {
  const { team, rank0 } = runtime;
  const hidden = splitRange(config.outFeatures, team.ranks);
  let shard: Projector | null = null;
  try {
    shard = projectorShard(config, hidden[0]);
    const keys = keyTable(shard, keyFor);
    const others = allLoaded(
      team,
      hidden
        .slice(1)
        .map((h, i) => team.load(i + 1, { type: 'loadProjector', config, hidden: h, entry: source.source, keys })),
    );
    others.catch(() => undefined);
    await prefaultWeights(shard);
    loadWeights(shard, source, keyFor);
    // After the shard's own tensors, so that a missing tensor is named in the checkpoint's order.
    const lastBias = (config.bias ?? true) ? readVector(source, keyFor('2.bias'), config.outFeatures) : null;
    await others;
    rank0.projector = shard;
    return new ShardedProjector(config, lastBias, rank0, team);
  } catch (e) {
    if (shard) disposeWeights(shard);
    throw e;
  }
}
