/**
 * One writer per folder, across processes and across hosts sharing a filesystem (NFS, Lustre, a
 * Kubernetes volume), with no lock server: lock files created with O_CREAT|O_EXCL, which is atomic on
 * local filesystems and on NFSv3+ alike (flock/fcntl locks are not reliable across NFS clients).
 *
 *   FOLDER/.llava-vision-lock-<generation>    {"host", "boot_id", "pid_ns", "pid", "start_time", "token", "since", ...}
 *
 * The holder is the highest generation. Its mtime is a heartbeat: a worker thread touches it every
 * LOCK_HEARTBEAT_MS, so it keeps beating while the main thread is busy in a long synchronous forward.
 * A lock is stale, and may be taken over, only when
 *   - its holder ran on this host (same boot id and pid namespace) and that process is gone (or its pid
 *     now belongs to a process started at another time), or
 *   - its heartbeat is older than LOCK_LEASE_MS (any host: a crashed machine beats no more).
 * Taking over generation g is creating generation g+1 with O_EXCL: of several runs taking over at once
 * exactly one creates it, the others find it held and are refused. Nothing is ever deleted to take a
 * lock, so no run can delete a lock another has just taken. The winner then removes the older files.
 *
 * A holder checks that it still holds the lock (its file is there and no g+1 exists) before every
 * commit, so a run that was suspended past the lease (SIGSTOP, a frozen VM) and taken over stops with
 * an error instead of writing beside the new holder.
 */
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { Worker } from 'worker_threads';
import { OutputError } from '../errors';
import { O_NOFOLLOW, O_NONBLOCK, registerCleanup, writeAllSync } from './atomic';
import { ProcessIdentity, pidsComparable, processAlive, thisProcess } from './host';

export const LOCK_PREFIX = '.llava-vision-lock-';
const LOCK_NAME = /^\.llava-vision-lock-([1-9]\d{0,14})$/;
/** How often the holder refreshes its lock file's mtime. */
export const LOCK_HEARTBEAT_MS = 10_000;
/**
 * A lock whose heartbeat is older than this is taken over from any host. Long enough for a slow
 * shared filesystem to miss many beats, short enough that a scheduler's retry of a crashed job (which
 * first waits for the node to be declared dead, minutes) finds the lock stale.
 */
export const LOCK_LEASE_MS = 120_000;
const MAX_LOCK_BYTES = 64 * 1024;

/** What a lock file records about its holder. */
export interface LockRecord {
  host: string;
  boot_id: string | null;
  pid_ns: string | null;
  pid: number;
  start_time: string | null;
  token: string;
  since: string;
  /** What holds it (e.g. `llava-vision encode --out-dir`), for the message of a refused run. */
  purpose: string;
}

/** A lock file as another run sees it. */
export interface LockState {
  file: string;
  generation: number;
  /** Null when the file is empty or garbled (a holder that crashed between creating and writing it). */
  record: LockRecord | null;
  /** Age of the heartbeat (now − mtime). */
  ageMs: number;
  stale: boolean;
  /** Why it is stale, or why it is held, for messages. */
  reason: string;
}

const lockName = (generation: number) => `${LOCK_PREFIX}${generation}`;

/** Is `name` one of the lock files (not a foreign file of the folder). */
export function isLockName(name: string): boolean {
  return LOCK_NAME.test(name);
}

/** The lock files of `dir`, by generation. */
function listLocks(dir: string): { name: string; generation: number }[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  return names.flatMap((name) => {
    const m = LOCK_NAME.exec(name);
    return m ? [{ name, generation: Number(m[1]) }] : [];
  }).sort((a, b) => a.generation - b.generation);
}

function parseRecord(text: string): LockRecord | null {
  try {
    const r = JSON.parse(text) as LockRecord;
    const ok = r && typeof r === 'object' && typeof r.host === 'string' && Number.isSafeInteger(r.pid) && typeof r.token === 'string' &&
      (r.boot_id === null || typeof r.boot_id === 'string') && (r.pid_ns === null || typeof r.pid_ns === 'string') &&
      (r.start_time === null || typeof r.start_time === 'string');
    return ok ? r : null;
  } catch {
    return null;
  }
}

/** Reads a lock file without following a link or blocking on a FIFO; null when it is gone. */
function readLock(file: string, generation: number, now = Date.now()): LockState | null {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    // A link or something unreadable in a lock's name: no holder can be known; it is judged by its age below.
    return judge({ file, generation, record: null, ageMs: ageOf(file, now), stale: false, reason: '' });
  }
  try {
    const st = fs.fstatSync(fd);
    let record: LockRecord | null = null;
    if (st.isFile() && st.size <= MAX_LOCK_BYTES) {
      const buf = Buffer.alloc(st.size);
      const n = fs.readSync(fd, buf, 0, st.size, 0);
      record = parseRecord(buf.subarray(0, n).toString('utf8'));
    }
    return judge({ file, generation, record, ageMs: Math.max(0, now - st.mtimeMs), stale: false, reason: '' });
  } finally {
    fs.closeSync(fd);
  }
}

function ageOf(file: string, now: number): number {
  try {
    return Math.max(0, now - fs.lstatSync(file).mtimeMs);
  } catch {
    return 0;
  }
}

/** The staleness rule (see the file's comment). */
function judge(s: LockState): LockState {
  const r = s.record;
  const expired = s.ageMs > LOCK_LEASE_MS;
  const lease = `no heartbeat for ${seconds(s.ageMs)} (lease ${LOCK_LEASE_MS / 1000} s)`;
  if (r && pidsComparable({ hostname: r.host, bootId: r.boot_id, pidNamespace: r.pid_ns })) {
    const alive = processAlive(r.pid, r.start_time);
    return { ...s, stale: !alive, reason: alive ? 'running on this host' : `its process ${r.pid} on this host is gone` };
  }
  if (expired) return { ...s, stale: true, reason: lease };
  return { ...s, stale: false, reason: r ? `heartbeat ${seconds(s.ageMs)} ago` : `an unreadable lock file, written ${seconds(s.ageMs)} ago` };
}

const seconds = (ms: number) => `${Math.round(ms / 1000)} s`;

/** The current holder of `dir`'s lock (the highest generation), or null when there is none. */
export function lockState(dir: string): LockState | null {
  const locks = listLocks(dir);
  for (let i = locks.length - 1; i >= 0; i--) {
    const state = readLock(path.join(dir, locks[i].name), locks[i].generation);
    if (state) return state;
  }
  return null;
}

/** One line naming who holds `dir` and what to do. */
export function heldMessage(dir: string, s: LockState, purpose: string): string {
  const r = s.record;
  const who = r ? `${r.purpose || 'another run'} (pid ${r.pid} on host ${r.host}, since ${r.since}; ${s.reason})` : `another run (${s.reason})`;
  const local = r !== null && pidsComparable({ hostname: r.host, bootId: r.boot_id, pidNamespace: r.pid_ns });
  const after = local ? 'it is free again when that process ends' : `if that run is dead (its host crashed), the lock is taken over once its heartbeat is ${LOCK_LEASE_MS / 1000} s old`;
  return `${dir} is being written by ${who}: one writer per folder, so ${purpose} stops here; ${after} (lock file ${path.basename(s.file)})`;
}

/** Thrown when the folder is locked by a live run. */
export class FolderLockedError extends OutputError {}

/** A held lock. `release` is idempotent; it also runs on Ctrl-C / SIGTERM and on exit. */
export class FolderLock {
  private heartbeat: Worker | null = null;
  private released = false;
  private readonly unregister: () => void;

  private constructor(readonly dir: string, readonly file: string, readonly generation: number, private readonly token: string) {
    this.unregister = registerCleanup(() => this.release());
  }

  /**
   * Takes `dir`'s lock, taking over a stale one (see the rule above); a live holder is a
   * FolderLockedError naming it. `purpose` names this run in the lock (and in the other side's messages).
   */
  static acquire(dir: string, purpose: string, options: { heartbeatMs?: number } = {}): FolderLock {
    const me: ProcessIdentity = thisProcess();
    const token = randomBytes(12).toString('hex');
    for (let attempt = 0; attempt < 8; attempt++) {
      const current = lockState(dir);
      if (current && !current.stale) throw new FolderLockedError(heldMessage(dir, current, purpose));
      const generation = current ? current.generation + 1 : 1;
      const file = path.join(dir, lockName(generation));
      const record: LockRecord = {
        host: me.hostname, boot_id: me.bootId, pid_ns: me.pidNamespace, pid: me.pid, start_time: me.startTime, token,
        since: new Date().toISOString(), purpose,
      };
      let fd: number;
      try {
        fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | O_NOFOLLOW, 0o644);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EEXIST') continue; // another run was faster: look again
        throw new OutputError(`cannot create the lock file ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      }
      try {
        writeAllSync(fd, Buffer.from(JSON.stringify(record) + '\n'));
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      // A listing that missed a higher generation (a shared filesystem's directory cache) made us create
      // one below it: not ours to hold. Look again.
      const top = listLocks(dir).pop();
      if (top && top.generation > generation) {
        fs.unlinkSync(file);
        continue;
      }
      const lock = new FolderLock(dir, file, generation, token);
      // Superseded generations are stale by now; their holders find them gone or outranked and stop.
      for (const old of listLocks(dir)) {
        if (old.generation < generation) {
          try {
            fs.unlinkSync(path.join(dir, old.name));
          } catch {
            /* already gone */
          }
        }
      }
      lock.startHeartbeat(options.heartbeatMs ?? LOCK_HEARTBEAT_MS);
      return lock;
    }
    throw new FolderLockedError(`${dir}: could not take the writer lock (other runs keep taking it); run again`);
  }

  /**
   * Throws unless this run still holds the lock (call before each commit): its file is there with its
   * token, and no generation above it exists. Two lookups by name, no listing of the folder (which
   * holds thousands of shards): a take-over of generation g always creates g+1.
   */
  check(): void {
    if (this.released) throw new OutputError(`internal: the lock of ${this.dir} was released`);
    const mine = readLock(this.file, this.generation);
    const next = readLock(path.join(this.dir, lockName(this.generation + 1)), this.generation + 1);
    if (mine?.record?.token === this.token && next === null) return;
    const other = next ?? lockState(this.dir);
    const by = other?.record && other.generation !== this.generation ? ` by pid ${other.record.pid} on host ${other.record.host}` : '';
    throw new FolderLockedError(`${this.dir}: this run lost its writer lock (taken over${by} after its heartbeat stopped for longer than the ${LOCK_LEASE_MS / 1000} s lease: was this process suspended?); stopping without writing more`);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.unregister();
    void this.heartbeat?.terminate();
    this.heartbeat = null;
    // Only our own file, and only while it is still ours.
    const mine = readLock(this.file, this.generation);
    if (mine?.record?.token === this.token) {
      try {
        fs.unlinkSync(this.file);
      } catch {
        /* gone already */
      }
    }
  }

  /** A worker thread: it beats even while this thread runs a long synchronous forward. */
  private startHeartbeat(ms: number): void {
    const code = `
      const { workerData } = require('worker_threads');
      const fs = require('fs');
      setInterval(() => {
        try { const t = new Date(); fs.lutimesSync(workerData.file, t, t); } catch {}
      }, workerData.ms);`;
    try {
      this.heartbeat = new Worker(code, { eval: true, workerData: { file: this.file, ms } });
      this.heartbeat.unref();
      this.heartbeat.on('error', () => undefined);
    } catch {
      this.heartbeat = null; // no worker threads: a lock from this host is still judged by its pid
    }
  }
}
