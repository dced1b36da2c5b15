import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'coverage/**', 'reports/**', '.stryker-*/**', 'bin/**', '**/*.d.ts'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  // Layers reach each other through their indexes only, so that what a layer offers is named in
  // one place and the public entry points stay curated (CONTRIBUTING.md, "Layout").
  {
    files: ['libs/busrt/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^(\\.\\./)+(protocol|broker|server|client|rpc|transport|monitor|federation)/(?!index\\.js$)',
              message: 'Import another folder of the core through its index.js.',
            },
            { regex: '^(@nestjs/|rxjs|reflect-metadata)', message: 'The core never needs Nest.' },
            {
              regex: '^(\\.\\./)+nestjs/|^#busrt/',
              message: 'The core never imports the Nest layer or the internal aliases.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['libs/nestjs/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^(\\.\\./)+busrt/(?!internal\\.js$)',
              message: 'The Nest layer imports the core through libs/busrt/internal.js only.',
            },
            {
              regex: '^#busrt/',
              message: 'Library code uses relative imports, so its declaration files stay self-contained.',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['src/**/*.ts', 'test/**/*.ts', 'bench/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^(\\.\\./)+libs/',
              message: "Use the internal indexes '#busrt/core' and '#busrt/nestjs' instead of paths into libs/.",
            },
          ],
        },
      ],
    },
  },
  {
    files: ['sample/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^#busrt/|^(\\.\\./)+libs/',
              message:
                "Samples use the public entry points 'busrt-nestjs' and 'busrt-nestjs/core' only, as an app would.",
            },
          ],
        },
      ],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly' } },
  },
  // CommonJS where a tool requires it (the jest environment of mutation runs).
  {
    files: ['**/*.cjs'],
    languageOptions: {
      sourceType: 'commonjs',
      globals: { process: 'readonly', require: 'readonly', module: 'writable' },
    },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  // Run in browsers: the sample page, and the stand-ins for Node's globals in the browser build.
  {
    files: ['sample/browser/*.js', 'scripts/browser/*.mjs'],
    languageOptions: {
      globals: {
        document: 'readonly',
        location: 'readonly',
        crypto: 'readonly',
        URLSearchParams: 'readonly',
        TextDecoder: 'readonly',
        MessageChannel: 'readonly',
      },
    },
  },
  {
    files: ['sample/**/*.js'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            { regex: '^(?!busrt-nestjs/browser$)', message: 'The sample page imports busrt-nestjs/browser only.' },
          ],
        },
      ],
    },
  },
);
