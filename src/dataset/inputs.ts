/**
 * The input list of a dataset encode: image paths, folders walked recursively, and lists of paths (a
 * file, or stdin). The order of the list fixes each image's global index, so it must be the same on
 * every run and every machine: folders are walked in sorted order, nothing depends on readdir's order.
 */
import * as fs from 'fs';
import * as path from 'path';
import { ConfigError } from '../errors';
import { MAX_SOURCE_BYTES } from './format';

/** Extensions taken as images without looking inside (what sharp decodes, plus .bmp, which it reports as undecodable). */
const IMAGE_EXTENSIONS = new Set([
  '.png',
  '.jpg',
  '.jpeg',
  '.jpe',
  '.jfif',
  '.webp',
  '.gif',
  '.tif',
  '.tiff',
  '.avif',
  '.heic',
  '.heif',
  '.bmp',
]);

/** Leading bytes of the formats sharp decodes, for files with another (or no) extension. */
function looksLikeImage(head: Buffer): boolean {
  const ascii = (at: number, s: string) => head.subarray(at, at + s.length).toString('latin1') === s;
  return (
    ascii(0, '\x89PNG\r\n\x1a\n') ||
    (head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) || // JPEG
    ascii(0, 'GIF87a') ||
    ascii(0, 'GIF89a') ||
    (ascii(0, 'RIFF') && ascii(8, 'WEBP')) ||
    ascii(0, 'II*\x00') ||
    ascii(0, 'MM\x00*') || // TIFF
    (ascii(4, 'ftyp') && ['avif', 'avis', 'heic', 'heix', 'mif1'].some((brand) => ascii(8, brand)))
  );
}

function sniff(file: string | Buffer): boolean {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'r');
    const head = Buffer.alloc(16);
    const n = fs.readSync(fd, head, 0, 16, 0);
    return looksLikeImage(head.subarray(0, n));
  } catch {
    return false; // unreadable: not picked from a folder (a file named on its own would be recorded as a failure)
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** Is this file in a walked folder an image: by extension, else by its first bytes. */
export function isImageFile(file: string): boolean {
  return IMAGE_EXTENSIONS.has(path.extname(file).toLowerCase()) || sniff(file);
}

/** A name as it appears in a message: bytes that are not UTF-8 (or are control characters) as \xNN. */
function shownName(name: Buffer): string {
  let out = '';
  const text = name.toString('latin1');
  for (let i = 0; i < name.length; i++) {
    const b = name[i];
    out += b >= 0x20 && b < 0x7f ? text[i] : `\\x${b.toString(16).padStart(2, '0')}`;
  }
  return out;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
/** The name as a string, or null when it is not valid UTF-8 (Node would decode it lossily: two files could become one path). */
function decodeName(name: Buffer): string | null {
  try {
    return utf8.decode(name);
  } catch {
    return null;
  }
}

/**
 * The images under `dir`, recursively, sorted by path (JavaScript string order, the same everywhere).
 * Hidden entries (a leading dot: `.git`, macOS `._photo.jpg` resource forks) are skipped, symlinks are
 * followed once (a link back up the tree is not walked again). An unreadable folder is an error: its
 * images would shift every later index once it became readable. So is an image or folder whose name is
 * not UTF-8: the manifest (JSON) cannot record it faithfully, and Node's lossy decoding would make two
 * such files one path (one image encoded twice, the other never); the message names it to be renamed.
 * Walked with an explicit stack: a folder tree a thousand levels deep does not overflow the call stack.
 */
export function walkImages(dir: string): string[] {
  const found: string[] = [];
  const seen = new Set<string>();
  const folders = [dir];
  while (folders.length) {
    const folder = folders.pop()!;
    const real = fs.realpathSync(folder);
    if (seen.has(real)) continue;
    seen.add(real);
    // Entries one at a time (opendir), not a folder's 600k Dirents at once.
    let handle: fs.Dir;
    try {
      handle = fs.opendirSync(folder, { encoding: 'buffer' as BufferEncoding });
    } catch (e) {
      throw new ConfigError(
        `cannot read folder ${folder} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); its images would be missing from the index order`,
      );
    }
    try {
      for (let entry = readEntry(handle, folder); entry; entry = readEntry(handle, folder)) visit(folder, entry);
    } finally {
      handle.closeSync();
    }
  }
  return found.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));

  function visit(folder: string, entry: fs.Dirent<Buffer>): void {
    if (entry.name[0] === 0x2e) return; // '.'
    const name = decodeName(entry.name);
    const full = name === null ? Buffer.concat([Buffer.from(folder + path.sep), entry.name]) : path.join(folder, name);
    let kind: { isDirectory(): boolean; isFile(): boolean } = entry;
    if (entry.isSymbolicLink()) {
      try {
        kind = fs.statSync(full);
      } catch {
        return; // a dangling link
      }
    }
    const isImage =
      kind.isFile() && (IMAGE_EXTENSIONS.has(path.extname(entry.name.toString('latin1')).toLowerCase()) || sniff(full));
    if (!kind.isDirectory() && !isImage) return;
    if (name === null) {
      throw new ConfigError(
        `${path.join(folder, shownName(entry.name))}: the name of this ${kind.isDirectory() ? 'folder' : 'image'} is not valid UTF-8, so a dataset cannot record it; rename it (e.g. convmv -f latin1 -t utf8) or list the images with --inputs`,
      );
    }
    if (kind.isDirectory()) folders.push(full as string);
    else found.push(full as string);
  }
}

/** The next entry of an open folder (its name as bytes), or null at the end. */
function readEntry(handle: fs.Dir, folder: string): fs.Dirent<Buffer> | null {
  try {
    return handle.readSync() as unknown as fs.Dirent<Buffer> | null;
  } catch (e) {
    throw new ConfigError(
      `cannot read folder ${folder} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); its images would be missing from the index order`,
    );
  }
}

/**
 * Paths, one a line (blank lines skipped, CRLF accepted). Relative paths are relative to the working
 * folder, as for arguments. A line that is not UTF-8, or longer than a path can be, is an error naming
 * it: it is no image path, and such a line would make a manifest entry no reader accepts.
 */
export function parseInputList(text: string | Buffer, label = 'input list'): string[] {
  const out: string[] = [];
  const bytes = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
  let start = 0;
  for (let line = 1; start < bytes.length; line++) {
    let end = bytes.indexOf(10, start);
    if (end === -1) end = bytes.length;
    let raw = bytes.subarray(start, end);
    start = end + 1;
    if (raw.length && raw[raw.length - 1] === 13) raw = raw.subarray(0, raw.length - 1);
    if (raw.length > MAX_SOURCE_BYTES) {
      throw new ConfigError(
        `${label} line ${line}: ${raw.length} bytes long, longer than any path (${MAX_SOURCE_BYTES}): not an image path`,
      );
    }
    const decoded = decodeName(raw);
    if (decoded === null) {
      throw new ConfigError(
        `${label} line ${line}: "${shownName(raw).slice(0, 200)}" is not valid UTF-8, so a dataset cannot record it (rename the file, e.g. convmv -f latin1 -t utf8)`,
      );
    }
    if (decoded.trim() !== '') out.push(decoded);
  }
  return out;
}

/** Reads an --inputs list: a file, or `-` for stdin. A missing or unreadable file is a one-line error. */
export async function readInputList(file: string, stdin: NodeJS.ReadableStream = process.stdin): Promise<string[]> {
  if (file === '-') {
    const chunks: Buffer[] = [];
    for await (const chunk of stdin) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    return parseInputList(Buffer.concat(chunks), '--inputs - (stdin)');
  }
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch {
    throw new ConfigError(`--inputs ${file}: no such file`);
  }
  if (stat.isDirectory())
    throw new ConfigError(
      `--inputs ${file} is a folder: give a text file with one image path per line (or pass the folder as an argument to walk it)`,
    );
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw new ConfigError(
      `--inputs ${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
  return parseInputList(bytes, `--inputs ${file}`);
}

/**
 * The dataset's input list, absolute paths in index order: each argument in order (a folder
 * replaced by the images found under it, anything else taken as one image, even when it does not
 * exist: it becomes that index's recorded failure), then the lines of the list. A line of a list is
 * always one image: a folder there is a failure, not walked. Built by appending, never by spreading
 * (`push(...list)` overflows the call stack on a long list).
 */
export function expandInputs(args: string[], listed: string[] = []): string[] {
  const out: string[] = [];
  const add = (p: string, what: string) => {
    const abs = path.resolve(p);
    if (Buffer.byteLength(abs) > MAX_SOURCE_BYTES)
      throw new ConfigError(
        `${what}: ${Buffer.byteLength(abs)} bytes long as an absolute path, longer than any path (${MAX_SOURCE_BYTES})`,
      );
    out.push(abs);
  };
  for (const [k, arg] of args.entries()) {
    let isDir = false;
    try {
      isDir = fs.statSync(arg).isDirectory();
    } catch {
      // missing: recorded as a failure when its turn comes
    }
    if (isDir) {
      // Walked from its absolute path: the paths found are absolute and normalised already.
      const images = walkImages(path.resolve(arg));
      if (images.length === 0)
        throw new ConfigError(
          `${arg}: no images in this folder (looked for ${[...IMAGE_EXTENSIONS].join(' ')} and image content)`,
        );
      for (const f of images) {
        if (Buffer.byteLength(f) > MAX_SOURCE_BYTES)
          throw new ConfigError(`${f}: longer than any path (${MAX_SOURCE_BYTES} bytes)`);
        out.push(f);
      }
    } else {
      add(arg, `argument ${k + 1}`);
    }
  }
  for (const [k, line] of listed.entries()) add(line, `input list line ${k + 1}`);
  return out;
}
/** Why `file` cannot be read as an input (null if it can be tried): no such file, a folder, a pipe, empty. */
export function inputFileProblem(file: string): string | null {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'no such file';
    if (code === 'ENOTDIR') return 'no such file (a part of the path is a file)';
    if (code === 'EACCES') return 'permission denied';
    return `cannot read (${code ?? (e as Error).message})`;
  }
  if (stat.isDirectory()) return 'is a directory, not an image file';
  if (!stat.isFile()) return 'is not a regular file';
  if (stat.size === 0) return 'empty file';
  return null;
}
