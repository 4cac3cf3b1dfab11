/**
 * Found by an attacker's review (issue 22, enclave log channel): every refused RPC writes an info line into the one ring the parent
 * pulls (enclave/src/app.ts `refusalLevel`: 'request refused' at info for POLICY_DENIED, KEY_DISABLED, …), and
 * the parent relays at most 200 lines a second (parent/src/enclave-link/logs.ts). A caller holding only a
 * keys:sign token (no per-token rate limit by default: parent/src/config.ts tokenDefaults) makes a refusal per
 * request, so it can push the enclave's warnings out of the ring before the parent pulls them: a warning that
 * the enclave cannot unseal, a KEY_INTEGRITY (a tampered record: someone with only the database), a signer
 * thread replaced, an untrusted clock. The ring has no room kept for warnings, so the operator loses exactly
 * the lines that matter, and sees only a count of dropped lines.
 *
 * Fixed: warnings and errors have a ring of their own (enclave/src/log-channel.ts).
 */
import pino from 'pino';
import { refusalLevel } from '../src/app';
import { LogChannel, MAX_LINES_PER_PULL } from '../src/log-channel';

describe('review: enclave log channel under a flood of refusals', () => {
  it('a warning written before a burst of ordinary refusals still reaches a parent that pulls as the puller does', () => {
    const channel = new LogChannel(); // main.ts: the default capacity
    const logger = pino({ level: 'info' }, channel.stream() as pino.DestinationStream);

    // The parent is keeping up: it has pulled everything so far.
    let after = channel.pull(0).nextSeq - 1;

    // A warning the operator must see (app.ts, the unseal canary's state change; or a refusal logged at warn).
    logger.warn({ unseal: 'failing', code: 'KMS_ACCESS_DENIED' }, 'this enclave cannot unseal');
    logger[refusalLevel('KEY_INTEGRITY') ?? 'info']({ method: 'keys.sign', code: 'KEY_INTEGRITY' }, 'request refused');

    // Within the parent's next pull interval (1 s), a token holder's burst of policy-refused signs: one line each.
    const level = refusalLevel('POLICY_DENIED');
    expect(level).toBe('info');
    for (let i = 0; i < 1200; i++) logger[level as 'info']({ method: 'keys.sign', code: 'POLICY_DENIED' }, 'request refused');

    // The parent pulls until it has caught up (more than the real puller, which takes 200 a second).
    const got: string[] = [];
    for (let n = 0; n < 100; n++) {
      const pulled = channel.pull(after, MAX_LINES_PER_PULL);
      if (pulled.lines.length === 0) break;
      for (const l of pulled.lines) if (l.level >= 40) got.push(`${l.msg}:${String(l.fields.code)}`);
      after = pulled.lines.at(-1)?.seq ?? after;
    }
    expect(channel.dropped).toBeGreaterThan(0); // lines were lost: the channel drops rather than blocks (fine)
    // ...but the warnings must not be among them.
    expect(got).toEqual(['this enclave cannot unseal:KMS_ACCESS_DENIED', 'request refused:KEY_INTEGRITY']);
  });
});
