import * as path from 'path';
import { packageRoot } from '../version';
import { runDownload, DOWNLOAD_HELP } from './download';
import { runEncode, ENCODE_HELP } from './encode';
import { runInspect, INSPECT_HELP } from './inspect';
import { runPreprocess, PREPROCESS_HELP } from './preprocess';
import { LlavaVisionError } from '../errors';

const HELP = `llava-vision — LLaVA's vision side (CLIP tower + projector + preprocessing) on TensorFlow.js

Usage:
  llava-vision encode [--model DIR] [options] IMAGE... --out FILE.safetensors
  llava-vision encode [--model DIR] [options] --pixel-values FILE.safetensors --out FILE.safetensors
  llava-vision download REPO_ID [--revision R] [--include-projector] [--cache-dir DIR]
  llava-vision inspect [--json] [--all] [--vision-tower DIR] DIR_OR_FILE
  llava-vision --help | <command> --help

Commands:
  preprocess  images to pixel_values only (HF CLIPImageProcessor + LLaVA pad/anyres), Pillow-exact
  encode      images (or pixel values) through the vision tower, projector and LLaVA merge, to safetensors
  download    a model from the HuggingFace hub into the local HF cache (prints the folder for --model)
  inspect     a checkpoint folder or file: layout, configs, tensors, and what encode would load or ignore

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
    if (command === 'preprocess') return await runPreprocess(rest, { out, err });
    if (command === 'encode') return await runEncode(rest, { out, err, demoModel: demoModelDir() });
    if (command === 'download') return await runDownload(rest, { out, err });
    if (command === 'inspect') return await runInspect(rest, { out, err });
    err(`llava-vision: unknown command "${command}" (try --help)\n`);
    return 1;
  } catch (e) {
    if (e instanceof LlavaVisionError) {
      // A multi-line message lists several problems (e.g. every missing input): one prefixed line each.
      err(e.message.split('\n').map((line) => `llava-vision: ${line}\n`).join(''));
      return 1;
    }
    throw e;
  }
}

/** weights/demo of this package. */
export function demoModelDir(): string {
  return path.join(packageRoot(), 'weights', 'demo');
}
