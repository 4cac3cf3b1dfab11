/** Reading a program's JSON configuration file, with errors that say which file and what is wrong. */
import fs from 'node:fs';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/** The parsed JSON of `file`; ConfigError when it cannot be read or is not JSON. */
export function readJsonConfig(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read configuration ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
      cause: err,
    });
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`configuration ${file} is not valid JSON`, { cause: err });
  }
}
