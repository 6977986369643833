/**
 * Atomic file replacement: write `<target>.tmp-<pid>-<rand>` in the target's folder (same filesystem,
 * so rename is atomic), fsync it, rename over the target. A crash or error leaves either the old file
 * or the new one, never a half-written file; the temp file is removed on error.
 */
import * as fs from 'fs';
import * as path from 'path';
import { randomBytes } from 'crypto';
import { OutputError } from '../errors';

/** writeSync may write fewer bytes than asked (and caps one call near 2 GB): loop until all are written. */
export function writeAllSync(fd: number, data: Uint8Array): void {
  const CHUNK = 1 << 30;
  let done = 0;
  while (done < data.byteLength) {
    const len = Math.min(CHUNK, data.byteLength - done);
    done += fs.writeSync(fd, data, done, len);
  }
}

/** data: the bytes, or a callback that writes them to the (already open) temp file descriptor. */
export function writeFileAtomic(target: string, data: Uint8Array | ((fd: number) => void)): void {
  const tmp = `${target}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'wx'); // 'wx': never clobber someone else's temp file
    if (typeof data === 'function') data(fd);
    else writeAllSync(fd, data);
    fs.fsyncSync(fd); // data on disk before the rename makes it visible
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, target);
  } catch (err) {
    if (fd !== undefined) {
      try { fs.closeSync(fd); } catch { /* already failing; keep the original error */ }
    }
    try { fs.unlinkSync(tmp); } catch { /* best effort; the original error matters more */ }
    throw asOutputError(err, target);
  }
  syncDir(path.dirname(target));
}

/**
 * Appends `data` and fsyncs it: a journal write (the manifest of a dataset), durable when this returns.
 * A kill mid-write can leave a torn last line, which the reader of such a file must tolerate.
 */
export function appendFileDurable(target: string, data: Uint8Array): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(target, 'a');
    writeAllSync(fd, data);
    fs.fsyncSync(fd);
  } catch (err) {
    throw asOutputError(err, target);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
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
  };
  return new OutputError(`cannot write ${target}: ${reason[e.code] ?? e.code}`);
}
