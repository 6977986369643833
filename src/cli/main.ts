import { runEncode, ENCODE_HELP } from './encode';
import { LlavaVisionError } from '../errors';

const HELP = `llava-vision — LLaVA's vision side (CLIP tower + projector + preprocessing) on TensorFlow.js

Usage:
  llava-vision encode --model DIR [options] (--pixel-values FILE.safetensors | IMAGE...) --out FILE.safetensors
  llava-vision --help | <command> --help

Commands:
  encode    run pixel values or images through the vision tower and projector, write safetensors

${ENCODE_HELP}`;

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
    if (command === 'encode') return await runEncode(rest, { out, err });
    err(`llava-vision: unknown command "${command}" (try --help)\n`);
    return 2;
  } catch (e) {
    if (e instanceof LlavaVisionError) {
      err(`llava-vision: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}
