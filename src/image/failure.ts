import { LlavaVisionError, oneLine } from '../errors';

/**
 * The one-line message of an image's failure, naming the image: decode errors already do; errors of
 * preprocessing (an absurd resize, ...) get the image's name in front. An error that is not ours (a
 * RangeError deep in a loop) is still this image's failure, not the job's.
 */
export function imageFailureMessage(e: unknown, source: string, decoded: boolean): string {
  const message = e instanceof Error ? e.message : String(e);
  const firstLine = oneLine(message.split('\n')[0], 2000);
  if (e instanceof LlavaVisionError && !decoded) return firstLine;
  const kind = e instanceof LlavaVisionError ? '' : `${e instanceof Error ? e.name : 'error'}: `;
  return `image ${source}: ${decoded ? 'preprocessing failed: ' : ''}${kind}${firstLine}`;
}
