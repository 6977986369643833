/**
 * One writer per folder (a dataset folder or part), across processes and across hosts sharing a
 * filesystem: a lock file of io/lock_file.ts (its record, heartbeat, stale rule and take-over) in
 * the folder itself,
 *
 *   FOLDER/.llava-vision-lock-<generation>
 *
 * with a lease of LOCK_LEASE_MS. What is this file's own: a second writer is refused at once (never
 * waits), in one line naming the holder, and a holder checks before every commit that it still holds
 * the lock, so a run that was suspended past the lease (SIGSTOP, a frozen VM) and taken over stops
 * with an error instead of writing beside the new holder.
 */
import * as path from 'path';
import { OutputError } from '../errors';
import { HeldLock, LockFamily, LockState, describeHolder, lockState as stateOf, tryAcquire } from './lock_file';

export const LOCK_PREFIX = '.llava-vision-lock-';
const LOCK_NAME = /^\.llava-vision-lock-([1-9]\d{0,14})$/;
/**
 * A lock whose heartbeat is older than this is taken over from any host. Long enough for a slow
 * shared filesystem to miss many beats, short enough that a scheduler's retry of a crashed job (which
 * first waits for the node to be declared dead, minutes) finds the lock stale.
 */
export const LOCK_LEASE_MS = 120_000;

export type { LockState };

/** Is `name` one of the lock files (not a foreign file of the folder). */
export function isLockName(name: string): boolean {
  return LOCK_NAME.test(name);
}

function folderFamily(dir: string): LockFamily {
  return {
    dir,
    leaseMs: LOCK_LEASE_MS,
    name: (generation) => `${LOCK_PREFIX}${generation}`,
    generation: (name) => {
      const m = LOCK_NAME.exec(name);
      return m ? Number(m[1]) : null;
    },
  };
}

/** The current holder of `dir`'s lock, or null when there is none. */
export function lockState(dir: string): LockState | null {
  return stateOf(folderFamily(dir));
}

/** One line naming who holds `dir` and what to do. */
export function heldMessage(dir: string, s: LockState, purpose: string): string {
  const after = s.local
    ? 'it is free again when that process ends'
    : `if that run is dead (its host crashed), the lock is taken over once its heartbeat is ${LOCK_LEASE_MS / 1000} s old`;
  return `${dir} is being written by ${describeHolder(s)}: one writer per folder, so ${purpose} stops here; ${after} (lock file ${path.basename(s.file)})`;
}

/** Thrown when the folder is locked by a live run. */
export class FolderLockedError extends OutputError {}

/** A held lock. `release` is idempotent; it also runs on Ctrl-C / SIGTERM and on exit. */
export class FolderLock {
  private constructor(
    readonly dir: string,
    private readonly held: HeldLock,
  ) {}

  get file(): string {
    return this.held.file;
  }

  /**
   * Takes `dir`'s lock, taking over a stale one; a live holder is a FolderLockedError naming it.
   * `purpose` names this run in the lock (and in the other side's messages).
   */
  static acquire(dir: string, purpose: string, options: { heartbeatMs?: number } = {}): FolderLock {
    const got = tryAcquire(folderFamily(dir), purpose, options);
    if (!(got instanceof HeldLock)) throw new FolderLockedError(heldMessage(dir, got, purpose));
    return new FolderLock(dir, got);
  }

  /** Throws unless this run still holds the lock (call before each commit): no listing of the folder, which holds thousands of shards. */
  check(): void {
    if (this.held.stillOurs()) return;
    const other = lockState(this.dir);
    const by =
      other?.record && other.generation !== this.held.generation
        ? ` by pid ${other.record.pid} on host ${other.record.host}`
        : '';
    throw new FolderLockedError(
      `${this.dir}: this run lost its writer lock (taken over${by} after its heartbeat stopped for longer than the ${LOCK_LEASE_MS / 1000} s lease: was this process suspended?); stopping without writing more`,
    );
  }

  release(): void {
    this.held.release();
  }
}
