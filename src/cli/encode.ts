import * as path from 'path';
import { BACKEND_CHOICES } from '../backend';
import { ImageFailure, SAVE_NAMES, encodeImages, encodePixelValuesAsync, encodePreprocessed } from '../api/encode_job';
import { LlavaVision } from '../api/llava_vision';
import { PixelValuesFile, readPixelValuesFile } from '../api/pixel_values_file';
import { ConfigError } from '../errors';
import { writeSafetensors } from '../io/safetensors';
import { packageVersion } from '../version';
import { UsageError, parseOptions, usageCheck } from './args';
import { DATASET_HELP, parsePart, rejectDatasetOptions, runEncodeDataset } from './encode_dataset';
import { ENCODE_SPEC, EncodeArgs, encodeSettings, loadOptions } from './encode_options';
import { checkInputFiles, modelInputFiles, prepareOutputFile } from './files';
import { progressBar } from './progress';

export const ENCODE_HELP = `encode: images (or precomputed pixel values) -> vision features, written as safetensors
  llava-vision encode [--model DIR] [options] IMAGE... --out FILE.safetensors
  llava-vision encode [--model DIR] [options] --pixel-values FILE.safetensors --out FILE.safetensors
  llava-vision encode [--model DIR] [options] IMAGE_OR_FOLDER... [--inputs LIST] --out-dir DIR

  --model DIR|REPO_ID          CLIP, CLIP vision-only, original LLaVA or llava-hf folder (auto-detected from
                               config.json), or a hub id found in the HuggingFace cache (see --download);
                               default: the bundled demo checkpoint (generated weights, NOT trained)
  --out FILE                   output: images.<i>.{pixel_values,hidden_states.<k>,features,projected,merged,pooler_output}
  --pixel-values FILE          instead of images: what \`llava-vision preprocess\` writes (images.<i>.pixel_values
                               [tiles,3,H,W] + image sizes: encoded exactly as the images would be), or one float32
                               tensor "pixel_values" [N,3,H,W] (e.g. written by Python; one tile per image)
  --vision-tower DIR|REPO_ID   CLIP folder for an original LLaVA checkpoint (default: its mm_vision_tower: a local
                               folder, else the HuggingFace cache)
  --download                   fetch what is not in the HuggingFace cache (--model or mm_vision_tower as a hub id)
                               from the hub (also LLAVA_VISION_DOWNLOAD=1; never with HF_HUB_OFFLINE=1;
                               HF_TOKEN, HF_ENDPOINT, HF_HUB_CACHE / HF_HOME as for huggingface_hub)
  --projector FILE             projector weights (safetensors or mm_projector.bin) overriding the model's
  --projector-type TYPE        linear | mlp<N>x_gelu | identity (default: config, else inferred from the weights)
  --select-layer N             hidden state used as features, negative from the end (default: config, else -2)
  --select-feature F           patch | cls_patch (default: config, else patch)
  --aspect A                   square | pad | anyres (default: config's image_aspect_ratio, else square; images only)
  --grid-pinpoints JSON        anyres resolutions as [[w,h],...] (default: config's image_grid_pinpoints; images only)
  --merge M                    flat | spatial | spatial_unpad (default: config's mm_patch_merge_type, else flat)
  --save LIST                  what to write: ${SAVE_NAMES.join(',')}; a comma list, repeatable
                               (--save a,b --save c writes a, b and c). It replaces the default, which is merged
                               with a projector (projected for a "pixel_values" tensor), else features: write
                               --save merged,features to keep merged and add features
  --batch-size N               tiles per forward (default 1; results do not depend on it)
  --threads N                  threads one model runs on (wasm): attention heads, MLP features and the mlp2x
                               projector's hidden width split across them, each thread holding only its slices of
                               the weights (default: $LLAVA_VISION_THREADS, else the available cores; 1 = today's
                               single thread; results within the parity bound, identical run to run)
  --workers N                  model copies encoding images in parallel: this one plus N-1 worker threads, each with
                               all the weights (N x the memory; default 1), each on --threads threads (default 1
                               with --workers): for throughput on many cores with RAM to spare
  --interpolate-pos-encoding   pixel values at a resolution other than the model's image_size (HF semantics)
  --auto-orient                apply EXIF orientation (Pillow's Image.open, and so LLaVA, does not, but turns TIFFs itself; images only)
  --backend B                  ${BACKEND_CHOICES.join(' | ')} (default: $LLAVA_VISION_BACKEND, else auto)
  --force                      overwrite --out even when it is not an output of llava-vision (another file, or a
                               safetensors file with no llava-vision producer); an input of the run never is
  --quiet                      no backend/progress messages (the demo checkpoint's warning still prints)
${DATASET_HELP}

Examples:
  llava-vision encode photo.jpg --out tokens.safetensors
  llava-vision encode --model llava-v1.5-7b --vision-tower clip-vit-large-patch14-336 a.jpg b.png --out tokens.safetensors
  llava-vision encode --model clip-vit-large-patch14-336 --save hidden_states,pooler_output img.png --out hs.safetensors
  llava-vision encode --model llava-v1.5-7b --pixel-values pv.safetensors --save features --out feats.safetensors
  llava-vision encode --model openai/clip-vit-large-patch14-336 --download img.png --out feats.safetensors
  llava-vision encode --model llava-v1.5-7b photos/ --dtype F16 --out-dir photos.tokens`;

export interface CliIo {
  out: (s: string) => void;
  err: (s: string) => void;
  /** The folder of the bundled demo checkpoint, used when --model is not given. */
  demoModel: string;
}

export async function runEncode(argv: string[], io: CliIo): Promise<number> {
  const { values: o, positionals: images } = parseOptions(argv, ENCODE_SPEC);
  if (o.help) {
    io.out(ENCODE_HELP + '\n');
    return 0;
  }
  if (o['out-dir'] !== undefined) {
    checkDatasetUsage(o, images);
    return runEncodeDataset(o['out-dir'], o, images, io);
  }
  usageCheck(() => rejectDatasetOptions(o));
  // Every option is checked before any file is touched.
  if (!o.out) throw new UsageError('encode needs --out FILE.safetensors');
  if (o['pixel-values'] && images.length > 0)
    throw new UsageError('give either image files or --pixel-values, not both');
  if (!o['pixel-values'] && images.length === 0)
    throw new UsageError('encode needs image files (or --pixel-values FILE)');
  const imageOnly = (['aspect', 'grid-pinpoints', 'auto-orient'] as const).filter((name) => o[name] !== undefined);
  if (o['pixel-values'] && imageOnly.length) {
    throw new UsageError(
      `--${imageOnly[0]} applies to image files: --pixel-values were preprocessed already (preprocess takes it)`,
    );
  }
  const settings = encodeSettings(o);
  const { save, aspect, mergeType, gridPinpoints, batchSize, workers } = settings;
  const modelDir = o.model ?? io.demoModel;
  // Files next: nothing is loaded or computed before the inputs exist and --out is safe to write.
  // --out first: when it names an existing file of another kind, the arguments are likely swapped.
  const inputFiles = [...(o['pixel-values'] ? [o['pixel-values']] : images), ...(o.projector ? [o.projector] : [])];
  const modelInputs = await modelInputFiles(modelDir, {
    visionTower: o['vision-tower'],
    projector: o.projector,
    projectorType: settings.projectorType,
  });
  prepareOutputFile(o.out, { inputs: [...inputFiles, ...modelInputs], force: o.force });
  checkInputFiles(inputFiles);
  // Not a progress message: --quiet keeps it, so that nobody mistakes the demo's output for a real model's.
  if (!o.model)
    io.err(
      `llava-vision: no --model given: using the bundled demo checkpoint ${modelDir} (generated weights, not a trained model)\n`,
    );

  const pixelFile: PixelValuesFile | null = o['pixel-values'] ? readPixelValuesFile(o['pixel-values']) : null;
  const pixelInput = pixelFile?.kind === 'batch' ? pixelFile : null;
  const preprocessed = pixelFile?.kind === 'images' ? pixelFile : null;
  // Unrecorded (a file not made by preprocess): several tiles can only be anyres; one tile needs no grid.
  const fileAspect =
    preprocessed && (preprocessed.aspect ?? (preprocessed.images.some((img) => img.shape[0] > 1) ? 'anyres' : null));
  const unsized = fileAspect === 'anyres' ? preprocessed!.images.find((img) => !img.imageSize) : undefined;
  if (unsized)
    throw new ConfigError(
      `${o['pixel-values']}: images.${unsized.index}.pixel_values are anyres tiles, and __metadata__.image_sizes lacks that image's size`,
    );

  const model = await LlavaVision.load(modelDir, loadOptions(o, settings, io.err));
  const bar = progressBar('encoding');
  try {
    const common = {
      batchSize,
      workers,
      interpolatePosEncoding: o['interpolate-pos-encoding'],
      onProgress: o.quiet ? undefined : bar,
    };
    let tensors;
    let failures: ImageFailure[] = [];
    const metadata: Record<string, string> = {
      producer: `llava-vision-tfjs ${packageVersion()}`,
      model_dir: path.resolve(model.modelDir),
      layout: model.checkpointKind,
      backend: model.backend,
      // What else changes the bits (docs/datasets.md, "numerics"): float32 sums in another order.
      threads: String(model.threads),
      gemm: model.gemm ?? 'none',
    };
    // The tower used, however it was found (--vision-tower, mm_vision_tower as a folder or from the HF cache);
    // null when it is the model folder itself (CLIP, llava-hf).
    const towerDir = path.resolve(model.tower.visionTowerName);
    const ownTower = towerDir !== path.resolve(model.modelDir);
    const options: Record<string, unknown> = {
      vision_tower: ownTower ? towerDir : null,
      vision_tower_name: ownTower ? (o['vision-tower'] ?? model.settings.visionTower) : null,
      projector: o.projector ?? null,
      projector_type: model.projectorConfig?.type ?? null,
      select_layer: model.settings.selectLayer,
      select_feature: model.settings.selectFeature,
      interpolate_pos_encoding: o['interpolate-pos-encoding'] ?? false,
      batch_size: batchSize,
    };
    if (pixelInput) {
      const outputs = save ?? [model.projectorConfig ? 'projected' : 'features'];
      tensors = await encodePixelValuesAsync(model, pixelInput.data, pixelInput.shape, { outputs, ...common });
      Object.assign(options, { save: outputs });
      metadata.source = path.resolve(o['pixel-values']!);
    } else if (preprocessed) {
      // Made by preprocess (per image, all its tiles): the same tensors encoding the images would give.
      const outputs = save ?? [model.projectorConfig ? 'merged' : 'features'];
      if (fileAspect !== null && fileAspect !== model.settings.aspect && !o.quiet) {
        io.err(
          `llava-vision: ${o['pixel-values']} was preprocessed with aspect ${fileAspect}; ${model.modelDir} uses ${model.settings.aspect} (preprocess --model gives the model's)\n`,
        );
      }
      const gridPinpoints = preprocessed.gridPinpoints ?? model.settings.gridPinpoints ?? undefined;
      tensors = await encodePreprocessed(model, preprocessed.images, {
        outputs,
        aspect: fileAspect ?? 'square',
        gridPinpoints,
        mergeType,
        ...common,
      });
      const effectiveMerge = mergeType ?? model.settings.mergeType;
      Object.assign(options, {
        save: outputs,
        aspect: fileAspect,
        merge: effectiveMerge,
        grid_pinpoints: gridPinpoints ?? null,
      });
      metadata.source = path.resolve(o['pixel-values']!);
      for (const key of ['sources', 'image_sizes', 'failed'])
        if (preprocessed.metadata[key] !== undefined) metadata[key] = preprocessed.metadata[key];
    } else {
      const outputs = save ?? [model.projectorConfig ? 'merged' : 'features'];
      const effectiveAspect = aspect ?? model.settings.aspect;
      const effectiveMerge = mergeType ?? model.settings.mergeType;
      const result = await encodeImages(model, images, {
        outputs,
        aspect,
        gridPinpoints,
        mergeType,
        autoOrient: o['auto-orient'],
        ...common,
      });
      tensors = result.tensors;
      failures = result.failures;
      Object.assign(options, {
        save: outputs,
        aspect: effectiveAspect,
        merge: effectiveMerge,
        grid_pinpoints: gridPinpoints ?? model.settings.gridPinpoints,
        auto_orient: o['auto-orient'] ?? false,
      });
      metadata.sources = JSON.stringify(images.map((f) => path.resolve(f)));
      metadata.image_sizes = JSON.stringify(result.sizes);
      if (failures.length)
        metadata.failed = JSON.stringify(failures.map((f) => ({ index: f.index, source: f.source, error: f.message })));
    }
    bar.end();
    if (!pixelFile && failures.length === images.length) {
      for (const f of failures) io.err(`llava-vision: ${f.message}\n`);
      io.err(`llava-vision: none of the ${images.length} image(s) could be encoded; nothing written to ${o.out}\n`);
      return 1;
    }
    metadata.options = JSON.stringify(options);
    writeSafetensors(o.out, tensors, metadata);
    const count = pixelInput
      ? pixelInput.shape[0]
      : preprocessed
        ? preprocessed.images.length
        : images.length - failures.length;
    if (!o.quiet)
      io.err(`llava-vision: wrote ${Object.keys(tensors).length} tensors for ${count} image(s) to ${o.out}\n`);
    for (const f of failures) io.err(`llava-vision: ${f.message}\n`);
    if (failures.length) {
      io.err(
        `llava-vision: ${failures.length} of ${images.length} image(s) failed (listed in the output's __metadata__.failed); the others were written\n`,
      );
      return 1;
    }
    return 0;
  } finally {
    model.dispose();
  }
}

/**
 * What of `encode --out-dir` the command line alone decides, checked as usage (exit 2, nothing done):
 * which options go together, and --part. The folder and the inputs are checked by runEncodeDataset.
 */
function checkDatasetUsage(o: EncodeArgs, images: string[]): void {
  if (o.out !== undefined) throw new UsageError('give either --out FILE or --out-dir DIR, not both');
  if (o['pixel-values'] !== undefined)
    throw new UsageError('--out-dir encodes images; --pixel-values works with --out FILE');
  if (o.force)
    throw new UsageError('--force has no use with --out-dir: a dataset folder is added to, never overwritten');
  if (images.length === 0 && o.inputs === undefined)
    throw new UsageError('encode --out-dir needs images: files, folders, or --inputs FILE');
  if (o.part !== undefined) usageCheck(() => parsePart(o.part!));
}
