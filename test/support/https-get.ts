import { execFile } from 'node:child_process';

/** What runs in the child: one GET trusting only the given CA, its outcome as one line of JSON. */
const CHILD = `
const https = require('node:https');
const [url, ca] = [process.env.GET_URL, process.env.GET_CA];
https
  .get(url, { ca, agent: false }, (res) => {
    let body = '';
    res.on('data', (c) => (body += c));
    res.on('end', () => console.log(JSON.stringify({ status: res.statusCode, body })));
  })
  .on('error', (err) => console.log(JSON.stringify({ error: String(err.message) })));
`;

/**
 * GET over HTTPS trusting only `ca`, made by a child process. In-process, the client's TLS socket is freed only
 * when the garbage collector gets to it, and jest's --detectOpenHandles (CI) reported a finished request's
 * socket as still open when the test file ran last; a child's sockets end with it.
 */
export const httpsGet = (url: string, ca: string) =>
  new Promise<{ status: number; body: string }>((resolve, reject) => {
    execFile(process.execPath, ['-e', CHILD], { env: { GET_URL: url, GET_CA: ca }, timeout: 20_000 }, (err, stdout) => {
      if (err) return reject(err);
      const out = JSON.parse(stdout) as { status: number; body: string } | { error: string };
      if ('error' in out) return reject(new Error(out.error));
      resolve(out);
    });
  });
