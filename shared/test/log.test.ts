import { KeystoreError } from '../src/errors';
import { captureLogger as capture } from './helpers';

type Line = { err?: Record<string, unknown> };

describe('logger', () => {
  it("logs a wrapped error's whole cause chain: every message and every stack", () => {
    const { logger, lines } = capture();
    const network = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:443'), { code: 'ECONNREFUSED' });
    const sdk = new Error('TimeoutError: socket hang up', { cause: network });
    const wrapped = new KeystoreError('KMS_UNAVAILABLE', 'KMS could not be reached: TimeoutError', { cause: sdk });
    logger.warn({ err: wrapped, outcome: 'KMS_UNAVAILABLE' }, 'KMS decrypt refused');
    const [line] = lines() as Line[];
    expect(line?.err).toMatchObject({
      type: 'KeystoreError',
      code: 'KMS_UNAVAILABLE',
      retryable: true,
      message: 'KMS could not be reached: TimeoutError: TimeoutError: socket hang up: connect ECONNREFUSED 127.0.0.1:443',
    });
    const stack = line?.err?.stack as string;
    expect(stack.match(/caused by: /g)).toHaveLength(2);
    expect(stack).toContain('caused by: Error: connect ECONNREFUSED 127.0.0.1:443');
  });

  it('an error logged on its own (not under err) is serialized the same way', () => {
    const { logger, lines } = capture();
    logger.error(new Error('outer', { cause: new Error('inner') }), 'failed');
    expect((lines()[0] as Line).err).toMatchObject({ message: 'outer: inner' });
  });

  it("does not copy a cause's own fields into the line: a wrapped library error's data stays out", () => {
    const { logger, text: logged } = capture();
    const secretish = Buffer.from('00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff', 'hex');
    const cause = Object.assign(new Error('library failure'), {
      key: secretish,
      keyHex: secretish.toString('hex'),
      $response: { body: 'raw-response-body' },
    });
    logger.warn({ err: new KeystoreError('INTERNAL', 'internal error', { cause }) }, 'handler failed');
    const text = logged();
    expect(text).toContain('internal error: library failure');
    for (const leaked of [secretish.toString('hex'), secretish.toString('base64'), 'raw-response-body', '"key"'])
      expect([leaked, text.includes(leaked)]).toEqual([leaked, false]);
  });

  it('still redacts credential paths', () => {
    const { logger, lines } = capture();
    logger.info(
      {
        token: 'nks_secret',
        req: { headers: { authorization: 'Bearer nks_secret' } },
        params: { blob: 'AAAA', jwt: 'eyJ.x.y' },
        body: { jwt_token: 'eyJ.x.y' },
      },
      'request',
    );
    expect(lines()[0]).toMatchObject({
      token: '[redacted]',
      req: { headers: { authorization: '[redacted]' } },
      params: { blob: '[redacted]', jwt: '[redacted]' },
      body: { jwt_token: '[redacted]' },
    });
  });
});
