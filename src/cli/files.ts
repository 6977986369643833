/**
 * What a command reads and writes, checked before any model is loaded or any work is done: a mistake
 * in the arguments (a swapped --out, a typo in a path) must cost nothing and lose nothing.
 */
import * as fs from 'fs';
import * as path from 'path';
import { inputFileProblem } from '../api/inputs';
import { ConfigError } from '../errors';
import { SafetensorsFile } from '../io/safetensors';

/** Every input file exists, is a file and is not empty; all problems are reported at once, one line each. */
export function checkInputFiles(files: string[]): void {
  const problems = files.flatMap((file) => {
    const problem = inputFileProblem(file);
    return problem ? [`${file}: ${problem}`] : [];
  });
  if (problems.length) throw new ConfigError(problems.join('\n'));
}

/**
 * Make `--out FILE` safe to write at the end of the job: it is not a folder, not one of this run's
 * inputs, and not an existing file of another kind (anything but a safetensors file), unless `force`;
 * its parent folders are created now, so a missing folder is never discovered after the work is done.
 */
export function prepareOutputFile(out: string, options: { inputs: string[]; force?: boolean; option?: string }): void {
  const opt = options.option ?? '--out';
  if (out.endsWith('/') || out.endsWith(path.sep)) {
    throw new ConfigError(`${opt} ${out} names a folder: give a file name, e.g. ${path.join(out, 'tokens.safetensors')}`);
  }
  const existing = statOrNull(out);
  if (existing?.isDirectory()) {
    throw new ConfigError(`${opt} ${out} is a folder: give a file name, e.g. ${path.join(out, 'tokens.safetensors')}`);
  }
  if (existing && !existing.isFile()) throw new ConfigError(`${opt} ${out} exists and is not a regular file; refusing to replace it`);
  if (existing && !options.force) {
    const input = options.inputs.find((file) => sameFile(existing, file));
    if (input !== undefined) {
      throw new ConfigError(`${opt} ${out} is also an input of this run (${input}); refusing to overwrite it (check the argument order, or add --force)`);
    }
    if (!isSafetensorsFile(out)) {
      throw new ConfigError(`${opt} ${out} exists and is not a safetensors file; refusing to overwrite it (check the argument order, or add --force)`);
    }
  }
  const dir = path.dirname(path.resolve(out));
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'EEXIST' || code === 'ENOTDIR' ? 'a part of its path is a file' : code === 'EACCES' ? 'permission denied' : code;
    throw new ConfigError(`${opt} ${out}: cannot create its folder ${dir} (${why})`);
  }
  try {
    fs.accessSync(dir, fs.constants.W_OK);
  } catch {
    throw new ConfigError(`${opt} ${out}: its folder ${dir} is not writable`);
  }
}

/** The files directly inside a folder (a model folder whose files must not be overwritten); [] otherwise. */
export function filesIn(dir: string | undefined): string[] {
  if (dir === undefined || !statOrNull(dir)?.isDirectory()) return [];
  try {
    return fs.readdirSync(dir).map((name) => path.join(dir, name));
  } catch {
    return [];
  }
}

function statOrNull(file: string): fs.Stats | null {
  try {
    return fs.statSync(file);
  } catch {
    return null;
  }
}

/** Same file by device and inode: catches `./a.png` vs `a.png`, symlinks and hard links alike. */
function sameFile(stat: fs.Stats, other: string): boolean {
  const o = statOrNull(other);
  return o !== null && o.dev === stat.dev && o.ino === stat.ino;
}

function isSafetensorsFile(file: string): boolean {
  try {
    SafetensorsFile.open(file).close();
    return true;
  } catch {
    return false;
  }
}
