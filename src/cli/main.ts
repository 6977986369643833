import * as path from 'path';
import { packageRoot, packageVersion } from '../version';
import { runDownload, DOWNLOAD_HELP } from './download';
import { runEncode, ENCODE_HELP } from './encode';
import { runInspect, INSPECT_HELP } from './inspect';
import { runPreprocess, PREPROCESS_HELP } from './preprocess';
import { LlavaVisionError } from '../errors';
import { UsageError } from './args';

const HELP = `llava-vision — LLaVA's vision side (CLIP tower + projector + preprocessing) on TensorFlow.js

Usage:
  llava-vision encode [--model DIR|REPO_ID] [options] IMAGE... --out FILE.safetensors
  llava-vision encode [--model DIR|REPO_ID] [options] --pixel-values FILE.safetensors --out FILE.safetensors
  llava-vision preprocess [--model DIR|REPO_ID] [options] IMAGE... --out FILE.safetensors
  llava-vision download REPO_ID [--revision R] [--include-projector] [--cache-dir DIR]
  llava-vision inspect [--json] [--all] [--vision-tower DIR] DIR_OR_FILE
  llava-vision --help | <command> --help | --version

Commands:
  preprocess  images to pixel_values only (HF CLIPImageProcessor + LLaVA pad/anyres), Pillow-exact
  encode      images (or pixel values) through the vision tower, projector and LLaVA merge, to safetensors
  download    a model from the HuggingFace hub into the local HF cache (prints the folder for --model)
  inspect     a checkpoint folder or file: layout, configs, tensors, and what encode would load or ignore

Exit codes: 0 done; 1 the work failed (a file cannot be read, a model cannot be loaded, an image failed:
the others are still written); 2 usage error (an unknown, malformed or out-of-range option, options that
do not go together, a missing argument), nothing done.
A negative number after an option is its value: --select-layer -2 (or --select-layer=-2).
Models by hub id (org/name) come from the HuggingFace cache (HF_HUB_CACHE, else HF_HOME/hub, else
~/.cache/huggingface/hub); \`download\` or --download fetches them; HF_HUB_OFFLINE=1 forbids any request.

${ENCODE_HELP}

${PREPROCESS_HELP}

${DOWNLOAD_HELP}

${INSPECT_HELP}`;

/** Entry point; returns the exit code. Errors on bad input are one line on stderr. */
export async function main(argv: string[], io: { out?: (s: string) => void; err?: (s: string) => void } = {}): Promise<number> {
  const out = io.out ?? ((s: string) => process.stdout.write(s));
  const err = io.err ?? ((s: string) => process.stderr.write(s));
  const [command, ...rest] = argv;
  try {
    if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
      out(HELP + '\n');
      return command === undefined ? 2 : 0;
    }
    if (command === '--version' || command === '-V') {
      out(`llava-vision-tfjs ${packageVersion()}\n`);
      return 0;
    }
    if (command === 'preprocess') return await runPreprocess(rest, { out, err, demoModel: demoModelDir() });
    if (command === 'encode') return await runEncode(rest, { out, err, demoModel: demoModelDir() });
    if (command === 'download') return await runDownload(rest, { out, err });
    if (command === 'inspect') return await runInspect(rest, { out, err });
    err(`llava-vision: unknown command "${command}" (try --help)\n`);
    return 2;
  } catch (e) {
    if (e instanceof LlavaVisionError) {
      // A multi-line message lists several problems (e.g. every missing input): one prefixed line each.
      err(e.message.split('\n').map((line) => `llava-vision: ${line}\n`).join(''));
      return e instanceof UsageError ? 2 : 1;
    }
    throw e;
  }
}

/** weights/demo of this package. */
export function demoModelDir(): string {
  return path.join(packageRoot(), 'weights', 'demo');
}
