/**
 * Atomic file replacement: write a temp file in the target's folder (same filesystem, so rename is
 * atomic), fsync it, rename over the target. A crash or error leaves either the old file or the new
 * one, never a half-written file; the temp file is removed on error, and on Ctrl-C / SIGTERM (see
 * `registerCleanup`).
 *
 * Temp names are `<target>.llava-vision-tmp-<host>-<pid>-<random>`: a marker no user file carries,
 * the writer's host tag (boot + pid namespace, io/host.ts) and pid, so a later run can tell a dead
 * writer's leftover from a live writer's file, even one on another host of a shared filesystem.
 * Every temp file of the package gets its name here (`withTempPath`): a file written whole, a lock
 * file being made (lock_file.ts), an HF cache snapshot entry being placed (hub.ts).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { randomBytes } from 'crypto';
import { OutputError } from '../errors';
import { hostTag } from './host';

export const TEMP_MARKER = '.llava-vision-tmp-';
const TEMP_NAME = /^(.+)\.llava-vision-tmp-([0-9a-f]{8})-(\d{1,10})-([0-9a-f]{12})$/;

/** A fresh temp path for `target` (not created). */
export function tempPathFor(target: string): string {
  return `${target}${TEMP_MARKER}${hostTag()}-${process.pid}-${randomBytes(6).toString('hex')}`;
}

/**
 * Runs `use(tmp)` with a fresh temp path for `target` (not created), and removes whatever is left at
 * that path afterwards — after an error, and on Ctrl-C / SIGTERM or exit during `use` too
 * (`registerCleanup`) — unless `use` renamed or linked it into place.
 */
export function withTempPath<T>(target: string, use: (tmp: string) => T): T {
  const tmp = tempPathFor(target);
  const unregister = registerCleanup(() => unlinkQuietly(tmp));
  try {
    return use(tmp);
  } finally {
    unlinkQuietly(tmp);
    unregister();
  }
}

/** The parts of one of our temp names (a base name), or null for any other name. */
export function parseTempName(name: string): { target: string; host: string; pid: number } | null {
  const m = TEMP_NAME.exec(name);
  return m ? { target: m[1], host: m[2], pid: Number(m[3]) } : null;
}

/** writeSync may write fewer bytes than asked (and caps one call near 2 GB): loop until all are written. */
export function writeAllSync(fd: number, data: Uint8Array): void {
  const CHUNK = 1 << 30;
  let done = 0;
  while (done < data.byteLength) {
    const len = Math.min(CHUNK, data.byteLength - done);
    done += fs.writeSync(fd, data, done, len);
  }
}

const { O_WRONLY, O_CREAT, O_EXCL, O_APPEND } = fs.constants;
/** Never write through a symbolic link, never block on a FIFO (0 where the platform has no such flag). */
export const O_NOFOLLOW = fs.constants.O_NOFOLLOW ?? 0;
export const O_NONBLOCK = fs.constants.O_NONBLOCK ?? 0;

/** data: the bytes, or a callback that writes them to the (already open) temp file descriptor. */
export function writeFileAtomic(target: string, data: Uint8Array | ((fd: number) => void)): void {
  try {
    withTempPath(target, (tmp) => {
      // O_EXCL: never clobber another file; O_NOFOLLOW: never write where a link points.
      const fd = fs.openSync(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o666);
      try {
        if (typeof data === 'function') data(fd);
        else writeAllSync(fd, data);
        fs.fsyncSync(fd); // data on disk before the rename makes it visible
      } catch (err) {
        try {
          fs.closeSync(fd);
        } catch {
          /* already failing; keep the original error */
        }
        throw err;
      }
      fs.closeSync(fd);
      fs.renameSync(tmp, target);
    });
  } catch (err) {
    throw asOutputError(err, target);
  }
  syncDir(path.dirname(target));
}

/**
 * Appends `data` and fsyncs it: a journal write (the manifest of a dataset), durable when this returns.
 * A kill mid-write can leave a torn last line, which the reader of such a file must tolerate. The
 * target must be a regular file or absent: a symbolic link or a FIFO there is refused, not written through.
 */
export function appendFileDurable(target: string, data: Uint8Array): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(target, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_NONBLOCK, 0o666);
    if (!fs.fstatSync(fd).isFile()) throw new OutputError(`cannot write ${target}: it is not a regular file`);
    writeAllSync(fd, data);
    fs.fsyncSync(fd);
  } catch (err) {
    throw asOutputError(err, target);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

function unlinkQuietly(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch {
    /* gone already */
  }
}

// ---------------------------------------------------------------------------------------------------
// Interrupts. Node's default for SIGINT / SIGTERM / SIGHUP kills the process at once, wherever it is:
// mid-write, a temp file stays behind. While something is registered here, a listener defers the
// signal to the event loop instead: synchronous work (a whole temp-file write, rename included) ends
// first, then the cleanups run (remove temp files, release locks), and the signal is raised again with
// its default action, so the exit status is the conventional one (killed by SIGINT: 130 in a shell).
// Apps with their own listener for a signal keep full control of it: none is added then, and the
// cleanups run on 'exit' instead.

const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
const cleanups = new Set<() => void>();
let listening: NodeJS.Signals[] = [];
let onExitInstalled = false;

function runCleanups(): void {
  for (const fn of [...cleanups]) {
    cleanups.delete(fn);
    try {
      fn();
    } catch {
      /* the others still run */
    }
  }
}

function onSignal(signal: NodeJS.Signals): void {
  runCleanups();
  stopListening();
  // Another listener (the app's, added after ours) decides for itself; else the default action ends the process.
  if (process.listenerCount(signal) > 0) return;
  process.kill(process.pid, signal);
  // Only reached where the default action did not end the process (a platform without it).
  setTimeout(() => process.exit(128 + (os.constants.signals[signal] ?? 0)), 1000).unref();
}

function stopListening(): void {
  for (const s of listening) process.removeListener(s, onSignal);
  listening = [];
}

function onExit(): void {
  runCleanups();
}

/**
 * Runs `cleanup` (synchronous: unlink a temp file, release a lock) if the process is interrupted or
 * exits before the returned function is called. Listeners stay a moment after the last cleanup is
 * unregistered, so a signal that arrived during synchronous work is still handled, not dropped.
 */
export function registerCleanup(cleanup: () => void): () => void {
  cleanups.add(cleanup);
  if (!onExitInstalled) {
    process.on('exit', onExit);
    onExitInstalled = true;
  }
  if (listening.length === 0) {
    for (const s of SIGNALS) {
      if (process.listenerCount(s) > 0) continue;
      process.on(s, onSignal);
      listening.push(s);
    }
  }
  return () => {
    cleanups.delete(cleanup);
    // Two turns of the event loop: the signal pipe is read in the poll phase, which runs between them
    // (one setImmediate would run first and drop a signal that arrived during the synchronous write).
    if (cleanups.size === 0) setImmediate(() => setImmediate(() => cleanups.size === 0 && stopListening()));
  };
}

/** Persist the rename itself. Best effort: some platforms (Windows) cannot fsync a directory. */
function syncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    /* not supported here; the rename is still atomic, just not yet durable */
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * System errors name the temp file, which means nothing to the user: name the target instead. Errors
 * of our own (e.g. a producer's byte count) pass through unchanged.
 */
function asOutputError(err: unknown, target: string): unknown {
  const e = err as NodeJS.ErrnoException;
  if (typeof e?.code !== 'string' || !e.syscall) return err;
  const reason: Record<string, string> = {
    ENOENT: 'its folder does not exist',
    ENOTDIR: 'a part of its folder path is a file',
    EISDIR: 'it is a folder',
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    ENOSPC: 'no space left on the device',
    EDQUOT: 'disk quota exceeded',
    EROFS: 'read-only file system',
    EXDEV: 'cross-device rename',
    ELOOP: 'it is a symbolic link (never written through)',
    ENXIO: 'it is a FIFO or device, not a regular file',
  };
  return new OutputError(`cannot write ${target}: ${reason[e.code] ?? e.code}`);
}
