/**
 * Counts the worker threads a test's code really starts, and the units each one encoded: a test file
 * replaces `worker_threads` with this module's copy before importing the code under test,
 *
 *   jest.mock('worker_threads', () =>
 *     jest.requireActual<typeof import('./helpers/worker_threads_spy')>('./helpers/worker_threads_spy').spiedWorkerThreads());
 *
 * and reads `encodeThreadsSince(mark)` after a job. Only the `Worker` class differs: a subclass that
 * records each thread it starts (its script, its threadId) and the replies of type `done` it posts back
 * (units encoded). Other threads (a lock's heartbeat, tensor-parallel ranks) are recorded too, and
 * told apart by their script.
 */
import type * as WorkerThreads from 'worker_threads';

/** A started thread: its script (or eval'd code), its id, and how many `done` replies it sent so far. */
export interface StartedThread {
  script: string;
  threadId: number;
  done: number;
}

const started: StartedThread[] = [];

/** The real `worker_threads` with `Worker` replaced by a recording subclass. */
export function spiedWorkerThreads(): typeof WorkerThreads {
  const real = jest.requireActual<typeof WorkerThreads>('worker_threads');
  class RecordedWorker extends real.Worker {
    constructor(...args: ConstructorParameters<typeof real.Worker>) {
      super(...args);
      const entry: StartedThread = { script: String(args[0]), threadId: this.threadId, done: 0 };
      started.push(entry);
      this.on('message', (m: { type?: string }) => {
        if (m?.type === 'done') entry.done++;
      });
    }
  }
  return { ...real, Worker: RecordedWorker };
}

/** A mark to pass to `threadsSince`: the threads started so far. */
export const threadMark = (): number => started.length;

/** The worker pool's encode threads (parallel/pool/encode_worker.js) started since `mark`. */
export const encodeThreadsSince = (mark: number): StartedThread[] =>
  started.slice(mark).filter((t) => /[\\/]parallel[\\/]pool[\\/]encode_worker\.js$/.test(t.script));
