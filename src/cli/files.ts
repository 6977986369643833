/**
 * What a command reads and writes, checked before any model is loaded or any work is done: a mistake
 * in the arguments (a swapped --out, a typo in a path) must cost nothing and lose nothing.
 */
import * as fs from 'fs';
import * as path from 'path';
import { inputFileProblem } from '../dataset';
import { PlanOptions, planLoad } from '../loading/load_plan';
import { resolveModelDir } from '../loading/sources';
import { ConfigError, quote } from '../errors';
import { SafetensorsFile } from '../io/safetensors';

/** What `producer` in the `__metadata__` of the files this library writes starts with. */
const OUR_PRODUCER = 'llava-vision-tfjs ';

/** Every input file exists, is a file and is not empty; all problems are reported at once, one line each. */
export function checkInputFiles(files: string[]): void {
  const problems = files.flatMap((file) => {
    const problem = inputFileProblem(file);
    return problem ? [`${file}: ${problem}`] : [];
  });
  if (problems.length) throw new ConfigError(problems.join('\n'));
}

/**
 * Make `--out FILE` safe to write at the end of the job: it is not a folder, never one of this run's
 * inputs (`inputs`: every file the run reads, however it was found), and, unless `force`, not an
 * existing file this library did not write (anything but a safetensors file whose `__metadata__.producer`
 * is ours: a checkpoint, a trained projector, someone else's tensors); its parent folders are created
 * now, so a missing folder is never discovered after the work is done.
 */
export function prepareOutputFile(out: string, options: { inputs: string[]; force?: boolean; option?: string }): void {
  const opt = options.option ?? '--out';
  if (out.endsWith('/') || out.endsWith(path.sep)) {
    throw new ConfigError(
      `${opt} ${out} names a folder: give a file name, e.g. ${path.join(out, 'tokens.safetensors')}`,
    );
  }
  const existing = statOrNull(out);
  if (existing?.isDirectory()) {
    throw new ConfigError(`${opt} ${out} is a folder: give a file name, e.g. ${path.join(out, 'tokens.safetensors')}`);
  }
  if (existing && !existing.isFile())
    throw new ConfigError(`${opt} ${out} exists and is not a regular file; refusing to replace it`);
  if (existing) {
    // Not even with --force: the run reads it (and replacing a model's weights loses them).
    const input = options.inputs.find((file) => sameFile(existing, file));
    if (input !== undefined) {
      throw new ConfigError(
        `${opt} ${out} is also an input of this run (${input}); refusing to overwrite it (check the argument order, or choose another name)`,
      );
    }
  }
  if (existing && !options.force) {
    const producer = safetensorsProducer(out);
    if (producer === null) {
      throw new ConfigError(
        `${opt} ${out} exists and is not a safetensors file; refusing to overwrite it (check the argument order, or add --force)`,
      );
    }
    if (!producer.startsWith(OUR_PRODUCER)) {
      const by = producer === '' ? 'no producer recorded' : `producer ${quote(producer)}`;
      throw new ConfigError(
        `${opt} ${out} is a safetensors file llava-vision did not write (${by}: weights?); refusing to overwrite it (check the argument order, or add --force)`,
      );
    }
  }
  const dir = path.dirname(path.resolve(out));
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why =
      code === 'EEXIST' || code === 'ENOTDIR'
        ? 'a part of its path is a file'
        : code === 'EACCES'
          ? 'permission denied'
          : code;
    throw new ConfigError(`${opt} ${out}: cannot create its folder ${dir} (${why})`);
  }
  try {
    fs.accessSync(dir, fs.constants.W_OK);
  } catch {
    throw new ConfigError(`${opt} ${out}: its folder ${dir} is not writable`);
  }
}

/**
 * Every existing file a load of `model` (a folder, or a hub id the HF cache holds) with these options
 * reads, or sits beside what it reads: the model folder's files, the tower folder's however it is found
 * (the option, `mm_vision_tower` as a folder or from the HF cache), the weights' files and the projector's.
 * Nothing is downloaded: what is not local yet adds nothing (a download comes after --out is checked).
 */
export async function modelInputFiles(
  model: string,
  options: Omit<PlanOptions, 'mode' | 'download'> = {},
): Promise<string[]> {
  let modelDir: string;
  try {
    modelDir = await resolveModelDir(model, { download: false });
  } catch {
    return [];
  }
  let files = filesIn(modelDir);
  try {
    const plan = await planLoad(modelDir, { ...options, mode: 'inspect' });
    for (const from of [plan.tower.dir, plan.tower.weights?.from, plan.projector?.weights?.from]) {
      if (from) files = files.concat(statOrNull(from)?.isDirectory() ? filesIn(from) : [from]);
    }
    files = files.concat(plan.checkpoint?.files ?? [], plan.processorFile ?? []);
  } catch {
    // A folder the planner cannot read: its load fails, after this check; its own files are protected above.
  }
  return files;
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

/** A safetensors file's `__metadata__.producer` ('' when it records none); null for anything else. */
function safetensorsProducer(file: string): string | null {
  try {
    const st = SafetensorsFile.open(file);
    try {
      return st.metadata.producer ?? '';
    } finally {
      st.close();
    }
  } catch {
    return null;
  }
}
