/**
 * `npm run test:browser`: the caller API's reference page (`/docs`, parent/src/api/openapi.ts) in headless
 * Chromium (Debian's, driven by playwright-core). The page loads Redoc from the parent and the document from
 * `/v1/openapi.json`, renders the routes (the sign route among them), and no request leaves the parent's origin;
 * the page's Content-Security-Policy reports no violation (Redoc needs nothing it forbids).
 * Against the dev stack's parent (the built bundle, as `npm run dev` runs it).
 */
import type { Browser, Page } from 'playwright-core';
import { tempRunDir } from '@nks/shared-test/helpers';
import { startStack, waitReady, type Stack } from '../support/stack';
import { chromiumBinary, launchChromium } from './chromium';

const SIGN_PATH = '/v1/keys/{keyId}/sign';

describe('the API reference page in a browser', () => {
  let s: Stack;
  let origin: string;
  let browser: Browser;
  let page: Page;
  const requests: string[] = [];
  const problems: string[] = [];

  beforeAll(async () => {
    // Never skipped: a run without a browser fails and says how to get one (.ci/run installs it).
    const binary = chromiumBinary();
    if (!binary) throw new Error('no Chromium found: apt-get install chromium, or set CHROMIUM to its binary');
    s = await startStack(tempRunDir('nks-docs-'));
    await waitReady(s);
    origin = s.url;
    browser = await launchChromium(binary);
    page = await browser.newPage();
    page.on('request', (r) => requests.push(r.url()));
    page.on('requestfailed', (r) => problems.push(`failed: ${r.url()} ${r.failure()?.errorText ?? ''}`));
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      if (/Content.Security.Policy|Refused to/i.test(m.text())) problems.push(`console: ${m.text()}`);
    });
  }, 90_000);
  afterAll(async () => {
    await browser?.close();
    await s?.stop();
  });

  it('lists the sign route, and loads everything from the parent only', async () => {
    const answer = await page.goto(`${origin}/docs`);
    expect(answer?.status()).toBe(200);
    // Redoc renders each operation's path once the document is loaded and parsed.
    // (A locator, not a string predicate: the page's CSP forbids eval, which a string predicate needs.)
    await page.getByText(SIGN_PATH).first().waitFor({ state: 'attached', timeout: 30_000 });
    expect(await page.textContent('body')).toContain('/v1/openapi.json');
    expect(requests).toEqual(expect.arrayContaining([`${origin}/docs`, `${origin}/docs/redoc.standalone.js`, `${origin}/v1/openapi.json`]));
    // blob: workers are made by Redoc from its own code (the CSP allows only those besides this origin).
    expect(requests.filter((u) => !u.startsWith(`${origin}/`) && !u.startsWith('blob:'))).toEqual([]);
    expect(problems).toEqual([]);
  });
});
