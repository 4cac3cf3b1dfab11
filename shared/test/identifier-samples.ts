/**
 * Well-formed and malformed identifiers, shared by the tests that check every place an identifier is
 * validated (blob decoder, zod schemas, RPC params, both configurations) agrees with shared/src/identifiers.ts.
 */
const ARN = 'arn:aws:kms:us-east-1:111122223333:key/11111111-2222-3333-4444-555555555555';
const ADDRESS = '0x70997970C51812dc3A010C7d01b50e0d17dc79C8';

export const IDENTIFIER_SAMPLES = {
  kmsKeyArn: {
    good: [ARN, 'arn:aws-cn:kms:cn-north-1:111122223333:key/abc', 'arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/a-b'],
    bad: [
      '',
      `x${ARN}`,
      `${ARN}/x`,
      `${ARN}!`,
      `${ARN}\n`,
      'arn:aws:kms:us-east-1:11112222333:key/abc',
      'arn:aws:s3:us-east-1:111122223333:key/abc',
      'arn:aws1:kms:us-east-1:111122223333:key/abc',
      'arn:aws:kms:us-east-1:111122223333:alias/abc',
      'arn:aws:s3:::bucket',
    ],
  },
  keyId: {
    good: ['a', 'A-z_0', 'k_1-x', 'k'.repeat(64)],
    bad: ['', 'k'.repeat(65), '!k1', 'k1!', 'k 1', '../etc', 'k/1', 'k.1', 'k1\n'],
  },
  address: {
    good: [ADDRESS, ADDRESS.toLowerCase(), `0x${'0'.repeat(40)}`],
    bad: [
      '',
      ADDRESS.slice(2),
      `x${ADDRESS}`,
      `${ADDRESS}0`,
      `${ADDRESS}\n`,
      ADDRESS.slice(0, -1),
      `0X${ADDRESS.slice(2)}`,
      `0x${'g'.repeat(40)}`,
    ],
  },
  projectId: {
    good: ['default', `p_${'a'.repeat(16)}`, `p_${'Z9_-'.repeat(10)}abc`, 'p_0123456789abcdef'],
    bad: [
      '',
      'Default',
      'default ',
      'p_',
      `p_${'a'.repeat(15)}`,
      `p_${'a'.repeat(44)}`,
      `q_${'a'.repeat(16)}`,
      `p_${'a'.repeat(15)}!`,
      `xdefault`,
      `p_${'a'.repeat(16)}\n`,
    ],
  },
  identityPublicKey: {
    good: [
      `0x${'ab'.repeat(32)}`,
      `0x${'0'.repeat(64)}`.replace(/0$/, '1'),
      `0x${'d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a'}`,
    ],
    bad: [
      '',
      `0x${'AB'.repeat(32)}`,
      `0x${'ab'.repeat(31)}`,
      `0x${'ab'.repeat(33)}`,
      'ab'.repeat(32),
      `0X${'ab'.repeat(32)}`,
      `0x${'ab'.repeat(32)}\n`,
      `0x${'gg'.repeat(32)}`,
    ],
  },
} as const;
