/**
 * The input list of a dataset encode: image paths, folders walked recursively, and lists of paths (a
 * file, or stdin). The order of the list fixes each image's global index, so it must be the same on
 * every run and every machine: folders are walked in sorted order, nothing depends on readdir's order.
 */
import * as fs from 'fs';
import * as path from 'path';
import { ConfigError } from '../errors';

/** Extensions taken as images without looking inside (what sharp decodes, plus .bmp, which it reports as undecodable). */
const IMAGE_EXTENSIONS = new Set(['.png', '.jpg', '.jpeg', '.jpe', '.jfif', '.webp', '.gif', '.tif', '.tiff', '.avif', '.heic', '.heif', '.bmp']);

/** Leading bytes of the formats sharp decodes, for files with another (or no) extension. */
function looksLikeImage(head: Buffer): boolean {
  const ascii = (at: number, s: string) => head.subarray(at, at + s.length).toString('latin1') === s;
  return (
    ascii(0, '\x89PNG\r\n\x1a\n') ||
    (head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) || // JPEG
    ascii(0, 'GIF87a') || ascii(0, 'GIF89a') ||
    (ascii(0, 'RIFF') && ascii(8, 'WEBP')) ||
    ascii(0, 'II*\x00') || ascii(0, 'MM\x00*') || // TIFF
    (ascii(4, 'ftyp') && ['avif', 'avis', 'heic', 'heix', 'mif1'].some((brand) => ascii(8, brand)))
  );
}

function sniff(file: string): boolean {
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

/**
 * The images under `dir`, recursively, sorted by path (JavaScript string order, the same everywhere).
 * Hidden entries (a leading dot: `.git`, macOS `._photo.jpg` resource forks) are skipped, symlinks are
 * followed once (a link back up the tree is not walked again). An unreadable folder is an error: its
 * images would shift every later index once it became readable.
 */
export function walkImages(dir: string): string[] {
  const found: string[] = [];
  const seen = new Set<string>();
  const visit = (folder: string) => {
    const real = fs.realpathSync(folder);
    if (seen.has(real)) return;
    seen.add(real);
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(folder, { withFileTypes: true });
    } catch (e) {
      throw new ConfigError(`cannot read folder ${folder} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); its images would be missing from the index order`);
    }
    for (const entry of entries) {
      if (entry.name.startsWith('.')) continue;
      const full = path.join(folder, entry.name);
      let kind: { isDirectory(): boolean; isFile(): boolean } = entry;
      if (entry.isSymbolicLink()) {
        try {
          kind = fs.statSync(full);
        } catch {
          continue; // a dangling link
        }
      }
      if (kind.isDirectory()) visit(full);
      else if (kind.isFile() && isImageFile(full)) found.push(full);
    }
  };
  visit(dir);
  return found.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Paths, one a line (blank lines skipped, CRLF accepted). Relative paths are relative to the working folder, as for arguments. */
export function parseInputList(text: string): string[] {
  return text.split('\n').map((line) => line.replace(/\r$/, '')).filter((line) => line.trim() !== '');
}

/** Reads an --inputs list: a file, or `-` for stdin. A missing or unreadable file is a one-line error. */
export async function readInputList(file: string, stdin: NodeJS.ReadableStream = process.stdin): Promise<string[]> {
  if (file === '-') {
    const chunks: Buffer[] = [];
    for await (const chunk of stdin) chunks.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    return parseInputList(Buffer.concat(chunks).toString('utf8'));
  }
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch {
    throw new ConfigError(`--inputs ${file}: no such file`);
  }
  if (stat.isDirectory()) throw new ConfigError(`--inputs ${file} is a folder: give a text file with one image path per line (or pass the folder as an argument to walk it)`);
  try {
    return parseInputList(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new ConfigError(`--inputs ${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/**
 * The dataset's input list, absolute paths in index order: each argument in order (a folder
 * replaced by the images found under it, anything else taken as one image, even when it does not
 * exist: it becomes that index's recorded failure), then the lines of the list. A line of a list is
 * always one image: a folder there is a failure, not walked.
 */
export function expandInputs(args: string[], listed: string[] = []): string[] {
  const out: string[] = [];
  for (const arg of args) {
    let isDir = false;
    try {
      isDir = fs.statSync(arg).isDirectory();
    } catch {
      // missing: recorded as a failure when its turn comes
    }
    if (isDir) {
      const images = walkImages(arg);
      if (images.length === 0) throw new ConfigError(`${arg}: no images in this folder (looked for ${[...IMAGE_EXTENSIONS].join(' ')} and image content)`);
      out.push(...images.map((f) => path.resolve(f)));
    } else {
      out.push(path.resolve(arg));
    }
  }
  for (const line of listed) out.push(path.resolve(line));
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
