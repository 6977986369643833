/**
 * The shard threads of a sharded model, seen from the coordinating thread (rank 0): spawning them,
 * the load-phase messages, then each step over shared memory (protocol.ts). While it waits for a step
 * the coordinator checks every few hundred ms that no thread has died (e.g. out of memory): a dead or
 * failed thread fails the call with a BackendError naming it, never a hang, and the model is unusable
 * from then on. Once loaded, threads are unref'd: a process whose model was never disposed still exits.
 */
import * as fs from 'fs';
import { MessageChannel, MessagePort, Worker, receiveMessageOnPort } from 'worker_threads';
import { BackendError, ConfigError } from '../../errors';
import { StepTeam } from '../../model/parallel/coordinator';
import { StepOp } from '../../model/parallel/shards';
import { chooseGemm } from '../../model/kernels/gemm';
import {
  CTL,
  CTL_INTS,
  LoadReply,
  LoadRequest,
  OP_CODES,
  STATS,
  STATS_SLOTS,
  SyncReply,
  SyncRequest,
  ExtensionRequest,
  WorkerInit,
} from './protocol';
import { PendingReplies, rebuildError, workerScript } from '../worker_thread';

/** How often a waiting coordinator checks that every thread is alive. */
const LIVENESS_POLL_MS = 200;
/** How long `close` lets threads end on their own before terminating them. */
const CLOSE_GRACE_MS = 2000;

interface Member {
  worker: Worker;
  tid: number | null;
  /** Set once its 'exit' event arrived (or it was seen gone). */
  exit: string | null;
  requests: MessagePort | null;
  output: Float32Array;
  /** Its load requests still waiting for a reply. */
  loads: PendingReplies<void>;
}

/** A load request without its id (given by `load`). */
type ShardLoad = { [T in 'loadTower' | 'loadProjector']: Omit<Extract<LoadRequest, { type: T }>, 'id'> }[
  'loadTower' | 'loadProjector'];

/** Per-thread timings of steps (ms, cumulative since the last reset). */
export interface ThreadStats {
  steps: number;
  copyInMs: number;
  computeMs: number;
  copyOutMs: number;
}

export class ShardTeam implements StepTeam {
  private readonly control = new SharedArrayBuffer(CTL_INTS * 4);
  private readonly ctl = new Int32Array(this.control);
  private readonly statsBuffer: SharedArrayBuffer;
  private readonly members: Member[] = [];
  private inputBuffer: Float32Array = new Float32Array(0);
  private outputFloats = 0;
  private serving = false;
  private broken: Error | null = null;
  private closed = false;

  private constructor(
    readonly ranks: number,
    script: string,
  ) {
    this.statsBuffer = new SharedArrayBuffer(ranks * STATS_SLOTS * 8);
    const started = Promise.allSettled(Array.from({ length: ranks - 1 }, (_, i) => this.spawn(script, i + 1)));
    this.ready = started.then((settled) => {
      const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
      if (failed) throw failed.reason;
    });
    this.ready.catch(() => undefined); // awaited by the loads; not an unhandled rejection meanwhile
  }

  /** Resolves once every thread runs its wasm backend (load requests may be sent before: they queue). */
  readonly ready: Promise<void>;

  /**
   * Spawns `ranks − 1` shard threads. Whoever gets the team ends it: `close`, or `terminate` after a
   * failed load (so that it leaves no thread behind).
   */
  static spawn(ranks: number): ShardTeam {
    return new ShardTeam(ranks, ShardTeam.entry ?? workerScript('parallel/tensor/worker', 'threads'));
  }

  /**
   * @internal The script teams spawned from now on run (null: the shipped parallel/tensor/worker): a
   * tools/ or test/ entry that wraps the shipped one and extends its requests (`extendShardRequests`).
   */
  static entry: string | null = null;

  private spawn(script: string, rank: number): Promise<void> {
    const init: WorkerInit = {
      rank,
      ranks: this.ranks,
      control: this.control,
      stats: this.statsBuffer,
      gemm: chooseGemm(),
    };
    const worker = new Worker(script, { workerData: init });
    const member: Member = {
      worker,
      tid: null,
      exit: null,
      requests: null,
      output: new Float32Array(0),
      loads: new PendingReplies<void>(),
    };
    this.members.push(member);
    return new Promise((resolve, reject) => {
      worker.on('message', (m: LoadReply) => {
        if (m.type === 'ready') {
          member.tid = m.tid;
          resolve();
        } else if (m.type === 'loaded' || m.type === 'error') {
          const error = m.type === 'error' ? rebuildError(m, `thread ${rank}`) : null;
          if (m.id === undefined)
            return reject(error ?? new BackendError(`thread ${rank}: a load reply without a request`));
          member.loads.settle(m.id, error ? { error } : { value: undefined });
        }
      });
      const gone = (why: string) => {
        member.exit ??= why;
        const error = new BackendError(`thread ${rank} of ${this.ranks} ${why}`);
        reject(error);
        member.loads.failAll(error);
      };
      worker.on('error', (e) => gone(`failed: ${e.message}`));
      worker.on('exit', (code) => gone(`ended (exit code ${code})`));
    });
  }

  /** Sends a load request to thread `rank` (1..ranks−1); resolves when it is loaded. */
  load(rank: number, request: ShardLoad): Promise<void> {
    const member = this.members[rank - 1];
    if (member.exit) return Promise.reject(new BackendError(`thread ${rank} of ${this.ranks} ${member.exit}`));
    const { id, reply } = member.loads.add();
    member.worker.postMessage({ ...request, id });
    return reply;
  }

  /** Switches every thread to the step loop (after loading). */
  serve(): void {
    for (const m of this.members) {
      const { port1, port2 } = new MessageChannel();
      port1.unref();
      m.requests = port1;
      // The generation the thread starts from: it may take this message after the first step has begun.
      const serve: LoadRequest = { type: 'serve', port: port2, generation: Atomics.load(this.ctl, CTL.GEN) };
      m.worker.postMessage(serve, [port2]);
      // Loaded: from now on a thread keeps no process alive (one whose model is never disposed still exits).
      m.worker.unref();
    }
    this.serving = true;
  }

  // ------------------------------------------------------------------------------------- steps

  input(inputFloats: number, outputFloats: number): Float32Array {
    if (inputFloats > this.inputBuffer.length || outputFloats > this.outputFloats) {
      const input = new SharedArrayBuffer(Math.max(inputFloats, this.inputBuffer.length) * 4);
      const floats = Math.max(outputFloats, this.outputFloats);
      const outputs = this.members.map(() => new SharedArrayBuffer(floats * 4));
      this.request((rank) => ({ kind: 'buffers', input, output: outputs[rank - 1] }));
      this.inputBuffer = new Float32Array(input);
      this.outputFloats = floats;
      this.members.forEach((m, i) => (m.output = new Float32Array(outputs[i])));
    }
    return this.inputBuffer.subarray(0, inputFloats);
  }

  start(op: StepOp, layer: number, rows: number, cols: number): void {
    this.begin(OP_CODES[op], [layer, rows, cols]);
  }

  finish(outputFloats: number): Float32Array[] {
    this.awaitThreads();
    if (Atomics.load(this.ctl, CTL.FAILED) > 0) this.failStep();
    return this.members.map((m) => m.output.subarray(0, outputFloats));
  }

  /**
   * Runs `local` on this thread while every other thread answers its request (`forRank(rank)`):
   * the replies in rank order (1..ranks−1). Synchronous: the threads read the request from their port.
   */
  request<T = unknown>(forRank: (rank: number) => SyncRequest | ExtensionRequest, local?: () => void): T[] {
    this.checkUsable();
    this.members.forEach((m, i) => m.requests!.postMessage(forRank(i + 1)));
    this.begin(OP_CODES.request, [0, 0, 0]);
    try {
      local?.();
    } finally {
      this.awaitThreads();
    }
    const replies = this.members.map((m, i) => {
      const r = m.requests && (receiveMessageOnPort(m.requests)?.message as SyncReply | undefined);
      if (!r) throw this.breakWith(new BackendError(`thread ${i + 1} of ${this.ranks} did not answer`));
      return r;
    });
    const failed = replies.findIndex((r) => !r.ok);
    if (failed >= 0) {
      const r = replies[failed] as Extract<SyncReply, { ok: false }>;
      throw this.breakWith(
        new BackendError(`thread ${failed + 1} of ${this.ranks} failed: ${r.errorClass}: ${r.message}`),
      );
    }
    return replies.map((r) => (r as Extract<SyncReply, { ok: true }>).value as T);
  }

  /** Per-thread step timings (ranks 1..ranks−1), and resets them. */
  takeStats(): ThreadStats[] {
    const all = new Float64Array(this.statsBuffer);
    const out = this.members.map((_, i) => {
      const s = all.subarray((i + 1) * STATS_SLOTS, (i + 2) * STATS_SLOTS);
      return {
        steps: s[STATS.STEPS],
        copyInMs: s[STATS.COPY_IN],
        computeMs: s[STATS.COMPUTE],
        copyOutMs: s[STATS.COPY_OUT],
      };
    });
    all.fill(0);
    return out;
  }

  private begin(code: number, [layer, rows, cols]: number[]): void {
    this.checkUsable();
    const ctl = this.ctl;
    Atomics.store(ctl, CTL.OP, code);
    Atomics.store(ctl, CTL.LAYER, layer);
    Atomics.store(ctl, CTL.ROWS, rows);
    Atomics.store(ctl, CTL.COLS, cols);
    Atomics.store(ctl, CTL.DONE, 0);
    Atomics.store(ctl, CTL.FAILED, 0);
    Atomics.add(ctl, CTL.GEN, 1);
    Atomics.notify(ctl, CTL.GEN);
  }

  /** Sleeps until every thread is done with the current step, checking that none has died meanwhile. */
  private awaitThreads(): void {
    const want = this.members.length;
    for (;;) {
      const done = Atomics.load(this.ctl, CTL.DONE);
      if (done >= want) return;
      if (Atomics.wait(this.ctl, CTL.DONE, done, LIVENESS_POLL_MS) === 'timed-out') this.checkAlive();
    }
  }

  /** Throws (and breaks the team) when a thread has ended: its exit event, or its OS thread gone (Linux). */
  private checkAlive(): void {
    this.members.forEach((m, i) => {
      if (!m.exit && m.tid !== null && !fs.existsSync(`/proc/self/task/${m.tid}`)) m.exit = 'ended';
      if (m.exit)
        throw this.breakWith(
          new BackendError(`thread ${i + 1} of ${this.ranks} ${m.exit} during a forward (out of memory?)`),
        );
    });
  }

  private failStep(): never {
    for (const [i, m] of this.members.entries()) {
      const r = m.requests && (receiveMessageOnPort(m.requests)?.message as SyncReply | undefined);
      if (r && !r.ok)
        throw this.breakWith(
          new BackendError(`thread ${i + 1} of ${this.ranks} failed: ${r.errorClass}: ${r.message}`),
        );
    }
    throw this.breakWith(new BackendError(`a thread of ${this.ranks} failed without saying why`));
  }

  private breakWith(e: Error): Error {
    this.broken ??= new BackendError(
      `this model's threads failed earlier (${e.message}): dispose it and load it again`,
    );
    return e;
  }

  private checkUsable(): void {
    if (this.closed) throw new ConfigError('the model was disposed: its threads have ended');
    if (this.broken) throw this.broken;
    if (!this.serving) throw new Error('shard threads are not serving yet');
    for (const [i, m] of this.members.entries())
      if (m.exit) throw this.breakWith(new BackendError(`thread ${i + 1} of ${this.ranks} ${m.exit}`));
  }

  // ----------------------------------------------------------------------------------- the end

  /** Ends every thread: asks them to exit, then terminates any still running after a grace period. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.serving && !this.broken && this.members.every((m) => !m.exit)) {
      const ctl = this.ctl;
      Atomics.store(ctl, CTL.OP, OP_CODES.exit);
      Atomics.store(ctl, CTL.DONE, 0);
      Atomics.add(ctl, CTL.GEN, 1);
      Atomics.notify(ctl, CTL.GEN);
      const deadline = performance.now() + CLOSE_GRACE_MS;
      for (
        let done = Atomics.load(ctl, CTL.DONE);
        done < this.members.length && performance.now() < deadline;
        done = Atomics.load(ctl, CTL.DONE)
      ) {
        Atomics.wait(ctl, CTL.DONE, done, 50);
      }
    }
    for (const m of this.members) void m.worker.terminate();
  }

  /** Ends every thread and waits until they are gone. */
  async terminate(): Promise<void> {
    this.closed = true;
    await Promise.all(this.members.map((m) => m.worker.terminate()));
  }

  /** Resolves once every thread has exited (after close). */
  whenEnded(): Promise<void> {
    return Promise.all(
      this.members.map((m) =>
        m.exit ? Promise.resolve() : new Promise<void>((r) => m.worker.once('exit', () => r())),
      ),
    ).then(() => undefined);
  }
}
