/** The release number is written in two places that cannot import each other; they must agree. */
import fs from 'node:fs';
import path from 'node:path';
import { RELEASE_VERSION } from '@nks/shared/release';

it('reports the release package.json and the lockfile name', () => {
  const read = (f: string) => JSON.parse(fs.readFileSync(path.join(__dirname, '..', f), 'utf8')) as { version: string };
  expect([read('package.json').version, read('package-lock.json').version]).toEqual([RELEASE_VERSION, RELEASE_VERSION]);
});
