/**
 * HF's slow `CLIPImageProcessor` with transformers 4.37.2 semantics, on 8-bit RGB images:
 * resize (Pillow, see resample.ts) -> center crop -> rescale -> normalize -> CHW float32.
 * The float32 output is bit-identical to HF's `pixel_values`.
 */
import * as fs from 'fs';
import * as path from 'path';
import { CLIPImageProcessorConfig, defaultPreprocessorConfig, parsePreprocessorConfig } from '../config/preprocessor';
import { ConfigError } from '../errors';
import { CONFIG_MAX_DEPTH } from '../config/limits';
import { parseJsonWithLimits } from '../io/json';
import { resizeImage } from './resample';
import { RgbImage, cropImage, newImage, pasteImage } from './types';

export interface PixelValues {
  /** 3 x height x width, channel-first (RGB). */
  pixelValues: Float32Array;
  height: number;
  width: number;
}

export class CLIPImageProcessor {
  readonly config: CLIPImageProcessorConfig;
  /** Per channel, the float32 result for each uint8 value (the map is elementwise). */
  private readonly lut: Float32Array[];

  /**
   * @param source the preprocessor_config.json it came from, named in errors
   */
  constructor(
    cfg: Partial<CLIPImageProcessorConfig> = {},
    readonly source = 'preprocessor config',
  ) {
    this.config = { ...defaultPreprocessorConfig(), ...cfg };
    const c = this.config;
    this.lut = [0, 1, 2].map((ch) => {
      const mean = Math.fround(c.imageMean[ch]);
      const std = Math.fround(c.imageStd[ch]);
      const t = new Float32Array(256);
      for (let v = 0; v < 256; v++) {
        // rescale: uint8 * python float in float64, then .astype(float32)
        let x = c.doRescale ? Math.fround(v * c.rescaleFactor) : v;
        // normalize: (x - float32(mean)) / float32(std), every step in float32
        if (c.doNormalize) x = Math.fround(Math.fround(x - mean) / std);
        t[v] = x;
      }
      return t;
    });
  }

  /** Reads preprocessor_config.json (a file, or a folder holding one). */
  static fromFile(fileOrDir: string): CLIPImageProcessor {
    let file = fileOrDir;
    try {
      if (fs.statSync(fileOrDir).isDirectory()) file = path.join(fileOrDir, 'preprocessor_config.json');
    } catch {
      throw new ConfigError(`${fileOrDir}: no such file or folder`);
    }
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      throw new ConfigError(`${file}: cannot read preprocessor config: ${(e as Error).message}`);
    }
    const json = parseJsonWithLimits(
      text,
      { maxDepth: CONFIG_MAX_DEPTH },
      (problem) => new ConfigError(`${file}: preprocessor config ${problem}`),
    );
    return new CLIPImageProcessor(parsePreprocessorConfig(json, file), file);
  }

  /** Target (width, height) of `resize` for an input of the given size. */
  resizeOutputSize(width: number, height: number): [number, number] {
    const size = this.config.size;
    if ('height' in size) return [size.width, size.height];
    // get_resize_output_image_size: the long side is TRUNCATED (int(S * long / short)).
    const S = size.shortestEdge;
    if (width <= height) return [S, Math.trunc((S * height) / width)];
    return [Math.trunc((S * width) / height), S];
  }

  /** HF `resize`: Pillow resize to `size` with `resample` (identity when the size already matches). */
  resize(img: RgbImage): RgbImage {
    const [w, h] = this.resizeOutputSize(img.width, img.height);
    return resizeImage(img, w, h, this.config.resample);
  }

  /**
   * HF `center_crop` (4.37.2): offsets floor((old - new) / 2). An image smaller than the crop is
   * first zero-padded to max(old, new) with the image at floor((new - old) / 2); for an odd padding
   * amount that gives a result one pixel short of the crop size (newer transformers use ceil).
   */
  centerCrop(img: RgbImage): RgbImage {
    const { height: ch, width: cw } = this.config.cropSize;
    const { width: ow, height: oh } = img;
    let top = Math.floor((oh - ch) / 2);
    let left = Math.floor((ow - cw) / 2);
    if (top >= 0 && left >= 0 && top + ch <= oh && left + cw <= ow) {
      return cropImage(img, left, top, left + cw, top + ch);
    }
    const nh = Math.max(ch, oh);
    const nw = Math.max(cw, ow);
    const padded = newImage(nw, nh);
    const topPad = Math.floor((nh - oh) / 2);
    const leftPad = Math.floor((nw - ow) / 2);
    pasteImage(padded, img, leftPad, topPad);
    const bottom = top + ch + topPad;
    const right = left + cw + leftPad;
    top += topPad;
    left += leftPad;
    return cropImage(padded, Math.max(0, left), Math.max(0, top), Math.min(nw, right), Math.min(nh, bottom));
  }

  /** resize -> center crop -> rescale/normalize, as enabled in the config; returns CHW float32. */
  preprocess(img: RgbImage): PixelValues {
    const c = this.config;
    if (c.doResize) img = this.resize(img);
    if (c.doCenterCrop) img = this.centerCrop(img);
    const { width, height, data } = img;
    const plane = width * height;
    const out = new Float32Array(3 * plane);
    const [l0, l1, l2] = this.lut;
    for (let i = 0, p = 0; i < plane; i++, p += 3) {
      out[i] = l0[data[p]];
      out[plane + i] = l1[data[p + 1]];
      out[2 * plane + i] = l2[data[p + 2]];
    }
    return { pixelValues: out, height, width };
  }
}
