/**
 * `npm run test:browser` (not part of `npm test`): the TrueWallet routes called with `fetch` from a real browser,
 * headless Chromium, against the whole stack (enclave bundle serving the wallet routes over its own TLS, parent
 * with its ingress and egress relays, KMS emulator, NSM simulator, a simulated IdP over HTTPS). The browser trusts
 * the enclave's key (its SPKI hash, as a user's browser trusts a public CA's certificate). A page served from an
 * origin the project allows gets the user's address and two signatures (checked here with ethers); the same page
 * from another origin is refused by CORS, so its script reads nothing (docs/PROJECTS.md, "CORS"). Playwright
 * (playwright-core) drives Debian's Chromium.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { getBytes, hexlify, randomBytes, verifyMessage } from 'ethers';
import { tempRunDir } from '@nks/shared-test/helpers';
import { startSimulatedIdp, type SimulatedIdp } from '../../sim/src/idp/issuer';
import { startStack, waitReady, type Stack } from '../support/stack';
import { createProject, jwtProject, jwtStackOptions, walletApi } from '../support/truewallet';
import type { Browser, Page } from 'playwright-core';
import { chromiumBinary, launchChromium } from './chromium';

/**
 * The page a wallet app would ship: its script takes the keystore URL, the project key and the user's JWT from
 * the query string, calls get-address and sign (a text message and a 32-byte hash), and shows the results.
 */
const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>TrueWallet signer test</title></head>
<body>
<p>address: <span id="address"></span></p>
<p>message signature: <span id="message-signature"></span></p>
<p>hash signature: <span id="hash-signature"></span></p>
<p>error: <span id="error"></span></p>
<script>
(async () => {
  const q = new URLSearchParams(location.search);
  const base = q.get('api') + '/v1/' + q.get('projectKey') + '/wallets/';
  const jwt_token = q.get('jwt');
  const call = async (route, body) => {
    const res = await fetch(base + route, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const answer = await res.json();
    if (!res.ok) throw new Error(route + ': HTTP ' + res.status + ' ' + JSON.stringify(answer));
    return answer;
  };
  try {
    const { address } = await call('get-address', { jwt_token });
    document.getElementById('address').textContent = address;
    const m = await call('sign', { message: q.get('message'), jwt_token, message_type: 'message', wallet_type: 'evm' });
    document.getElementById('message-signature').textContent = m.signature;
    const h = await call('sign', { message: q.get('hash'), jwt_token, message_type: 'hash', wallet_type: 'evm' });
    document.getElementById('hash-signature').textContent = h.signature;
    window.__result = { ok: true, address, messageSignature: m.signature, hashSignature: h.signature };
  } catch (e) {
    document.getElementById('error').textContent = String(e);
    window.__result = { ok: false, name: e.name, error: String(e) };
  }
})();
</script>
</body></html>
`;

/** A loopback HTTP server serving PAGE: its origin is http://127.0.0.1:<port>. */
async function pageServer(): Promise<{ origin: string; requests: number; close(): Promise<void> }> {
  const state = { requests: 0 };
  const server = http.createServer((req, res) => {
    state.requests += 1;
    if (req.method === 'GET' && req.url?.startsWith('/?')) res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(PAGE);
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    get requests() {
      return state.requests;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A new page, and its console output and uncaught exceptions (for failure messages and the CORS check). */
async function openPage(browser: Browser): Promise<{ page: Page; pageLog: string[] }> {
  const page = await browser.newPage();
  const lines: string[] = [];
  page.on('console', (m) => lines.push(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => lines.push(`exception: ${e.message}`));
  return { page, pageLog: lines };
}

/** What the page's script leaves in `window.__result` once it is done. */
async function resultOf<T>(page: Page, pageLog: string[]): Promise<T> {
  try {
    await page.waitForFunction('window.__result !== undefined', undefined, { timeout: 20_000 });
  } catch (err) {
    throw new Error(`the page did not finish: ${String(err)}; page console:\n${pageLog.join('\n')}`);
  }
  return page.evaluate<T>('window.__result');
}

describe('TrueWallet routes from a browser (headless Chromium)', () => {
  let idp: SimulatedIdp;
  let s: Stack;
  let browser: Browser;
  let allowed: Awaited<ReturnType<typeof pageServer>>;
  let other: Awaited<ReturnType<typeof pageServer>>;
  let projectKey: string;

  beforeAll(async () => {
    // Never skipped: a run without a browser fails and says how to get one (.ci/run installs it).
    const binary = chromiumBinary();
    if (!binary) throw new Error('no Chromium found: apt-get install chromium, or set CHROMIUM to its binary');
    idp = await startSimulatedIdp({ audience: 'truewallet-browser' });
    allowed = await pageServer();
    other = await pageServer();
    s = await startStack(tempRunDir('nks-browser-'), { ...jwtStackOptions([idp]), walletsTls: true });
    await waitReady(s);
    ({ projectKey } = await createProject(s, jwtProject(idp, { allowedOrigins: [allowed.origin] })));
    browser = await launchChromium(binary, { trustSpkis: [await servedSpkiSha256(s.walletsUrl, s.walletsCa as string)] });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await s?.stop();
    await Promise.all([idp?.close(), allowed?.close(), other?.close()]);
  });

  const pageUrl = async (origin: string, sub: string) => {
    const q = new URLSearchParams({
      api: s.walletsUrl,
      projectKey,
      jwt: await idp.mint({ sub }),
      message: 'signed in a browser',
      hash: hexlify(randomBytes(32)),
    });
    return { url: `${origin}/?${q.toString()}`, hash: q.get('hash') as string };
  };

  it('from an allowed origin, fetch gets the address and both signatures, and the page shows them', async () => {
    const { page, pageLog } = await openPage(browser);
    const { url, hash } = await pageUrl(allowed.origin, 'browser-user');
    await page.goto(url);
    const result = await resultOf<{ ok: boolean; address: string; messageSignature: string; hashSignature: string; error?: string }>(
      page,
      pageLog,
    );
    expect({ ok: result.ok, error: result.error, console: result.ok ? [] : pageLog }).toEqual({
      ok: true,
      error: undefined,
      console: [],
    });
    expect(result.address).toMatch(/^0x[0-9a-fA-F]{40}$/);
    expect(verifyMessage('signed in a browser', result.messageSignature)).toBe(result.address);
    expect(verifyMessage(getBytes(hash), result.hashSignature)).toBe(result.address);
    // What the page shows is what it got.
    expect(await page.evaluate<string>("document.getElementById('address').textContent")).toBe(result.address);
    expect(await page.evaluate<string>("document.getElementById('hash-signature').textContent")).toBe(result.hashSignature);
    // The same user through the API directly: the same key.
    const direct = await walletApi(s, projectKey).getAddress(await idp.mint({ sub: 'browser-user' }));
    expect(direct.body.address).toBe(result.address);
  });

  it('from another origin, CORS refuses: fetch fails and the page reads nothing', async () => {
    const { page, pageLog } = await openPage(browser);
    const { url } = await pageUrl(other.origin, 'browser-user');
    await page.goto(url);
    const result = await resultOf<{ ok: boolean; name: string; error: string }>(page, pageLog);
    expect(result.ok).toBe(false);
    expect(result.name).toBe('TypeError'); // what fetch raises when CORS blocks a response: no status, no body
    expect(result.error).toMatch(/Failed to fetch/);
    expect(await page.evaluate<string>("document.getElementById('address').textContent")).toBe('');
    expect(pageLog.join('\n')).toMatch(/CORS/);
  });
});

/** SHA-256 (base64) of the SPKI of the leaf the wallet server presents: what Chromium is told to accept. */
function servedSpkiSha256(walletsUrl: string, ca: string): Promise<string> {
  const u = new URL(walletsUrl);
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: u.hostname, port: Number(u.port), ca, servername: 'localhost' }, () => {
      const spki = socket.getPeerX509Certificate()?.publicKey.export({ type: 'spki', format: 'der' });
      socket.destroy();
      if (!spki) return reject(new Error('the wallet server presented no certificate'));
      resolve(createHash('sha256').update(spki).digest('base64'));
    });
    socket.on('error', reject);
  });
}
