import * as path from 'path';
import { decodeImage, processImages } from '../image';
import { CLIPImageProcessor } from '../image/processor';
import { imageFailureMessage } from '../image/failure';
import { AspectMode, parseGridPinpoints } from '../config/llava';
import { ConfigError, LlavaVisionError } from '../errors';
import { TensorToWrite, writeSafetensors } from '../io/safetensors';
import { packageVersion } from '../version';
import { choiceOption, parseOptions } from './args';
import { checkInputFiles, filesIn, prepareOutputFile } from './files';

export const PREPROCESS_HELP = `preprocess: images -> pixel_values only (no model), written as safetensors
  llava-vision preprocess --preprocessor FILE_OR_DIR [--aspect square|pad|anyres] [--grid-pinpoints JSON] IMAGE... --out FILE

  --preprocessor P   a preprocessor_config.json, or the folder holding it (e.g. a CLIP model folder)
  --aspect A         square (processor only, default) | pad (LLaVA-1.5 expand2square) | anyres (LLaVA-1.6 tiles)
  --grid-pinpoints J anyres resolutions as [[w,h],...]
  --auto-orient      apply EXIF orientation (Pillow, and so LLaVA, does not)
  --out FILE         images.<i>.pixel_values [tiles,3,H,W] float32
  --force            overwrite --out even when it exists and is not a safetensors file, or is an input

Example:
  llava-vision preprocess --preprocessor clip-vit-large-patch14-336 --aspect pad a.jpg b.png --out pv.safetensors`;

const SPEC = {
  preprocessor: { type: 'string' },
  aspect: { type: 'string' },
  'grid-pinpoints': { type: 'string' },
  'auto-orient': { type: 'boolean' },
  out: { type: 'string' },
  force: { type: 'boolean' },
  quiet: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export async function runPreprocess(argv: string[], io: { out: (s: string) => void; err: (s: string) => void }): Promise<number> {
  const { values: o, positionals: images } = parseOptions(argv, SPEC);
  if (o.help) {
    io.out(PREPROCESS_HELP + '\n');
    return 0;
  }
  if (!o.preprocessor) throw new ConfigError('preprocess needs --preprocessor FILE_OR_DIR');
  if (!o.out) throw new ConfigError('preprocess needs --out FILE.safetensors');
  if (images.length === 0) throw new ConfigError('preprocess needs image files');
  const aspect = choiceOption<AspectMode>(o.aspect, 'aspect', ['square', 'pad', 'anyres']) ?? 'square';
  let gridPinpoints;
  if (o['grid-pinpoints'] !== undefined) {
    try {
      gridPinpoints = parseGridPinpoints(JSON.parse(o['grid-pinpoints']), '--grid-pinpoints');
    } catch (e) {
      if (e instanceof LlavaVisionError) throw e;
      throw new ConfigError(`--grid-pinpoints must be JSON, e.g. [[336,672],[672,336]]`);
    }
  }
  if (aspect === 'anyres' && !gridPinpoints) throw new ConfigError('--aspect anyres needs --grid-pinpoints');
  prepareOutputFile(o.out, { inputs: [...images, o.preprocessor, ...filesIn(o.preprocessor)], force: o.force });
  checkInputFiles(images);
  const processor = CLIPImageProcessor.fromFile(o.preprocessor);
  const tensors: Record<string, TensorToWrite> = {};
  const failed: string[] = [];
  const sizes: ([number, number] | null)[] = [];
  for (const [i, file] of images.entries()) {
    let decoded = false;
    try {
      const img = await decodeImage(file, { autoOrient: o['auto-orient'] });
      decoded = true;
      const [p] = processImages([img], processor, { aspect, gridPinpoints });
      tensors[`images.${i}.pixel_values`] = { dtype: 'F32', shape: p.shape, data: p.pixelValues };
      sizes.push([img.width, img.height]);
    } catch (e) {
      failed.push(imageFailureMessage(e, file, decoded)); // this image's failure, never the whole run's
      sizes.push(null);
    }
  }
  if (failed.length === images.length) {
    for (const f of failed) io.err(`llava-vision: ${f}\n`);
    io.err(`llava-vision: none of the ${images.length} image(s) could be preprocessed; nothing written to ${o.out}\n`);
    return 1;
  }
  writeSafetensors(o.out, tensors, {
    producer: `llava-vision-tfjs ${packageVersion()}`,
    preprocessor: path.resolve(o.preprocessor),
    options: JSON.stringify({ aspect, grid_pinpoints: gridPinpoints ?? null, auto_orient: o['auto-orient'] ?? false }),
    sources: JSON.stringify(images.map((f) => path.resolve(f))),
    image_sizes: JSON.stringify(sizes),
  });
  for (const f of failed) io.err(`llava-vision: ${f}\n`);
  return failed.length ? 1 : 0;
}
