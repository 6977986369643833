// ESLint (flat config): typescript-eslint's recommended rules plus the type-checked ones, which catch
// floating promises, unsafe `any` and misused awaits. `npm run lint`; CI runs it before the tests.
'use strict';
const js = require('@eslint/js');
const tseslint = require('typescript-eslint');

module.exports = tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'coverage/', 'weights/', 'test/fixtures/', '.cache/', '.scratch/'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: __dirname } },
    rules: {
      // A leading underscore marks a parameter an override must take but does not use (tfjs's
      // `build(_inputShape)`), and `{ log: _log, ...rest }` drops a field on purpose.
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', ignoreRestSiblings: true },
      ],
      // An async function without an await is how a promise-returning contract is met with work that is
      // synchronous today (the dataset reader's async iterators, a worker pool's task source); the
      // mistakes around promises are the floating / misused promise and await-thenable rules' to catch.
      '@typescript-eslint/require-await': 'off',
      // `import x = require('x')` is TypeScript's import of a module object itself (what a jest spy must
      // patch, and how CommonJS-only packages are typed); a bare require() stays an error.
      '@typescript-eslint/no-require-imports': ['error', { allowAsImport: true }],
    },
  },
  // A spread into a call (`Math.max(...xs)`, `out.push(...xs)`) passes every element as an argument, and
  // past ~100k elements V8 throws "Maximum call stack size exceeded": the readers of untrusted files and
  // what renders their contents (a valid file can hold 200k tensors) loop instead.
  {
    files: ['src/io/**/*.ts', 'src/loading/**/*.ts', 'src/cli/inspect.ts', 'src/model/weights.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        {
          selector: 'CallExpression > SpreadElement, NewExpression > SpreadElement',
          message: 'no spread into a call here: its length is bounded by the stack (loop instead)',
        },
        {
          selector: "CallExpression[callee.property.name='apply']",
          message: 'no .apply here: its arguments are bounded by the stack (loop instead)',
        },
      ],
    },
  },
  // Optional peers (a tfjs backend registers itself as it loads) and native binaries are loaded when
  // needed, through this one function.
  { files: ['src/load_module.ts'], rules: { '@typescript-eslint/no-require-imports': 'off' } },
  // The matchers' type augmentations must repeat the augmented declarations as they are: namespace jest,
  // the type parameters <R, T> (T unused), and no members of their own (they come from the interface extended).
  {
    files: ['src/testing/index.ts'],
    rules: {
      '@typescript-eslint/no-namespace': 'off',
      '@typescript-eslint/no-empty-object-type': 'off',
      '@typescript-eslint/no-unused-vars': 'off',
    },
  },
  { files: ['**/*.js'], ...tseslint.configs.disableTypeChecked },
  {
    files: ['**/*.js'],
    languageOptions: {
      sourceType: 'commonjs',
      globals: {
        require: 'readonly',
        module: 'writable',
        process: 'readonly',
        __dirname: 'readonly',
        console: 'readonly',
      },
    },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
