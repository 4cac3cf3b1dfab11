// Compiles one solc standard-JSON input with solc-js from npm, in its own process: the 9 MB emscripten
// compiler is loaded only on a cache miss, and its process-wide hooks (an unhandledRejection listener) stay out
// of the jest worker. Reads {input, roots} on stdin, writes solc's standard-JSON output on stdout.
// Imports resolve only to files under `roots` (node_modules, for @openzeppelin/contracts); nothing is fetched.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const solc = require('solc');

function findImportsIn(roots) {
  return (importPath) => {
    for (const root of roots) {
      const file = path.resolve(root, importPath);
      if (!file.startsWith(root + path.sep) || !fs.existsSync(file)) continue;
      return { contents: fs.readFileSync(file, 'utf8') };
    }
    return { error: `${importPath} not found under ${roots.join(', ')}` };
  };
}

const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', () => {
  const { input, roots } = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  const output = solc.compile(JSON.stringify(input), { import: findImportsIn(roots.map((r) => path.resolve(r))) });
  process.stdout.write(output);
});
