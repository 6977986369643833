import * as fs from 'fs';
import * as path from 'path';

let root: string | null = null;

/** This package's folder (holding package.json), found from the source or the compiled file. */
export function packageRoot(): string {
  if (root) return root;
  let dir = __dirname;
  for (;;) {
    const file = path.join(dir, 'package.json');
    if (
      fs.existsSync(file) &&
      (JSON.parse(fs.readFileSync(file, 'utf8')) as { name?: unknown }).name === 'llava-vision-tfjs'
    )
      return (root = dir);
    if (path.dirname(dir) === dir) throw new Error(`package.json of llava-vision-tfjs not found above ${__dirname}`);
    dir = path.dirname(dir);
  }
}

/** This package's version. */
export function packageVersion(): string {
  return String(
    (JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version?: unknown }).version,
  );
}
