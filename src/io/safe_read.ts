/**
 * Reading files of a folder someone else may have tampered with: a FIFO must not hang the reader
 * (opened non-blocking, then refused unless it is a regular file), a link to /dev/zero must not be
 * read forever (the same check), and no file is read whole past a size cap. Text is streamed line by
 * line with a cap per line, so a manifest of a million lines is never one string.
 */
import * as fs from 'fs';
import { CheckpointError } from '../errors';
import { O_NONBLOCK } from './atomic';

/** Opens `file` for reading without blocking; throws unless it is a regular file. Null when it does not exist. */
export function openRegularFile(file: string, what: string): { fd: number; size: number } | null {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    throw new CheckpointError(`${file}: cannot open the ${what} (${code ?? (e as Error).message})`);
  }
  const st = fs.fstatSync(fd);
  if (!st.isFile()) {
    fs.closeSync(fd);
    throw new CheckpointError(`${file}: the ${what} is not a regular file (a ${kindOf(st)})`);
  }
  return { fd, size: st.size };
}

function kindOf(st: fs.Stats): string {
  return st.isDirectory()
    ? 'folder'
    : st.isFIFO()
      ? 'FIFO'
      : st.isCharacterDevice()
        ? 'character device'
        : st.isBlockDevice()
          ? 'block device'
          : st.isSocket()
            ? 'socket'
            : 'special file';
}

/** The whole file, at most `maxBytes` (a bigger file is an error, never a huge allocation); null when it does not exist. */
export function readRegularFile(file: string, what: string, maxBytes: number): Buffer | null {
  const opened = openRegularFile(file, what);
  if (!opened) return null;
  const { fd, size } = opened;
  try {
    if (size > maxBytes)
      throw new CheckpointError(`${file}: the ${what} is ${size} bytes, more than the ${maxBytes} such a file can be`);
    const buf = Buffer.alloc(size);
    let n = 0;
    while (n < size) {
      const got = fs.readSync(fd, buf, n, size - n, n);
      if (got === 0) break;
      n += got;
    }
    return buf.subarray(0, n);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Calls `onLine(text, lineNumber)` for each newline-terminated line of an open file, in order,
 * reading 1 MiB at a time; returns the unterminated tail ('' when the file ends with a newline, or
 * null when it is longer than `maxLine`). A line longer than `maxLine` bytes is handed over as null.
 */
export function forEachLine(
  fd: number,
  maxLine: number,
  onLine: (line: string | null, lineNumber: number) => void,
): string | null {
  const chunk = Buffer.alloc(1 << 20);
  let carry: Buffer[] = [];
  let carried = 0;
  let tooLong = false;
  let lineNumber = 0;
  let pos = 0;
  for (;;) {
    const n = fs.readSync(fd, chunk, 0, chunk.length, pos);
    if (n === 0) break;
    pos += n;
    let start = 0;
    for (let nl = chunk.indexOf(10, 0); nl !== -1 && nl < n; nl = chunk.indexOf(10, start)) {
      const piece = chunk.subarray(start, nl);
      lineNumber++;
      if (tooLong || carried + piece.length > maxLine) onLine(null, lineNumber);
      else onLine((carried ? Buffer.concat([...carry, piece]) : piece).toString('utf8'), lineNumber);
      carry = [];
      carried = 0;
      tooLong = false;
      start = nl + 1;
    }
    if (start < n && !tooLong) {
      const rest = chunk.subarray(start, n);
      if (carried + rest.length > maxLine) {
        tooLong = true;
        carry = [];
        carried = 0;
      } else {
        carry.push(Buffer.from(rest));
        carried += rest.length;
      }
    }
  }
  if (tooLong) return null;
  return Buffer.concat(carry).toString('utf8');
}
