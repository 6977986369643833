/**
 * README.md's runnable snippets: each fenced block right after a `<!-- readme-test: NAME -->` line.
 * test/readme.test.ts runs them against this checkout (offline); tools/package_test.ts runs them in
 * fresh apps that install the packed tarball. Shell blocks run line by line with bash; TypeScript
 * blocks are type-checked (strict, skipLibCheck, as the README tells TypeScript users) and run.
 * docs/ marks its runnable blocks `<!-- docs-test: NAME -->` (tools/slurm_test.ts runs docs/datasets.md's).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as ts from 'typescript';

export interface Snippet {
  name: string;
  lang: string;
  code: string;
  /** 1-based line of the opening fence in the document. */
  line: number;
}

/** The document and the marker of its runnable blocks. */
export interface SnippetSource {
  file: string;
  marker: string;
}

export const README: SnippetSource = { file: 'README.md', marker: 'readme-test' };

export function readmeSnippets(markdown: string, source: SnippetSource = README): Snippet[] {
  const marker = new RegExp(`^<!-- ${source.marker}: ([\\w-]+) -->$`);
  const lines = markdown.split('\n');
  const snippets: Snippet[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = marker.exec(lines[i].trim());
    if (!m) continue;
    const fence = /^```(\w+)$/.exec(lines[i + 1] ?? '');
    if (!fence) throw new Error(`${source.file}:${i + 1}: "${lines[i]}" must be followed by a fenced code block`);
    const end = lines.indexOf('```', i + 2);
    if (end < 0) throw new Error(`${source.file}:${i + 2}: unterminated code block`);
    snippets.push({ name: m[1], lang: fence[1], code: lines.slice(i + 2, end).join('\n') + '\n', line: i + 2 });
  }
  return snippets;
}

export function snippetNamed(snippets: Snippet[], name: string, source: SnippetSource = README): Snippet {
  const s = snippets.find((x) => x.name === name);
  if (!s) throw new Error(`${source.file} has no "<!-- ${source.marker}: ${name} -->" block`);
  return s;
}

export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a shell snippet's commands (comments and blank lines skipped) with bash -e, in `cwd`. */
export function runShell(code: string, cwd: string, env: NodeJS.ProcessEnv = process.env): RunResult {
  const r = spawnSync('bash', ['-e', '-c', code], { cwd, env, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * Type errors of a TypeScript snippet file (imports resolved from its folder) with the README's settings;
 * `typeRoots`: where @types/node is (default: the file's node_modules/@types); `types`: the global
 * declarations (default node; a Jest suite adds jest).
 */
export function typeErrors(
  file: string,
  module: 'commonjs' | 'esm' = 'commonjs',
  typeRoots?: string[],
  types = ['node'],
): string[] {
  const options: ts.CompilerOptions = {
    noEmit: true,
    strict: true,
    skipLibCheck: true,
    esModuleInterop: true,
    target: ts.ScriptTarget.ES2022,
    module: module === 'esm' ? ts.ModuleKind.Node16 : ts.ModuleKind.CommonJS,
    moduleResolution: module === 'esm' ? ts.ModuleResolutionKind.Node16 : ts.ModuleResolutionKind.Node10,
    types,
    typeRoots: typeRoots ?? [path.join(path.dirname(file), 'node_modules', '@types')],
  };
  const program = ts.createProgram([file], options);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const text = ts.flattenDiagnosticMessageText(d.messageText, '\n');
    if (!d.file || d.start === undefined) return text;
    const { line, character } = d.file.getLineAndCharacterOfPosition(d.start);
    return `${path.basename(d.file.fileName)}(${line + 1},${character + 1}): ${text}`;
  });
}

/** Writes a TypeScript snippet as `<base>.ts` and its JavaScript (CommonJS `.js` or ESM `.mjs`) in `dir`; returns both paths. */
export function writeTsSnippet(
  code: string,
  dir: string,
  base: string,
  module: 'commonjs' | 'esm' = 'commonjs',
): { ts: string; js: string } {
  const tsFile = path.join(dir, module === 'esm' ? `${base}.mts` : `${base}.ts`);
  const jsFile = path.join(dir, module === 'esm' ? `${base}.mjs` : `${base}.js`);
  fs.writeFileSync(tsFile, code);
  const out = ts.transpileModule(code, {
    compilerOptions: {
      target: ts.ScriptTarget.ES2022,
      module: module === 'esm' ? ts.ModuleKind.ES2022 : ts.ModuleKind.CommonJS,
      esModuleInterop: true,
    },
  });
  fs.writeFileSync(jsFile, out.outputText);
  return { ts: tsFile, js: jsFile };
}

/** The tiny LLaVA-1.5 fixture the README's model names stand for: sharded safetensors, `mm_projector.bin`, its CLIP tower. */
const README_FIXTURE = path.join('test', 'fixtures', 'cases', 's336_llava15_pad_mlp2x');

/**
 * Lays out in `app` what the README's CLI examples name — `llava-v1.5-7b/` (original LLaVA, sharded),
 * `clip-vit-large-patch14-336/` (its CLIP tower), `mm_projector.bin` (the pretrain stage's projector),
 * `photo.jpg` and a `photos/` folder (one image in a subfolder) — from the tiny LLaVA-1.5 fixture of
 * this checkout (`root`): the real layouts at toy size, so the commands run there exactly as printed.
 * Returns the CLIP tower's folder (what a hub repo of it serves).
 */
export function stageReadmeModels(app: string, root: string): string {
  const fixture = path.join(root, README_FIXTURE);
  const images = path.join(root, 'test', 'fixtures', 'images');
  const clip = path.join(app, 'clip-vit-large-patch14-336');
  fs.cpSync(path.join(fixture, 'llava'), path.join(app, 'llava-v1.5-7b'), { recursive: true });
  fs.cpSync(path.join(fixture, 'clip_tower'), clip, { recursive: true });
  fs.copyFileSync(path.join(fixture, 'llava', 'mm_projector.bin'), path.join(app, 'mm_projector.bin'));
  fs.copyFileSync(path.join(images, 'rocket.jpg'), path.join(app, 'photo.jpg'));
  fs.mkdirSync(path.join(app, 'photos', 'more'), { recursive: true });
  fs.copyFileSync(path.join(images, 'chelsea.png'), path.join(app, 'photos', 'chelsea.png'));
  fs.copyFileSync(path.join(images, 'camera.png'), path.join(app, 'photos', 'camera.png'));
  fs.copyFileSync(path.join(images, 'rocket.jpg'), path.join(app, 'photos', 'more', 'rocket.jpg'));
  return clip;
}

/**
 * The rows of the first Markdown table after the first line that starts with `anchor` (a heading, the
 * sentence that introduces the table, or its header row), header row first; cells trimmed, `\|` unescaped.
 */
export function tableAfter(markdown: string, anchor: string): string[][] {
  const lines = markdown.split('\n');
  const start = lines.findIndex((l) => l.startsWith(anchor));
  if (start < 0) throw new Error(`no line starting with ${JSON.stringify(anchor)}`);
  let i = lines[start].startsWith('|') ? start : start + 1; // the anchor may be the header row itself
  while (i < lines.length && !lines[i].startsWith('|')) {
    if (/^#{1,3} /.test(lines[i])) throw new Error(`no table after ${JSON.stringify(anchor)} before ${lines[i]}`);
    i++;
  }
  const rows: string[][] = [];
  for (; i < lines.length && lines[i].startsWith('|'); i++) {
    if (/^\|(\s*:?-+:?\s*\|)+$/.test(lines[i])) continue; // the delimiter row
    rows.push(
      lines[i]
        .slice(1, -1)
        .split(/(?<!\\)\|/)
        .map((c) => c.trim().replace(/\\\|/g, '|')),
    );
  }
  return rows;
}
