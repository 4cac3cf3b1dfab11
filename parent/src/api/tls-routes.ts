/**
 * The admin routes of the wallet routes' TLS (docs/TLS.md), scope admin:
 * - `POST /v1/tls/keys {names}`: a new key made in the enclave; 201 `{publicKey, csr, attestation, names,
 *   createdAt}` (the CSR is what a CA certifies; the attestation's user_data binds the key to the enclave).
 * - `PUT /v1/tls/certificate {chain}`: the PEM chain (leaf first) for one of those keys; the enclave installs it
 *   and serves it from then on; 200 with what it serves (`TlsStatus`).
 * - `GET /v1/tls`: what the enclave serves, the current key and the pending ones.
 */
import { z } from 'zod';
import { TlsCreateParams } from '@nks/shared/enclave-api';
import { requestBody } from '@nks/shared/http/validation';
import { TLS_CHAIN_MAX_BYTES } from '@nks/shared/tls-identity';
import type { TlsKeys } from '../tls/tls-keys';
import { at, NoQuery, type ApiInstance } from './routes';
import * as R from './responses';

const TlsKeysBody = requestBody(z.strictObject({ names: TlsCreateParams.shape.names }), { whenMissing: 'the names are required' });
const TlsCertificateBody = requestBody(
  z.strictObject({
    chain: z.string().min(1).max(TLS_CHAIN_MAX_BYTES, `expected a PEM chain of at most ${TLS_CHAIN_MAX_BYTES} bytes`),
  }),
  { whenMissing: 'a certificate chain is required' },
);

export function tlsRoutes(tls: TlsKeys): (app: ApiInstance) => void {
  return (app) => {
    app.route({
      method: 'POST',
      ...at('/v1/tls/keys', 'admin'),
      schema: { querystring: NoQuery, body: TlsKeysBody, response: { 201: R.TlsKeyCreatedAnswer } },
      async handler(request, reply) {
        const created = await tls.create(request.body.names);
        reply.code(201);
        return created;
      },
    });
    app.route({
      method: 'PUT',
      ...at('/v1/tls/certificate', 'admin'),
      schema: { querystring: NoQuery, body: TlsCertificateBody, response: { 200: R.TlsStatusAnswer } },
      handler(request) {
        return tls.install(request.body.chain);
      },
    });
    app.route({
      method: 'GET',
      ...at('/v1/tls', 'admin'),
      schema: { querystring: NoQuery, response: { 200: R.TlsOverviewAnswer } },
      handler() {
        return tls.status();
      },
    });
  };
}
