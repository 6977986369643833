/**
 * A cheap content digest of a big weights file: its size, its header (a safetensors header whole:
 * every tensor's name, dtype, shape and offsets; another format's first MiB) and 16 windows of its
 * data spread over the file. Byte-identical copies (node-local copies on a cluster, a symlink, a copy
 * in another app folder) get the same digest, whatever their path; a fine-tune of the same
 * architecture, whose headers are identical, differs in every window. Reading a few MiB instead of
 * the whole file keeps it cheap on a 14 GB LLaVA checkpoint (on a network filesystem too), at the
 * price of not seeing an edit confined between the windows — which is not what it is for.
 */
import { createHash, Hash } from 'crypto';
import * as fs from 'fs';

const WINDOW = 64 * 1024;
const WINDOWS = 16;
const HEAD = 1024 * 1024;
const MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024;

function readAt(fd: number, offset: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let n = 0;
  while (n < length) {
    const got = fs.readSync(fd, buf, n, length - n, offset + n);
    if (got === 0) break;
    n += got;
  }
  return buf.subarray(0, n);
}

/** Adds `file`'s sampled content to `hash` (see above). */
export function hashFileSampled(hash: Hash, file: string): void {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0));
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new Error(`${file} is not a regular file`);
    const size = st.size;
    hash.update(`size ${size}\n`);
    let head = Math.min(size, HEAD);
    if (size >= 8) {
      const n = readAt(fd, 0, 8).readBigUInt64LE(0);
      if (n <= BigInt(Math.min(size - 8, MAX_SAFETENSORS_HEADER))) head = Math.max(head, 8 + Number(n));
    }
    hash.update(readAt(fd, 0, head));
    if (size > head) {
      const span = size - WINDOW;
      for (let k = 0; k < WINDOWS; k++) hash.update(readAt(fd, Math.floor((k * span) / (WINDOWS - 1)), WINDOW));
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** `sha256:<hex>` of one file, sampled. */
export function sampledFileDigest(file: string): string {
  const h = createHash('sha256');
  hashFileSampled(h, file);
  return `sha256:${h.digest('hex')}`;
}
