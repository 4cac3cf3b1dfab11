// Jest transformer: TypeScript and ESM-only packages (the noble libraries) to CommonJS with esbuild,
// the same compiler that produces the shipped bundles.
const { transformSync } = require('esbuild');

module.exports = {
  process(source, filename) {
    const { code, map } = transformSync(source, {
      loader: /\.[cm]?ts$/.test(filename) ? 'ts' : 'js',
      format: 'cjs',
      target: 'node20',
      sourcemap: 'external',
      sourcefile: filename,
      logLevel: 'silent',
    });
    return { code, map };
  },
};
