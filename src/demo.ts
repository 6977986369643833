import * as path from 'path';
import { packageRoot } from './version';

/**
 * The bundled demo checkpoint (`weights/demo` of this package): an original-LLaVA folder shaped like
 * LLaVA-1.5 at toy size (CLIP tower in `clip_tower/`, `mlp2x_gelu` projector) with GENERATED
 * weights, not a trained model; two images in `images/`. For trying the API and the CLI offline.
 */
export function demoModelDir(): string {
  return path.join(packageRoot(), 'weights', 'demo');
}
