// @ts-check
// What the TrueWallet SDK's JWT signer does, against `npm run dev -- --idp` (README.md beside this file):
// a user's JWT from the dev identity provider, then get-address, a signature over a 32-byte hash, one over a
// text message and one over typed data — over HTTPS to the enclave, whose TLS ends inside it — each checked here
// with ethers and viem.
//
//   node examples/truewallet/truewallet.mjs [--dir .dev] [--user alice]
//        [--signer-url URL --token-url URL [--ca PEM] [--signer-ca PEM]]
//
// Exit code 0 when every signature recovers to the user's address, 1 otherwise.
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { getBytes, hexlify, randomBytes, verifyMessage, verifyTypedData } from 'ethers';
import { Agent, fetch } from 'undici';
import { recoverMessageAddress, recoverTypedDataAddress } from 'viem';

const { values } = parseArgs({
  options: {
    dir: { type: 'string', default: process.env.NKS_DEV_DIR ?? '.dev' },
    user: { type: 'string', default: 'alice' },
    'signer-url': { type: 'string' },
    'token-url': { type: 'string' },
    ca: { type: 'string' },
    'signer-ca': { type: 'string' },
  },
  strict: true,
});

/**
 * Where to go: the dev stack's own record of its signer URL, the dev CA of the enclave's certificate and its IdP
 * (dev.json), or the options (`--ca`: the token endpoint's CA; `--signer-ca`: the signer's, when neither is in
 * Node's store).
 */
function settings() {
  if (values['signer-url'] && values['token-url']) {
    return {
      signerUrl: values['signer-url'],
      tokenUrl: values['token-url'],
      ca: values.ca ? fs.readFileSync(values.ca, 'utf8') : undefined,
      signerCa: values['signer-ca'] ? fs.readFileSync(values['signer-ca'], 'utf8') : undefined,
    };
  }
  const file = path.join(values.dir ?? '.dev', 'dev.json');
  if (!fs.existsSync(file))
    throw new Error(`${file} not found: start the stack with \`npm run dev -- --idp\` first (or pass --signer-url and --token-url)`);
  const dev = JSON.parse(fs.readFileSync(file, 'utf8'));
  if (!dev.idp) throw new Error('the dev stack runs without its identity provider: restart it with `npm run dev -- --idp`');
  return {
    signerUrl: dev.idp.signerUrl,
    tokenUrl: dev.idp.tokenUrl,
    ca: fs.readFileSync(dev.idp.caPem, 'utf8'),
    signerCa: dev.wallets?.caPem ? fs.readFileSync(dev.wallets.caPem, 'utf8') : undefined,
  };
}

/** The user's JWT: in a real app, the ID token of its own login; here, the dev IdP's token endpoint. */
function fetchJwt(tokenUrl, user, ca) {
  const url = new URL(tokenUrl);
  url.searchParams.set('sub', user);
  return new Promise((resolve, reject) => {
    https
      .get(url, { ca }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () =>
          res.statusCode === 200 ? resolve(JSON.parse(body).token) : reject(new Error(`token endpoint: HTTP ${res.statusCode} ${body}`)),
        );
      })
      .on('error', reject);
  });
}

/** An error as the SDK reports it: 400's `detail` is an object of field → reasons, joined; the others a string. */
class SignerError extends Error {
  constructor(status, detail, retryAfter) {
    super(`HTTP ${status}: ${typeof detail === 'object' && detail !== null ? Object.values(detail).flat().join('; ') : String(detail)}`);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/**
 * The JWT signer: `{origin}/v1/{projectKey}/wallets/…`, from the first two path segments of the URL it is given,
 * no bearer token (the JWT is the authorization), `getJwt` called for every request (a fresh token each time).
 * `ca`: the CA its server's certificate chains to, when it is not one Node trusts (the dev stack's CA).
 */
class JwtSigner {
  constructor(url, getJwt, ca) {
    const u = new URL(url);
    const [v1, projectKey] = u.pathname.split('/').filter(Boolean);
    if (v1 !== 'v1' || !projectKey) throw new Error(`expected a signer URL like https://host/v1/pk_…, not ${url}`);
    this.base = `${u.origin}/${v1}/${projectKey}/wallets`;
    this.getJwt = getJwt;
    this.dispatcher = new Agent(ca ? { connect: { ca } } : {});
  }
  async post(route, body) {
    const res = await fetch(`${this.base}/${route}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...body, jwt_token: await this.getJwt() }),
      dispatcher: this.dispatcher,
    });
    const answer = await res.json();
    if (!res.ok) throw new SignerError(res.status, answer.detail, res.headers.get('retry-after'));
    return answer;
  }
  async getAddress() {
    return (await this.post('get-address', {})).address;
  }
  /** A 32-byte hash (as ethers `signMessage(getBytes(hash))`) or a text message, EIP-191. */
  async signMessage(message, messageType) {
    return (await this.post('sign', { message, message_type: messageType, wallet_type: 'evm' })).signature;
  }
  async signTypedData(typedData) {
    return this.post('sign-request', { request: { type: 'typedData', typedData } });
  }
}

const typedData = {
  domain: { name: 'Ether Mail', version: '1', chainId: 1, verifyingContract: '0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC' },
  types: {
    Person: [
      { name: 'name', type: 'string' },
      { name: 'wallet', type: 'address' },
    ],
    Mail: [
      { name: 'from', type: 'Person' },
      { name: 'to', type: 'Person' },
      { name: 'contents', type: 'string' },
    ],
  },
  primaryType: 'Mail',
  message: {
    from: { name: 'Cow', wallet: '0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826' },
    to: { name: 'Bob', wallet: '0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB' },
    contents: 'Hello, Bob!',
  },
};

async function main() {
  const { signerUrl, tokenUrl, ca, signerCa } = settings();
  const user = values.user ?? 'alice';
  const signer = new JwtSigner(signerUrl, () => fetchJwt(tokenUrl, user, ca), signerCa);
  console.log(`signer ${signer.base}, user ${user}`);

  const address = await signer.getAddress();
  console.log(`address          ${address}`);

  const hash = hexlify(randomBytes(32));
  const hashSignature = await signer.signMessage(hash, 'hash');
  const text = `hello from ${user}`;
  const textSignature = await signer.signMessage(text, 'message');
  const typed = await signer.signTypedData(typedData);
  console.log(`hash             ${hash}\n  signature      ${hashSignature}`);
  console.log(`message          ${JSON.stringify(text)}\n  signature      ${textSignature}`);
  console.log(`typed data       ${typedData.primaryType}\n  signature      ${typed.signature}`);

  const checks = {
    'hash, ethers': verifyMessage(getBytes(hash), hashSignature),
    'hash, viem': await recoverMessageAddress({ message: { raw: /** @type {`0x${string}`} */ (hash) }, signature: hashSignature }),
    'message, ethers': verifyMessage(text, textSignature),
    'message, viem': await recoverMessageAddress({ message: text, signature: textSignature }),
    'typed data, ethers': verifyTypedData(typedData.domain, typedData.types, typedData.message, typed.signature),
    'typed data, viem': await recoverTypedDataAddress({ ...typedData, signature: typed.signature }),
  };
  let ok = true;
  for (const [what, recovered] of Object.entries(checks)) {
    const good = recovered.toLowerCase() === address.toLowerCase();
    ok &&= good;
    console.log(`${good ? 'ok  ' : 'FAIL'} ${what}: recovers ${recovered}`);
  }
  console.log(ok ? "every signature recovers to the user's address" : "a signature does not recover to the user's address");
  await signer.dispatcher.close();
  return ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`truewallet example: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
