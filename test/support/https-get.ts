import https from 'node:https';

/**
 * GET over HTTPS trusting only `ca`, on a connection of its own, settling only once that connection is closed:
 * a response's end (or a handshake error) can come before its socket closes, and jest's --detectOpenHandles
 * (CI) reports the socket still open at that moment.
 */
export const httpsGet = (url: string, ca: string) =>
  new Promise<{ status: number; body: string }>((resolve, reject) => {
    let settle: () => void = () => reject(new Error(`GET ${url}: connection closed without a response`));
    const req = https.get(url, { ca, agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => {
        settle = () => resolve({ status: res.statusCode ?? 0, body });
        req.destroy();
      });
    });
    req.on('error', (err) => (settle = () => reject(err)));
    req.on('close', () => settle());
  });
