/**
 * Loading a model sharded across threads (LoadOptions.threads > 1): every thread builds only its shard
 * of each layer and reads only its slices of the checkpoint (rows of q/k/v and fc1, columns of out_proj
 * and fc2), all threads at once; this thread also holds the embeddings, the LayerNorms and the biases
 * added after the reductions. No thread holds a whole tower weight it does not run; the projector is
 * also held whole on this thread, as the layer that trains (LlavaVision.projector).
 */
import type { CLIPVisionConfig } from '../../config/clip';
import { checkVisionConfigAgainstWeights } from '../../model/config_checks';
import { CLIPVisionEmbeddings } from '../../model/embeddings';
import { Module, ModuleGroup, namedParams } from '../../model/module';
import { ShardedProjector, ShardedVisionModel } from '../../model/parallel/coordinator';
import { readHostTowerWeights, readVector } from '../../model/parallel/host_weights';
import { planRanks, splitRange } from '../../model/parallel/partition';
import { RankCompute, TowerShard, projectorShard } from '../../model/parallel/shards';
import { Projector, ProjectorConfig } from '../../model/projector';
import { KeyMap, disposeWeights, loadWeights, prefaultWeights } from '../../model/weights';
import { LocalProjectorRunner, ProjectorRunner } from '../../model/projector_runner';
import { OpenedSource, openTensorSource } from '../../loading/sources';
import { shardsProjector } from '../thread_count';
import { TensorParallelProjectorRunner } from './projector_runner';
import { ShardTeam } from './team';

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

/** The tower to shard: its config, the file it came from, and its folder (where its weights lie when not given). */
export interface TowerToShard {
  config: CLIPVisionConfig;
  configFile: string;
  folder: string;
}

/**
 * Loads `tower` sharded across the runtime's threads, from its own folder or from `weights` (a
 * LLaVA-1.6 or llava-hf checkpoint holding the tower under a prefix).
 */
export async function loadShardedTower(
  runtime: ShardedRuntime,
  tower: TowerToShard,
  weights?: { tensors: OpenedSource; keyFor: KeyMap },
): Promise<ShardedVisionModel> {
  const { team, rank0 } = runtime;
  const own = weights ? null : openTensorSource(tower.folder);
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
    return new ShardedVisionModel(config, embeddings, host, rank0, team);
  } catch (e) {
    shard?.dispose();
    if (embeddings) for (const w of embeddings.weights) w.dispose();
    throw e;
  } finally {
    own?.close();
  }
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

/**
 * How a loaded projector runs: on this thread, or (threads > 1, a projector the ranks can split) also cut
 * into the ranks' slices, read from `source` by the ranks.
 */
export async function projectorRunner(
  layer: Projector,
  runtime: ShardedRuntime | null,
  source: OpenedSource,
  keyFor: KeyMap,
): Promise<ProjectorRunner> {
  const config = layer.projectorConfig;
  if (!runtime || !shardsProjector(config, runtime.threads)) return new LocalProjectorRunner(layer);
  const shards = await loadShardedProjector(runtime, config, source, keyFor);
  return new TensorParallelProjectorRunner(layer, shards, runtime.team);
}
