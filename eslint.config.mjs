// Type-aware lint for the TypeScript tree: what the compiler does not catch. A promise is awaited, returned,
// handled or explicitly `void`ed; no code is left unused; no assertion or `await` is a no-op. Formatting is
// Prettier's job (`npm run format`), not this file's.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      'dist/**',
      'node_modules/**',
      'reports/**',
      'coverage/**',
      '.stryker-tmp/**',
      '.dev/**',
      '.bench/**',
      'enclave/native/build/**',
    ],
  },
  {
    files: ['**/*.ts'],
    extends: [tseslint.configs.base],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/only-throw-error': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      '@typescript-eslint/no-unused-expressions': 'error',
      '@typescript-eslint/no-unnecessary-type-assertion': 'error',
      '@typescript-eslint/no-for-in-array': 'error',
      'no-unreachable': 'error',
      'no-useless-assignment': 'error',
      // A `let` read by a closure before its one assignment (a server made after the handlers that report on it).
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
    },
  },
);
