/** Image side: decoding and Pillow / HF / LLaVA-exact preprocessing on uint8 HWC buffers (no tfjs). */
export type { DecodedImage, RgbImage } from './types';
export { newImage, pasteImage, cropImage } from './types';
export type { DecodeOptions } from './decode';
export { decodeImage } from './decode';
export { resizeImage, Resample, RESAMPLE_NAMES } from './resample';
export type { PixelValues } from './processor';
export { CLIPImageProcessor } from './processor';
export type { CLIPImageProcessorConfig, ResizeSpec } from '../config/preprocessor';
export type { AspectMode, Pinpoints, ProcessedImage, ProcessImagesOptions } from './llava';
export {
  aspectModeFromConfig,
  parseGridPinpoints,
  meanBackground,
  expand2square,
  selectBestResolution,
  resizeAndPadImage,
  divideToPatches,
  getAnyresImageGridShape,
  anyresImages,
  processImages,
} from './llava';
