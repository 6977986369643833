/**
 * The shard-thread entry of `npm run bench -- --threads` (ShardTeam.entry): the shipped entry
 * (parallel/tensor/worker.ts) with requests of its own, run on each thread of a sharded model: records the GEMM calls a forward runs on that thread (its shard's
 * products, through its own tfjs engine) and replays them, all threads at once: the N-thread GEMM
 * ceiling. The coordinating thread does the same with GemmMeter directly (tools/bench_threads.ts).
 */
import type { RankCompute } from '../src/model/parallel/shards';
import { extendShardRequests } from '../src/parallel/tensor/worker';
import { GemmCall, GemmMeter, replayGemms } from './gemm_ceiling';

let meter: GemmMeter | null = null;
let calls: GemmCall[] = [];

/** What a thread recorded: its GEMM calls and their FLOPs. */
export interface RecordedGemms {
  calls: number;
  flops: number;
}

const shardHooks: Record<string, (ctx: { compute: RankCompute }) => unknown> = {
  recordStart: (ctx: { compute: RankCompute }): null => {
    meter?.dispose();
    meter = new GemmMeter(ctx.compute.weights());
    meter.startRecording();
    return null;
  },
  recordStop: (): RecordedGemms => {
    calls = meter?.stopRecording() ?? [];
    meter?.dispose();
    meter = null;
    return { calls: calls.length, flops: calls.reduce((s, c) => s + c.flops, 0) };
  },
  /** The recorded calls' kernel time (ms). */
  replay: (): number => replayGemms(calls),
};

extendShardRequests((request, ctx) => {
  const hook = shardHooks[request.kind];
  if (!hook) throw new Error(`no shard hook ${request.kind}`);
  return hook(ctx);
});
