/**
 * A lock file shared by processes, containers and hosts using one folder (an HF cache on a shared disk):
 * created exclusively (`O_EXCL`, atomic on local disks and NFSv3+), holding who owns it, its mtime kept
 * fresh by the owner while it works (a heartbeat), and removed by the owner when done.
 *
 * A lock is stale — and is then taken over — when:
 *   - its owner ran in this pid namespace of this boot of this host, and that process is gone (known at once);
 *   - otherwise (another host or container, or a lock file that is not ours: huggingface_hub leaves empty
 *     `.lock` files behind, which it locks with flock, invisible from Node), when its mtime is older
 *     than `staleMs` (default 10 minutes: no heartbeat for that long, far beyond clock skew).
 * A pid is never judged from another namespace: the same number there is another process.
 *
 * Taking over renames the stale file away first (only one of several contenders can), checks it is the
 * file judged stale, and deletes it. Whatever is guarded must stay correct without the lock too (unique
 * temp names, atomic renames, content checked): the lock only keeps work from being done twice and
 * says whose leftovers may be removed.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { randomBytes } from 'crypto';
import { CheckpointError } from '../errors';

export const DEFAULT_LOCK_STALE_MS = 10 * 60_000;

/** Who holds a lock: what tells whether its pid can be checked from here. */
export interface LockOwner {
  host: string;
  pid: number;
  /** The pid namespace (`/proc/self/ns/pid`), null where there is none to read. */
  pidNamespace: string | null;
  /** This boot's id (`/proc/sys/kernel/random/boot_id`): a pid of an earlier boot means nothing. */
  bootId: string | null;
  /** When the lock was taken (ISO time). */
  since: string;
  /** What the owner does under it (for the messages of those who wait). */
  purpose: string;
}

let self: Omit<LockOwner, 'since' | 'purpose'> | null = null;

function readText(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8').trim() || null;
  } catch {
    return null;
  }
}

function thisProcess(): Omit<LockOwner, 'since' | 'purpose'> {
  if (!self) {
    let pidNamespace: string | null = null;
    try {
      pidNamespace = fs.readlinkSync('/proc/self/ns/pid');
    } catch {
      // not Linux: no pid namespaces to tell apart
    }
    self = { host: os.hostname(), pid: process.pid, pidNamespace, bootId: readText('/proc/sys/kernel/random/boot_id') };
  }
  return { ...self };
}

/** The owner recorded in a lock file; null for a file that is not one of ours (empty, foreign, torn). */
function readOwner(fd: number): LockOwner | null {
  const buffer = Buffer.alloc(4096);
  const n = fs.readSync(fd, buffer, 0, buffer.length, 0);
  try {
    const o = JSON.parse(buffer.subarray(0, n).toString('utf8')) as Partial<LockOwner>;
    const str = (v: unknown) => typeof v === 'string';
    const ok = str(o.host) && Number.isSafeInteger(o.pid) && (o.pidNamespace === null || str(o.pidNamespace)) && (o.bootId === null || str(o.bootId));
    return ok ? (o as LockOwner) : null;
  } catch {
    return null;
  }
}

/** Whether a process recorded by `owner` can be looked up from here (same host, boot and pid namespace). */
function sameNamespace(owner: LockOwner): boolean {
  const me = thisProcess();
  return owner.host === me.host && owner.bootId === me.bootId && owner.pidNamespace === me.pidNamespace;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH'; // EPERM: it exists, as another user
  }
}

/** A lock file as found: its identity (to take over exactly that file), owner and whether it is stale. */
interface Found {
  ino: number;
  owner: LockOwner | null;
  stale: boolean;
  holder: string;
}

function inspectLock(file: string, staleMs: number): Found | null {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  try {
    const st = fs.fstatSync(fd);
    const owner = readOwner(fd);
    const idleMs = Date.now() - st.mtimeMs;
    const local = owner !== null && sameNamespace(owner);
    const stale = local ? owner.pid !== process.pid && !alive(owner.pid) : idleMs > staleMs;
    const holder = owner
      ? `${owner.purpose} by pid ${owner.pid} on ${owner.host}${local ? '' : ` (another host or container; last sign of life ${Math.round(idleMs / 1000)} s ago)`}`
      : `an unknown process (a lock file not of llava-vision, e.g. huggingface_hub's; touched ${Math.round(idleMs / 1000)} s ago)`;
    return { ino: st.ino, owner, stale, holder };
  } finally {
    fs.closeSync(fd);
  }
}

/** Removes exactly the stale lock file that was inspected, not a fresh one put in its place meanwhile. */
function takeOver(file: string, found: Found): void {
  const aside = `${file}.stale-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    fs.renameSync(file, aside);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // another contender was first
    throw e;
  }
  if (fs.statSync(aside).ino !== found.ino) {
    // A fresh lock took its place between the look and the rename: put it back (unless yet another exists).
    try {
      fs.linkSync(aside, file);
    } catch {
      // the newer one stays
    }
  }
  fs.rmSync(aside, { force: true });
}

export interface LockOptions {
  /** What the holder does (in the messages of those who wait), e.g. `downloading model.safetensors of org/name`. */
  purpose: string;
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

/** A held lock: its heartbeat runs until `release`. */
export interface HeldLock {
  readonly file: string;
  /** False once the file is not ours any more (taken over as stale by someone who judged us gone). */
  stillOurs(): boolean;
  release(): void;
}

/**
 * Takes the lock file `file` (its folder is created), waiting while someone else holds it; null when
 * `doneMeanwhile` says the work got done while waiting. A CheckpointError when the deadline passes.
 */
export async function acquireLock(file: string, options: LockOptions): Promise<HeldLock | null> {
  const staleMs = options.staleMs ?? DEFAULT_LOCK_STALE_MS;
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
  } catch (e) {
    throw new CheckpointError(`${file}: cannot create the lock file (${(e as Error).message})`);
  }
  let pause = options.pollMs ?? 100;
  let told = false;
  for (;;) {
    if (options.doneMeanwhile?.()) return null;
    const owner: LockOwner = { ...thisProcess(), since: new Date().toISOString(), purpose: options.purpose };
    const fd = create(file, JSON.stringify(owner));
    if (fd !== null) return held(file, fd, staleMs);
    const found = inspectLock(file, staleMs);
    if (found?.stale) {
      options.log?.(`${file}: taking over a stale lock (${found.holder})`);
      takeOver(file, found);
      continue;
    }
    if (found && !told) {
      options.log?.(`waiting for ${found.holder}: ${file}`);
      told = true;
    }
    if (options.deadline != null && Date.now() + pause > options.deadline) {
      throw new CheckpointError(`${file}: still held by ${found?.holder ?? 'another process'} at the deadline`);
    }
    await new Promise((r) => setTimeout(r, pause));
    pause = Math.min(2 * pause, 2000);
  }
}

/**
 * Creates the lock file with its content in one step (written beside it, then hard-linked: a lock is
 * never seen empty, even when its owner dies at once); `O_EXCL` where hard links are not supported.
 * Its descriptor, or null when it exists.
 */
function create(file: string, content: string): number | null {
  const fresh = `${file}.new-${process.pid}-${randomBytes(4).toString('hex')}`;
  let fd: number | null = null;
  try {
    fd = fs.openSync(fresh, 'wx');
    fs.writeSync(fd, content);
    fs.linkSync(fresh, file);
    return fd;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (fd !== null) fs.closeSync(fd);
    if (code === 'EEXIST' && fd !== null) return null;
    if (fd === null || !['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EXDEV'].includes(code ?? '')) {
      throw new CheckpointError(`${file}: cannot create the lock file (${(e as Error).message})`);
    }
  } finally {
    fs.rmSync(fresh, { force: true });
  }
  try {
    const direct = fs.openSync(file, 'wx');
    fs.writeSync(direct, content);
    return direct;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return null;
    throw new CheckpointError(`${file}: cannot create the lock file (${(e as Error).message})`);
  }
}

function held(file: string, fd: number, staleMs: number): HeldLock {
  const { ino } = fs.fstatSync(fd);
  // The heartbeat touches our file (through its descriptor: never a successor's), well within staleMs.
  const beat = setInterval(() => {
    try {
      const now = new Date();
      fs.futimesSync(fd, now, now);
    } catch {
      // a failing disk shows up in the work itself
    }
  }, Math.max(50, Math.min(10_000, staleMs / 4)));
  beat.unref();
  let released = false;
  const stillOurs = () => {
    try {
      return fs.statSync(file).ino === ino;
    } catch {
      return false;
    }
  };
  return {
    file,
    stillOurs,
    release() {
      if (released) return;
      released = true;
      clearInterval(beat);
      try {
        if (stillOurs()) fs.unlinkSync(file);
      } finally {
        fs.closeSync(fd);
      }
    },
  };
}
