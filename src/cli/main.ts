import * as path from 'path';
import { packageRoot, packageVersion } from '../version';
import { runDownload, DOWNLOAD_HELP } from './download';
import { LlavaVisionError } from '../errors';
import { UsageError } from './args';

type Io = { out: (s: string) => void; err: (s: string) => void };

/**
 * The commands that need TensorFlow.js, loaded when they run: without the tfjs peers (an install with
 * --legacy-peer-deps, yarn 1, pnpm) --help, --version and download still work, and the others fail
 * in one line naming the packages to install (src/tf_peers.ts), not with a require stack.
 */
const TFJS_COMMANDS = {
  encode: async () => {
    const m = await import('./encode');
    return {
      help: m.ENCODE_HELP,
      run: (argv: string[], io: Io) => m.runEncode(argv, { ...io, demoModel: demoModelDir() }),
    };
  },
  preprocess: async () => {
    const m = await import('./preprocess');
    return {
      help: m.PREPROCESS_HELP,
      run: (argv: string[], io: Io) => m.runPreprocess(argv, { ...io, demoModel: demoModelDir() }),
    };
  },
  inspect: async () => {
    const m = await import('./inspect');
    return { help: m.INSPECT_HELP, run: m.runInspect };
  },
  check: async () => {
    const m = await import('./check');
    return {
      help: m.CHECK_HELP,
      run: (argv: string[], io: Io) => m.runCheck(argv, { ...io, demoModel: demoModelDir() }),
    };
  },
};
type TfjsCommand = keyof typeof TFJS_COMMANDS;
const isTfjsCommand = (c: string): c is TfjsCommand => Object.prototype.hasOwnProperty.call(TFJS_COMMANDS, c);

/** The help of every command, in order; a command whose module cannot load (the tfjs peers missing) gives way to one line saying so. */
async function commandHelps(): Promise<string> {
  const texts: string[] = [];
  const unavailable: string[] = [];
  let why = '';
  for (const name of ['encode', 'preprocess', 'download', 'inspect', 'check'] as const) {
    if (name === 'download') {
      texts.push(DOWNLOAD_HELP);
      continue;
    }
    try {
      texts.push((await TFJS_COMMANDS[name]()).help);
    } catch (e) {
      if (!(e instanceof LlavaVisionError)) throw e;
      unavailable.push(name);
      why = e.message;
    }
  }
  if (unavailable.length)
    texts.unshift(`${unavailable.join(', ')}: cannot run here (their options are listed once they can): ${why}`);
  return texts.join('\n\n');
}

const helpText =
  async () => `llava-vision — LLaVA's vision side (CLIP tower + projector + preprocessing) on TensorFlow.js

Usage:
  llava-vision encode [--model DIR|REPO_ID] [options] IMAGE... --out FILE.safetensors
  llava-vision encode [--model DIR|REPO_ID] [options] --pixel-values FILE.safetensors --out FILE.safetensors
  llava-vision preprocess [--model DIR|REPO_ID] [options] IMAGE... --out FILE.safetensors
  llava-vision download REPO_ID [--revision R] [--include-projector] [--cache-dir DIR]
  llava-vision inspect [--json] [--all] [--vision-tower DIR] DIR_OR_FILE
  llava-vision check --reference REF.safetensors [--model DIR|REPO_ID] [options] [IMAGE...]
  llava-vision --help | <command> --help | --version

Commands:
  preprocess  images to pixel_values only (HF CLIPImageProcessor + LLaVA pad/anyres), Pillow-exact
  encode      images (or pixel values) through the vision tower, projector and LLaVA merge, to safetensors
  download    a model from the HuggingFace hub into the local HF cache (prints the folder for --model)
  inspect     a checkpoint folder or file: layout, configs, tensors, and what encode would load or ignore
  check       the model against a PyTorch reference of your own modules (python/llava_vision_reference.py)

Exit codes: 0 done; 1 the work failed (a file cannot be read, a model cannot be loaded, an image failed:
the others are still written); 2 usage error (an unknown, malformed or out-of-range option, options that
do not go together, a missing argument), nothing done.
A negative number after an option is its value: --select-layer -2 (or --select-layer=-2).
Models by hub id (org/name) come from the HuggingFace cache (HF_HUB_CACHE, else HF_HOME/hub, else
~/.cache/huggingface/hub); \`download\` or --download fetches them; HF_HUB_OFFLINE=1 forbids any request.

${await commandHelps()}`;

/** Entry point; returns the exit code. Errors on bad input are one line on stderr. */
export async function main(
  argv: string[],
  io: { out?: (s: string) => void; err?: (s: string) => void } = {},
): Promise<number> {
  const out = io.out ?? ((s: string) => process.stdout.write(s));
  const err = io.err ?? ((s: string) => process.stderr.write(s));
  const [command, ...rest] = argv;
  try {
    if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
      out((await helpText()) + '\n');
      return command === undefined ? 2 : 0;
    }
    if (command === '--version' || command === '-V') {
      out(`llava-vision-tfjs ${packageVersion()}\n`);
      return 0;
    }
    if (isTfjsCommand(command)) return await (await TFJS_COMMANDS[command]()).run(rest, { out, err });
    if (command === 'download') return await runDownload(rest, { out, err });
    err(`llava-vision: unknown command "${command}" (try --help)\n`);
    return 2;
  } catch (e) {
    if (e instanceof LlavaVisionError) {
      // A multi-line message lists several problems (e.g. every missing input): one prefixed line each.
      err(
        e.message
          .split('\n')
          .map((line) => `llava-vision: ${line}\n`)
          .join(''),
      );
      return e instanceof UsageError ? 2 : 1;
    }
    throw e;
  }
}

/** weights/demo of this package. */
export function demoModelDir(): string {
  return path.join(packageRoot(), 'weights', 'demo');
}
