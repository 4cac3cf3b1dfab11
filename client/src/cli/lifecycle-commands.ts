/**
 * `nks keys successor|activate|cancel|history` (docs/LIFECYCLE.md): a token project's key replaced by a
 * successor, which is activated (the key retired) once the owner change is done on chain, or cancelled.
 */
import type { Key, KeyHistoryEntry } from '../sdk';
import { clientFor, connectionOptions, parse } from './context';
import { fields, print } from './output';

export type LifecycleSubcommand = 'successor' | 'activate' | 'cancel' | 'history';

const historyLine = (k: KeyHistoryEntry) =>
  [
    k.keyId,
    k.address,
    (k.state ?? 'no record').padEnd(9),
    k.createdAt,
    k.disabled ? '(disabled)' : '',
    k.predecessor ? `succeeds ${k.predecessor}` : '',
  ]
    .filter(Boolean)
    .join('  ');

const printKey = (key: Key, json: boolean, said: string) =>
  print(
    key,
    json,
    () =>
      `${said}\n${fields([
        ['state', key.state],
        ['address', key.address],
      ])}`,
  );

export async function lifecycleCommand(sub: LifecycleSubcommand, args: string[]): Promise<number> {
  if (sub === 'successor') {
    const { values, positionals } = parse(args, { ...connectionOptions, attest: { type: 'boolean' } }, ['keyId']);
    const keyId = positionals[0] as string;
    const key = await clientFor(values).successor(keyId, values.attest ? { attest: true } : {});
    printKey(
      key,
      values.json ?? false,
      `${key.keyId} is the pending successor of ${keyId}: it signs now; activate it once the owner change is done, or cancel it`,
    );
    return 0;
  }
  const { values, positionals } = parse(args, connectionOptions, ['keyId']);
  const client = clientFor(values);
  const keyId = positionals[0] as string;
  if (sub === 'history') {
    const keys = await client.history(keyId);
    print({ keys }, values.json ?? false, () => [`${keys.length} key(s), oldest first`, ...keys.map(historyLine)].join('\n'));
  } else if (sub === 'activate') {
    const key = await client.activate(keyId);
    printKey(key, values.json ?? false, `${key.keyId} is active; ${key.predecessor ?? 'its predecessor'} is retired and never signs again`);
  } else {
    const key = await client.cancel(keyId);
    printKey(key, values.json ?? false, `${key.keyId} is cancelled and never signs again`);
  }
  return 0;
}
