/**
 * Opt-in multi-image parallelism: `workers: N` runs N model instances, the caller's (on the calling
 * thread) plus N − 1 `worker_threads`, each with its own tfjs engine, backend instance and copy of the
 * weights (so N times the model's memory). Units (an image's tiles) are handed out one at a time to
 * whichever instance is free; every unit is encoded alone by the same code on the same backend, so the
 * output is identical to a single-instance run, whatever N. See docs/performance.md ("Worker threads") for the scaling.
 */
import { Worker } from 'worker_threads';
import { ConfigError } from '../../errors';
import type { LoadOptions } from '../../loading/load_options';
import { PendingReplies, ThreadError, rebuildError, workerScript } from '../worker_thread';

/** What a worker needs to load the same model: plain data only (no callbacks cross threads). */
export interface WorkerModelSpec {
  modelDir: string;
  options: Omit<LoadOptions, 'log' | 'download'>;
}

/**
 * What the pool hands out: one image's pixel values (an encode unit, api/encode_job.ts). The pool
 * sees only its pixels; the unit and the job's options (plain data) go to the worker as they are.
 */
export interface PoolUnit {
  pixels: Float32Array;
}

/** A unit's tensors by name (merged into one record). */
type Tensors = Record<string, unknown>;

/** Messages of an encode worker (encode_worker.ts). */
export type WorkerReply =
  { type: 'ready' } | { type: 'done'; id: number; tensors: Tensors } | ({ type: 'error'; id?: number } & ThreadError);
export type WorkerJob<Unit, Job> = { type: 'encode'; id: number; units: Unit[]; options: Job } | { type: 'close' };

const WHERE = 'encode worker';

/** One worker thread holding a model; `encode` may be called again before the previous call resolved. */
class ModelWorker<Unit extends PoolUnit, Job, Out extends Tensors> {
  private readonly replies = new PendingReplies<Out>();
  private failure: Error | null = null;

  private constructor(private readonly worker: Worker) {
    worker.on('message', (m: WorkerReply) => {
      if (m.type === 'done') this.replies.settle(m.id, { value: m.tensors as Out });
      else if (m.type === 'error' && m.id !== undefined) this.replies.settle(m.id, { error: rebuildError(m, WHERE) });
    });
    worker.on('error', (e) => this.fail(e));
    worker.on('exit', (code) => this.fail(new ConfigError(`encode worker exited (code ${code})`)));
  }

  static start<Unit extends PoolUnit, Job, Out extends Tensors>(
    spec: WorkerModelSpec,
  ): Promise<ModelWorker<Unit, Job, Out>> {
    const worker = new Worker(workerScript('parallel/pool/encode_worker', 'workers'), { workerData: spec });
    return new Promise((resolve, reject) => {
      const onMessage = (m: WorkerReply) => {
        if (m.type === 'ready') {
          worker.off('message', onMessage);
          worker.off('error', reject);
          resolve(new ModelWorker(worker));
        } else if (m.type === 'error') {
          // The load's own error, as loading on this thread would have thrown it.
          reject(rebuildError(m, `${WHERE} loading the model`));
          void worker.terminate();
        }
      };
      worker.on('message', onMessage);
      worker.on('error', reject);
      worker.once('exit', (code) =>
        reject(new ConfigError(`encode worker exited (code ${code}) before loading the model`)),
      );
    });
  }

  encode(units: Unit[], options: Job): Promise<Out> {
    if (this.failure) return Promise.reject(this.failure);
    const { id, reply } = this.replies.add();
    this.worker.postMessage({ type: 'encode', id, units, options } satisfies WorkerJob<Unit, Job>);
    return reply;
  }

  async close(): Promise<void> {
    this.failure ??= new ConfigError('encode worker closed');
    this.worker.postMessage({ type: 'close' } satisfies WorkerJob<Unit, Job>);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => void this.worker.terminate().then(() => resolve()), 10_000);
      this.worker.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private fail(e: Error): void {
    this.failure ??= e;
    this.replies.failAll(this.failure);
  }
}

/**
 * Encodes `units` on `workers` model instances: `encodeHere` (the caller's model, on this thread) and
 * `workers − 1` threads (`workers` checked by the caller). Results are merged by unit; `onProgress`
 * counts finished units.
 */
export async function encodeInWorkers<Unit extends PoolUnit, Job, Out extends Tensors>(
  units: Unit[],
  workers: number,
  spec: WorkerModelSpec,
  encodeHere: (unit: Unit) => Out,
  options: Job,
  onProgress?: (done: number, total: number) => void,
): Promise<Out> {
  const pool = await EncoderPool.start(Math.min(workers, units.length) - 1, spec, encodeHere, options);
  const out = {} as Out;
  const queue = [...units];
  let done = 0;
  try {
    await pool.run(
      async () => queue.shift() ?? null,
      (_unit, tensors) => {
        Object.assign(out, tensors);
        onProgress?.(++done, units.length);
      },
    );
  } finally {
    await pool.close();
  }
  return out;
}

/**
 * This thread's model plus `threads` worker threads, kept for as many `run`s as the caller likes (a
 * dataset encode runs the whole stream through one pool instead of reloading the model per shard).
 */
export class EncoderPool<Unit extends PoolUnit, Job, Out extends Tensors> {
  private constructor(
    private readonly threads: ModelWorker<Unit, Job, Out>[],
    private readonly encodeHere: (unit: Unit) => Out,
    private readonly options: Job,
  ) {}

  /**
   * Starts `threads` worker threads (each loads the model) and waits until all are ready. `options`
   * (plain data) reach each thread's encode as they are.
   */
  static async start<Unit extends PoolUnit, Job, Out extends Tensors>(
    threads: number,
    spec: WorkerModelSpec,
    encodeHere: (unit: Unit) => Out,
    options: Job,
  ): Promise<EncoderPool<Unit, Job, Out>> {
    const started = await Promise.allSettled(
      Array.from({ length: Math.max(0, threads) }, () => ModelWorker.start<Unit, Job, Out>(spec)),
    );
    const ready = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    const failed = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) {
      await Promise.all(ready.map((w) => w.close()));
      throw failed.reason;
    }
    return new EncoderPool(ready, encodeHere, options);
  }

  /**
   * Encodes the units `next` hands out (null: no more) until it runs dry, each on whichever instance
   * is free; `onResult` gets every unit's tensors in completion order. Each thread keeps two units
   * queued, so it never waits while this thread is busy in a (synchronous) forward. The first error
   * stops every instance after its current unit and is thrown.
   */
  async run(next: () => Promise<Unit | null>, onResult: (unit: Unit, tensors: Out) => void): Promise<void> {
    let stopped = false;
    const pull = async () => (stopped ? null : next());
    const stopOnError = (loop: Promise<void>) =>
      loop.catch((e) => {
        stopped = true; // the other loops stop after their current unit
        throw e;
      });
    const threadLoop = async (w: ModelWorker<Unit, Job, Out>) => {
      for (let unit = await pull(); unit; unit = await pull()) {
        const tensors = await w.encode([ownPixels(unit)], this.options);
        if (!stopped) onResult(unit, tensors);
      }
    };
    const hereLoop = async () => {
      for (let unit = await pull(); unit; unit = await pull()) {
        onResult(unit, this.encodeHere(unit));
        await new Promise((r) => setImmediate(r)); // let the threads' replies in
      }
    };
    const loops = [...this.threads, ...this.threads].map(threadLoop).concat(hereLoop()).map(stopOnError);
    const results = await Promise.allSettled(loops);
    const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failure) throw failure.reason;
  }

  async close(): Promise<void> {
    await Promise.all(this.threads.map((w) => w.close()));
  }
}

/** A unit whose pixels are a view into a bigger buffer is copied: a transfer to a thread would carry the whole buffer. */
function ownPixels<Unit extends PoolUnit>(unit: Unit): Unit {
  const p = unit.pixels;
  return p.byteOffset === 0 && p.byteLength === p.buffer.byteLength ? unit : { ...unit, pixels: p.slice() };
}
