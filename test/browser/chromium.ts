/**
 * Headless Chromium for the browser tests: Debian's `chromium` package (the system browser; Playwright's own
 * browser downloads do not work here), driven by `playwright-core`.
 */
import fs from 'node:fs';
import { chromium, type Browser } from 'playwright-core';

/** The browser binary: $CHROMIUM, else Debian's (the real binary behind the /usr/bin/chromium wrapper). */
export function chromiumBinary(): string | undefined {
  const candidates = [process.env.CHROMIUM, '/usr/lib/chromium/chromium', '/usr/bin/chromium', '/usr/bin/chromium-browser'];
  return candidates.find((c): c is string => typeof c === 'string' && c !== '' && fs.existsSync(c));
}

/**
 * `trustSpkis`: SHA-256 hashes (base64) of server keys whose certificates the browser accepts although they chain
 * to no CA it knows (`--ignore-certificate-errors-spki-list`): a test CA's server, as a user's browser would trust a
 * public CA's. Only those: Playwright's `ignoreHTTPSErrors` would accept any certificate.
 */
export function launchChromium(binary: string, opts: { trustSpkis?: string[] } = {}): Promise<Browser> {
  return chromium.launch({
    executablePath: binary,
    headless: true,
    // Runs as root in CI (no sandbox there); nothing reaches past loopback (this machine's network is closed, and
    // Chromium's background connections would be refused by the dozen).
    chromiumSandbox: false,
    args: [
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--disable-quic',
      '--disable-background-networking',
      '--disable-component-update',
      ...(opts.trustSpkis?.length ? [`--ignore-certificate-errors-spki-list=${opts.trustSpkis.join(',')}`] : []),
    ],
  });
}
