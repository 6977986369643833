/**
 * What the tensor-parallel team (tensor/) and the worker pool (pool/) share about worker threads:
 * where a thread's script lies, the replies awaited by request id, and errors sent across a thread
 * boundary (a structured clone keeps neither class nor stack) rebuilt as the class they were.
 */
import * as fs from 'fs';
import * as path from 'path';
import { BackendError, CheckpointError, ConfigError, ImageError, LlavaVisionError, OutputError } from '../errors';

/**
 * The compiled script of a thread entry, `entry` being its path under src/ without extension (e.g.
 * `parallel/tensor/worker`): next to this module when it runs from dist/, else (TypeScript sources,
 * e.g. under ts-jest) the built copy in dist/. `option` names what asked for threads in the error.
 */
export function workerScript(entry: string, option: string): string {
  const src = path.resolve(__dirname, '..');
  const here = path.join(src, `${entry}.js`);
  if (fs.existsSync(here)) return here;
  const built = path.resolve(src, '..', 'dist', 'src', `${entry}.js`);
  if (fs.existsSync(built)) return built;
  throw new ConfigError(`${option}: the thread script ${here} is missing (run npm run build)`);
}

/** An error as a thread sends it. */
export interface ThreadError {
  errorClass: string;
  message: string;
}

/** What a thread sends of an error it caught. */
export function toThreadError(e: unknown): ThreadError {
  return { errorClass: (e as Error)?.name ?? 'Error', message: (e as Error)?.message ?? String(e) };
}

const OUR_CLASSES: Record<string, new (message: string) => LlavaVisionError> = {
  BackendError,
  CheckpointError,
  ConfigError,
  ImageError,
  OutputError,
};

/**
 * An error a thread reported, as the class it was there when it is one of ours (the class and message
 * a caller would have seen on one thread); any other error (a bug, or tfjs's own) becomes a
 * BackendError naming the thread (`where`) and the class it had.
 */
export function rebuildError(e: ThreadError, where: string): LlavaVisionError {
  const Class = Object.hasOwn(OUR_CLASSES, e.errorClass) ? OUR_CLASSES[e.errorClass] : null;
  return Class ? new Class(e.message) : new BackendError(`${where}: ${e.errorClass}: ${e.message}`);
}

/** Replies awaited from one thread, by request id; `failAll` rejects every one still waiting (the thread ended). */
export class PendingReplies<T> {
  private readonly waiting = new Map<number, { resolve: (value: T) => void; reject: (e: Error) => void }>();
  private nextId = 0;

  /** A new request's id, and the promise its reply settles. */
  add(): { id: number; reply: Promise<T> } {
    const id = this.nextId++;
    const reply = new Promise<T>((resolve, reject) => this.waiting.set(id, { resolve, reject }));
    return { id, reply };
  }

  /** Settles request `id` (a reply for no waiting request is ignored). */
  settle(id: number, outcome: { error: Error } | { value: T }): void {
    const waiter = this.waiting.get(id);
    if (!waiter) return;
    this.waiting.delete(id);
    if ('error' in outcome) waiter.reject(outcome.error);
    else waiter.resolve(outcome.value);
  }

  failAll(error: Error): void {
    const waiters = [...this.waiting.values()];
    this.waiting.clear();
    for (const w of waiters) w.reject(error);
  }
}
