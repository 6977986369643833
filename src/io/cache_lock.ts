/**
 * The HF cache's blob locks, in huggingface_hub's layout: `<cache>/.locks/models--org--name/<etag>.lock`,
 * a lock file of io/lock_file.ts (its record, heartbeat, stale rule and take-over; a take-over's
 * generations are `<etag>.lock-2`, `-3`, ...). What is this file's own: the layout, the lease, and
 * waiting — a process that finds a blob locked waits for its holder (saying once whom it waits for)
 * and uses the blob when it appears, up to an optional deadline.
 *
 * huggingface_hub holds its lock with flock and leaves the empty file behind; Node has no flock, so
 * the two libraries' locks do not exclude each other, and such a file is one we cannot read: judged
 * by its age alone. Whatever the lock guards stays correct without it (unique temp names, atomic
 * renames, content checks): it keeps work from being done twice and says whose leftovers may be removed.
 */
import * as fs from 'fs';
import * as path from 'path';
import { CheckpointError } from '../errors';
import { HeldLock, describeHolder, tryAcquire } from './lock_file';

/**
 * The default lease (DownloadOptions.lockStaleMs): longer than a dataset folder's, because a
 * huggingface_hub lock file has no heartbeat — its age is the time since its download started.
 */
export const DEFAULT_LOCK_STALE_MS = 10 * 60_000;

export interface LockOptions {
  /** What the holder does (in the messages of those who wait), e.g. `downloading model.safetensors of org/name`. */
  purpose: string;
  /** The lease (default DEFAULT_LOCK_STALE_MS). */
  staleMs?: number;
  /** Give up waiting at this time (ms since the epoch). */
  deadline?: number | null;
  /** While waiting: true when what the lock guards got done meanwhile (no need to take it any more). */
  doneMeanwhile?: () => boolean;
  /** Told once when the lock is held by someone else (and whom), and when a stale lock is taken over. */
  log?: ((line: string) => void) | null;
  /** First poll interval (doubling up to 2 s). */
  pollMs?: number;
}

export type { HeldLock };

/**
 * Takes the lock file `file` (its folder is created), waiting while someone else holds it; null when
 * `doneMeanwhile` says the work got done while waiting. A CheckpointError when the deadline passes.
 */
export async function acquireLock(file: string, options: LockOptions): Promise<HeldLock | null> {
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
  } catch (e) {
    throw new CheckpointError(`${file}: cannot create the lock file (${(e as Error).message})`);
  }
  const base = path.basename(file);
  const family = {
    dir: path.dirname(file),
    leaseMs: options.staleMs ?? DEFAULT_LOCK_STALE_MS,
    name: (generation: number) => (generation === 1 ? base : `${base}-${generation}`),
    generation: (name: string) => {
      if (name === base) return 1;
      const rest = name.startsWith(`${base}-`) ? name.slice(base.length + 1) : '';
      return /^[1-9]\d{0,14}$/.test(rest) && rest !== '1' ? Number(rest) : null;
    },
  };
  let pause = options.pollMs ?? 100;
  let told = false;
  for (;;) {
    if (options.doneMeanwhile?.()) return null;
    const got = tryAcquire(family, options.purpose, {
      onTakeOver: (stale) => options.log?.(`${file}: taking over a stale lock (${describeHolder(stale)})`),
    });
    if (got instanceof HeldLock) return got;
    if (!told) {
      options.log?.(`waiting for ${describeHolder(got)}: ${file}`);
      told = true;
    }
    if (options.deadline != null && Date.now() + pause > options.deadline) {
      throw new CheckpointError(`${file}: still held by ${describeHolder(got)} at the deadline`);
    }
    await new Promise((r) => setTimeout(r, pause));
    pause = Math.min(2 * pause, 2000);
  }
}
