/**
 * How the coordinating thread and the shard threads of a sharded model talk. Loading is asynchronous
 * messages; once serving, a step is Atomics on a control array (no message, no copy): the coordinator
 * writes the step into it, bumps GEN and notifies; each thread computes its partial product into its
 * own shared output buffer, then bumps DONE and notifies. Rare requests with data (new buffers, memory
 * figures, the projector's weights) ride a message port read synchronously on both sides.
 */
import type { CLIPVisionConfig } from '../../config/clip';
import type { FeatureRange, RankPlan } from '../../model/parallel/partition';
import type { ProjectorConfig } from '../../model/projector';
import type { StepOp } from '../../model/parallel/shards';
import type { GemmChoice } from '../../model/kernels/gemm';
import type { ThreadError } from '../worker_thread';

/** Slots of the control Int32Array. */
export const CTL = { GEN: 0, DONE: 1, OP: 2, LAYER: 3, ROWS: 4, COLS: 5, FAILED: 6 } as const;
export const CTL_INTS = 8;

/** Step codes in CTL.OP. */
export const OP_CODES: Record<StepOp | 'request' | 'exit', number> = {
  attention: 1,
  mlp: 2,
  projector: 3,
  request: 4,
  exit: 5,
};
export const STEP_BY_CODE: Record<number, StepOp> = { 1: 'attention', 2: 'mlp', 3: 'projector' };

/** Per-thread timing slots (ms, cumulative), STATS_SLOTS doubles per rank. */
export const STATS = { STEPS: 0, COPY_IN: 1, COMPUTE: 2, COPY_OUT: 3 } as const;
export const STATS_SLOTS = 4;

export interface WorkerInit {
  rank: number;
  ranks: number;
  control: SharedArrayBuffer;
  stats: SharedArrayBuffer;
  /** The coordinating thread's GEMM choice (kernels/gemm.ts): every thread runs the same. */
  gemm: GemmChoice;
}

/** Load-phase messages to a shard thread; `serve` switches it to the synchronous step loop. */
export type LoadRequest =
  | {
      type: 'loadTower';
      id: number;
      config: CLIPVisionConfig;
      plan: RankPlan;
      entry: string;
      keys: Record<string, string>;
    }
  | {
      type: 'loadProjector';
      id: number;
      config: ProjectorConfig;
      hidden: FeatureRange;
      entry: string;
      keys: Record<string, string>;
    }
  | { type: 'serve'; port: MessagePortLike; generation: number };

/** Replies of the load phase. */
export type LoadReply =
  | { type: 'ready'; tid: number | null }
  | { type: 'loaded'; id: number }
  | ({ type: 'error'; id?: number } & ThreadError);

/** Requests of the serving phase, each answered by one SyncReply. */
export type SyncRequest =
  | { kind: 'buffers'; input: SharedArrayBuffer; output: SharedArrayBuffer }
  | { kind: 'memory' }
  | { kind: 'dropProjector' };

/**
 * A request only a wrapping thread entry understands (tools/ and test/ entries that call
 * `extendShardRequests`, see worker.ts); the shipped entry answers it with an error.
 */
export interface ExtensionRequest {
  kind: string;
  args?: unknown;
}

export type SyncReply = { ok: true; value: unknown } | ({ ok: false } & ThreadError);

/** What a thread reports of its memory. */
export interface ThreadMemory {
  numTensors: number;
  /** The thread's wasm heap (it never shrinks). */
  wasmHeapBytes: number;
  /** Bytes of the weights the thread holds. */
  weightBytes: number;
}

// worker_threads' MessagePort, without importing its types into this file's users.
type MessagePortLike = import('worker_threads').MessagePort;
