import * as fs from 'fs';
import * as path from 'path';

/** This package's version, found by walking up from the compiled or source file to package.json. */
export function packageVersion(): string {
  let dir = __dirname;
  for (let i = 0; i < 5; i++) {
    const file = path.join(dir, 'package.json');
    if (fs.existsSync(file)) {
      const json = JSON.parse(fs.readFileSync(file, 'utf8'));
      if (json.name === 'llava-vision-tfjs') return String(json.version);
    }
    dir = path.dirname(dir);
  }
  return 'unknown';
}
