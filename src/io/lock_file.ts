/**
 * Lock files shared by processes, containers and hosts using one folder (a dataset folder, an HF
 * cache on NFS, Lustre, a Kubernetes volume), with no lock server. The one mechanism behind
 * folder_lock.ts (one writer per dataset folder) and cache_lock.ts (the HF cache's `.locks/`); each
 * of those only names its files, sets its lease and says what a refused or waiting caller does.
 *
 * A lock is a family of files, one per generation (`name(1)`, `name(2)`, ...); the highest present is
 * the holder. A file is created with its record already in it (written beside it under our temp name
 * and hard-linked into place: atomic and exclusive on local filesystems and NFS alike, never seen
 * empty; `O_CREAT|O_EXCL` where hard links are not supported. flock/fcntl locks are not reliable
 * across NFS clients). The record: host, boot id, pid namespace, pid, the pid's start time, a token,
 * since, purpose. A worker thread of the holder touches the file's mtime (a heartbeat), so it beats
 * even while the main thread is deep in a long synchronous forward.
 *
 * The stale rule (`staleness`), the only one: a holder is gone when
 *   - it ran on this boot of this host in this pid namespace (io/host.ts: only there does its pid mean
 *     anything) and that process has ended, or its pid now names a process started at another time; or
 *   - from anywhere else (another host or container, or a file whose record cannot be read), its file
 *     was not touched for the family's lease.
 * Nothing else is stale: a live run elsewhere is never judged by a pid that means nothing here.
 *
 * Taking over a stale generation g is creating g+1 exclusively: of several takers exactly one
 * succeeds, the others find it held. Nothing is deleted to take a lock, so no one can delete a lock
 * another has just taken; the new holder then removes the older generations. A holder can check that
 * it still holds the lock (`stillOurs`: its file with its token, and no g+1) by two lookups by name.
 * Release removes the holder's own file, also on Ctrl-C / SIGTERM and at exit (atomic.ts).
 */
import { randomBytes } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { Worker } from 'worker_threads';
import { OutputError } from '../errors';
import { O_NOFOLLOW, O_NONBLOCK, registerCleanup, withTempPath, writeAllSync } from './atomic';
import { pidsComparable, processAlive, thisProcess } from './host';

/** How often a holder touches its lock file at most (and at least 4 times per lease). */
export const LOCK_HEARTBEAT_MS = 10_000;
const MAX_LOCK_BYTES = 64 * 1024;

/** A lock's files: generation g is `dir/name(g)`; `generation` reads one back (null: not one of them). */
export interface LockFamily {
  dir: string;
  name(generation: number): string;
  generation(name: string): number | null;
  /** A holder elsewhere whose file was not touched for this long is gone. */
  leaseMs: number;
}

/** What a lock file records about its holder. */
export interface LockRecord {
  host: string;
  boot_id: string | null;
  pid_ns: string | null;
  pid: number;
  /** When the pid started (io/host.ts): tells a reused pid apart; null off Linux. */
  start_time: string | null;
  /** Random, per acquire: tells the holder's own file apart from a successor's. */
  token: string;
  since: string;
  /** What holds it (`an encode into this dataset folder`, `downloading model.safetensors of org/name`), for others' messages. */
  purpose: string;
}

/** A lock file as another process sees it. */
export interface LockState {
  file: string;
  generation: number;
  /** Null when the file cannot be read as one of our records (another program's lock file, damaged, a link). */
  record: LockRecord | null;
  /** Age of the heartbeat (now − mtime). */
  ageMs: number;
  /** Whether `record`'s pid can be checked here (this boot, host and pid namespace). */
  local: boolean;
  stale: boolean;
  /** Why it is stale, or why it is held, for messages. */
  reason: string;
}

const seconds = (ms: number) => `${Math.round(ms / 1000)} s`;

/** The stale rule (see the file's comment), for a lock or any file whose writer is recorded. */
export function staleness(
  owner: { pid: number; startTime: string | null; local: boolean } | null,
  ageMs: number,
  leaseMs: number,
): { stale: boolean; reason: string } {
  if (owner?.local) {
    const alive = processAlive(owner.pid, owner.startTime);
    return { stale: !alive, reason: alive ? 'running on this host' : `its process ${owner.pid} on this host is gone` };
  }
  const unreadable = "a lock file llava-vision cannot read (another program's, or damaged)";
  if (ageMs > leaseMs)
    return {
      stale: true,
      reason: `${owner ? 'no heartbeat' : `${unreadable}, untouched`} for ${seconds(ageMs)} (lease ${seconds(leaseMs)})`,
    };
  return { stale: false, reason: `${owner ? 'heartbeat' : `${unreadable}, touched`} ${seconds(ageMs)} ago` };
}

/** Who holds a lock, in one phrase: `PURPOSE (pid P on host H, since T; REASON)`. */
export function describeHolder(s: LockState): string {
  const r = s.record;
  return r
    ? `${r.purpose || 'another process'} (pid ${r.pid} on host ${r.host}, since ${r.since}; ${s.reason})`
    : `an unknown process (${s.reason})`;
}

function parseRecord(text: string): LockRecord | null {
  try {
    const r = JSON.parse(text) as Partial<LockRecord>;
    const str = (v: unknown) => typeof v === 'string';
    const strOrNull = (v: unknown) => v === null || str(v);
    const ok =
      r !== null &&
      typeof r === 'object' &&
      str(r.host) &&
      Number.isSafeInteger(r.pid) &&
      strOrNull(r.boot_id) &&
      strOrNull(r.pid_ns) &&
      (r.start_time === undefined || strOrNull(r.start_time)) &&
      (r.token === undefined || str(r.token));
    return ok ? ({ start_time: null, token: '', since: '?', purpose: '', ...r } as LockRecord) : null;
  } catch {
    return null;
  }
}

/** Reads a lock file without following a link or blocking on a FIFO, and judges it; null when it is gone. */
function readLock(family: LockFamily, generation: number, now = Date.now()): LockState | null {
  const file = path.join(family.dir, family.name(generation));
  let record: LockRecord | null = null;
  let mtimeMs: number;
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    // A link or something unreadable in a lock's name: no holder can be known; judged by its age.
    try {
      mtimeMs = fs.lstatSync(file).mtimeMs;
    } catch {
      return null;
    }
    return judge(family, file, generation, null, now - mtimeMs);
  }
  try {
    const st = fs.fstatSync(fd);
    if (st.isFile() && st.size <= MAX_LOCK_BYTES) {
      const buf = Buffer.alloc(st.size);
      const n = fs.readSync(fd, buf, 0, st.size, 0);
      record = parseRecord(buf.subarray(0, n).toString('utf8'));
    }
    mtimeMs = st.mtimeMs;
  } finally {
    fs.closeSync(fd);
  }
  return judge(family, file, generation, record, now - mtimeMs);
}

function judge(
  family: LockFamily,
  file: string,
  generation: number,
  record: LockRecord | null,
  age: number,
): LockState {
  const ageMs = Math.max(0, age);
  const local =
    record !== null && pidsComparable({ hostname: record.host, bootId: record.boot_id, pidNamespace: record.pid_ns });
  const { stale, reason } = staleness(
    record && { pid: record.pid, startTime: record.start_time, local },
    ageMs,
    family.leaseMs,
  );
  return { file, generation, record, ageMs, local, stale, reason };
}

/** The family's generations present in its folder, ascending. */
function listGenerations(family: LockFamily): number[] {
  let names: string[];
  try {
    names = fs.readdirSync(family.dir);
  } catch {
    return [];
  }
  return names
    .flatMap((n) => {
      const g = family.generation(n);
      return g === null ? [] : [g];
    })
    .sort((a, b) => a - b);
}

/** The current holder (the highest generation), or null when there is none. */
export function lockState(family: LockFamily): LockState | null {
  const generations = listGenerations(family);
  for (let i = generations.length - 1; i >= 0; i--) {
    const state = readLock(family, generations[i]);
    if (state) return state;
  }
  return null;
}

const cannotCreate = (file: string, e: unknown) =>
  new OutputError(
    `${file}: cannot create the lock file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
  );

/**
 * Creates `file` holding `content` in one step; its descriptor, or null when it exists. Written beside
 * it under our temp name, then hard-linked: the lock is never seen empty, even when its holder dies at
 * once. Where hard links are not supported, `O_EXCL` (a moment empty).
 */
function createExclusive(file: string, content: Buffer): number | null {
  const linked = withTempPath(file, (fresh): number | null | 'unsupported' => {
    let fd: number | null = null;
    try {
      fd = fs.openSync(fresh, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | O_NOFOLLOW, 0o644);
      writeAllSync(fd, content);
      fs.fsyncSync(fd);
      fs.linkSync(fresh, file);
      return fd;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // NFS: a link whose reply was lost is retried and answered EEXIST, though it was made; the link count tells.
      if (fd !== null && code === 'EEXIST' && fs.fstatSync(fd).nlink === 2) return fd;
      if (fd !== null) fs.closeSync(fd);
      if (fd !== null && code === 'EEXIST') return null;
      if (fd !== null && ['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EXDEV'].includes(code ?? ''))
        return 'unsupported';
      throw cannotCreate(file, e);
    }
  });
  if (linked !== 'unsupported') return linked;
  try {
    const direct = fs.openSync(
      file,
      fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | O_NOFOLLOW,
      0o644,
    );
    writeAllSync(direct, content);
    fs.fsyncSync(direct);
    return direct;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return null;
    throw cannotCreate(file, e);
  }
}

export interface AcquireOptions {
  /** Default min(LOCK_HEARTBEAT_MS, lease / 4). */
  heartbeatMs?: number;
  /** Told when a stale lock is about to be taken over. */
  onTakeOver?: (stale: LockState) => void;
}

/**
 * Takes the lock, taking over a stale holder; returns the held lock, or the live holder's state (the
 * caller refuses or waits). `purpose` names this process in the lock (and in the others' messages).
 */
export function tryAcquire(family: LockFamily, purpose: string, options: AcquireOptions = {}): HeldLock | LockState {
  const me = thisProcess();
  const token = randomBytes(12).toString('hex');
  for (let attempt = 0; attempt < 8; attempt++) {
    const current = lockState(family);
    if (current && !current.stale) return current;
    if (current) options.onTakeOver?.(current);
    const generation = current ? current.generation + 1 : 1;
    const file = path.join(family.dir, family.name(generation));
    const record: LockRecord = {
      host: me.hostname,
      boot_id: me.bootId,
      pid_ns: me.pidNamespace,
      pid: me.pid,
      start_time: me.startTime,
      token,
      since: new Date().toISOString(),
      purpose,
    };
    const fd = createExclusive(file, Buffer.from(JSON.stringify(record) + '\n'));
    if (fd === null) continue; // another process was faster: look again
    // A listing that missed a higher generation (a shared filesystem's directory cache) made us create
    // one below it: not ours to hold. Look again.
    const top = listGenerations(family).pop();
    if (top !== undefined && top > generation) {
      fs.closeSync(fd);
      fs.unlinkSync(file);
      continue;
    }
    const lock = new HeldLock(
      family,
      file,
      generation,
      token,
      fd,
      options.heartbeatMs ?? Math.max(50, Math.min(LOCK_HEARTBEAT_MS, family.leaseMs / 4)),
    );
    // Superseded generations are stale by now; their holders find them gone or outranked.
    for (const old of listGenerations(family)) {
      if (old >= generation) break;
      try {
        fs.unlinkSync(path.join(family.dir, family.name(old)));
      } catch {
        /* already gone */
      }
    }
    return lock;
  }
  throw new OutputError(
    `${path.join(family.dir, family.name(1))}: could not take the lock (other processes keep taking it); run again`,
  );
}

/** A held lock. `release` is idempotent; it also runs on Ctrl-C / SIGTERM and at exit. */
export class HeldLock {
  private heartbeat: Worker | null = null;
  private released = false;
  private fdClosed = false;
  private readonly unregister: () => void;

  constructor(
    private readonly family: LockFamily,
    readonly file: string,
    readonly generation: number,
    private readonly token: string,
    private readonly fd: number,
    heartbeatMs: number,
  ) {
    this.unregister = registerCleanup(() => this.release());
    // The heartbeat touches this file through its descriptor (never a successor's). The descriptor is
    // closed once the thread has ended, so a last beat never lands on a reused descriptor.
    const code = `
      const { workerData } = require('worker_threads');
      const fs = require('fs');
      setInterval(() => {
        try { const t = new Date(); fs.futimesSync(workerData.fd, t, t); } catch {}
      }, workerData.ms);`;
    try {
      this.heartbeat = new Worker(code, { eval: true, workerData: { fd, ms: heartbeatMs } });
      this.heartbeat.unref();
      this.heartbeat.on('error', () => undefined);
      this.heartbeat.on('exit', () => this.closeFd());
    } catch {
      this.heartbeat = null; // no worker threads: a lock of this host is still judged by its pid
    }
  }

  private closeFd(): void {
    if (this.fdClosed) return;
    this.fdClosed = true;
    try {
      fs.closeSync(this.fd);
    } catch {
      /* closed already */
    }
  }

  /** Whether this is still the holder: its file is there with its token, and no generation above it. Two lookups by name. */
  stillOurs(): boolean {
    if (this.released) return false;
    const mine = readLock(this.family, this.generation);
    return mine?.record?.token === this.token && readLock(this.family, this.generation + 1) === null;
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.unregister();
    if (this.heartbeat) void this.heartbeat.terminate();
    else this.closeFd();
    // Only our own file, and only while it is ours.
    if (readLock(this.family, this.generation)?.record?.token === this.token) {
      try {
        fs.unlinkSync(this.file);
      } catch {
        /* gone already */
      }
    }
  }
}
