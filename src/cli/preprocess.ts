import * as path from 'path';
import { decodeImage, processImages } from '../image';
import { CLIPImageProcessor } from '../image/processor';
import { imageFailureMessage } from '../image/failure';
import { ModelPreprocessing, readModelPreprocessing } from '../loading/load_plan';
import { AspectMode } from '../config/llava';
import { TensorToWrite, writeSafetensors } from '../io/safetensors';
import { packageVersion } from '../version';
import { UsageError, choiceOption, gridPinpointsOption, parseOptions } from './args';
import { downloadProgress } from './download';
import { checkInputFiles, filesIn, modelInputFiles, prepareOutputFile } from './files';

export const PREPROCESS_HELP = `preprocess: images -> pixel_values only (no forward), written as safetensors for encode --pixel-values
  llava-vision preprocess [--model DIR|REPO_ID] [options] IMAGE... --out FILE
  llava-vision preprocess --preprocessor FILE_OR_DIR [options] IMAGE... --out FILE

  --model M          take the processor, aspect and grid pinpoints from this model exactly as encode does
                     (for original LLaVA: its mm_vision_tower's preprocessor_config.json); default: the bundled
                     demo checkpoint, unless --preprocessor is given. Its output feeds
                     \`encode --model M --pixel-values FILE\` unchanged, with the same tensors as \`encode --model M IMAGE...\`
  --vision-tower D   CLIP folder (or hub id) for an original LLaVA checkpoint, as for encode
  --download         fetch a hub id that is not in the HuggingFace cache, as for encode
  --preprocessor P   a preprocessor_config.json, or the folder holding it, instead of the model's
  --aspect A         square | pad (LLaVA-1.5 expand2square) | anyres (LLaVA-1.6 tiles)
                     (default: the model's image_aspect_ratio; square with --preprocessor alone)
  --grid-pinpoints J anyres resolutions as [[w,h],...] (default: the model's image_grid_pinpoints)
  --auto-orient      apply EXIF orientation (Pillow, and so LLaVA, does not)
  --out FILE         images.<i>.pixel_values [tiles,3,H,W] float32; __metadata__: options, sources, image_sizes
  --force            overwrite --out even when it is not an output of llava-vision (another file, or a
                     safetensors file with no llava-vision producer); an input of the run never is
  --quiet            no progress messages (the demo checkpoint's warning still prints)

Examples:
  llava-vision preprocess --model llava-v1.5-7b a.jpg b.png --out pv.safetensors
  llava-vision encode --model llava-v1.5-7b --pixel-values pv.safetensors --out tokens.safetensors
  llava-vision preprocess --preprocessor clip-vit-large-patch14-336 --aspect pad a.jpg --out pv.safetensors`;

const SPEC = {
  model: { type: 'string' },
  'vision-tower': { type: 'string' },
  download: { type: 'boolean' },
  preprocessor: { type: 'string' },
  aspect: { type: 'string' },
  'grid-pinpoints': { type: 'string' },
  'auto-orient': { type: 'boolean' },
  out: { type: 'string' },
  force: { type: 'boolean' },
  quiet: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export async function runPreprocess(
  argv: string[],
  io: { out: (s: string) => void; err: (s: string) => void; demoModel: string },
): Promise<number> {
  const { values: o, positionals: images } = parseOptions(argv, SPEC);
  if (o.help) {
    io.out(PREPROCESS_HELP + '\n');
    return 0;
  }
  if (!o.out) throw new UsageError('preprocess needs --out FILE.safetensors');
  if (images.length === 0) throw new UsageError('preprocess needs image files');
  const aspectOption = choiceOption<AspectMode>(o.aspect, 'aspect', ['square', 'pad', 'anyres']);
  const gridOption = gridPinpointsOption(o['grid-pinpoints']);
  const useModel = o.model !== undefined || o.preprocessor === undefined;
  const modelName: string = o.model ?? io.demoModel;
  if (!useModel && (o['vision-tower'] || o.download))
    throw new UsageError(`--${o.download ? 'download' : 'vision-tower'} needs --model`);
  if (!useModel && aspectOption === 'anyres' && !gridOption)
    throw new UsageError('--aspect anyres needs --grid-pinpoints');
  const modelInputs = useModel ? await modelInputFiles(modelName, { visionTower: o['vision-tower'] }) : [];
  prepareOutputFile(o.out, {
    inputs: [...images, ...(o.preprocessor ? [o.preprocessor, ...filesIn(o.preprocessor)] : []), ...modelInputs],
    force: o.force,
  });
  checkInputFiles(images);
  if (useModel && o.model === undefined) {
    io.err(
      `llava-vision: no --model given: using the bundled demo checkpoint ${modelName} (generated weights, not a trained model)\n`,
    );
  }

  let model: ModelPreprocessing | null = null;
  if (useModel) {
    model = await readModelPreprocessing(modelName, {
      visionTower: o['vision-tower'],
      download: o.download ? { onProgress: o.quiet ? undefined : downloadProgress() } : undefined,
    });
  }
  const aspect = aspectOption ?? model?.settings.aspect ?? 'square';
  const gridPinpoints = gridOption ?? model?.settings.gridPinpoints ?? undefined;
  if (aspect === 'anyres' && !gridPinpoints)
    throw new UsageError(`--aspect anyres needs --grid-pinpoints (${model!.modelDir} has no image_grid_pinpoints)`);
  const processorSource = o.preprocessor ?? model!.processorFile;
  const processor = CLIPImageProcessor.fromFile(processorSource);

  const tensors: Record<string, TensorToWrite> = {};
  const failed: { index: number; source: string; error: string }[] = [];
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
      failed.push({ index: i, source: file, error: imageFailureMessage(e, file, decoded) }); // this image's failure, never the whole run's
      sizes.push(null);
    }
  }
  if (failed.length === images.length) {
    for (const f of failed) io.err(`llava-vision: ${f.error}\n`);
    io.err(`llava-vision: none of the ${images.length} image(s) could be preprocessed; nothing written to ${o.out}\n`);
    return 1;
  }
  writeSafetensors(o.out, tensors, {
    producer: `llava-vision-tfjs ${packageVersion()}`,
    ...(model ? { model_dir: path.resolve(model.modelDir) } : {}),
    preprocessor: path.resolve(processorSource),
    options: JSON.stringify({ aspect, grid_pinpoints: gridPinpoints ?? null, auto_orient: o['auto-orient'] ?? false }),
    sources: JSON.stringify(images.map((f) => path.resolve(f))),
    image_sizes: JSON.stringify(sizes),
    ...(failed.length ? { failed: JSON.stringify(failed) } : {}),
  });
  for (const f of failed) io.err(`llava-vision: ${f.error}\n`);
  if (failed.length)
    io.err(
      `llava-vision: ${failed.length} of ${images.length} image(s) failed (listed in the output's __metadata__.failed); the others were written\n`,
    );
  return failed.length ? 1 : 0;
}
