/**
 * The caller API routes (DESIGN §5): path pattern, required scope, and handler. Bodies and query strings are
 * validated with strict schemas, so unknown fields are refused.
 */
import { z } from 'zod';
import { KeystoreError } from '../../../shared/src/errors';
import { parseOrThrow } from '../../../shared/src/schema';
import { SignRequestSchema, type SignRequestInput } from '../../../shared/src/signing/schema';
import type { Scope } from '../config';
import { viewOf, type KeyRegistry } from '../key-registry';

export interface RouteContext {
  params: Record<string, string>;
  query: URLSearchParams;
  body: unknown;
}

export interface RouteResult {
  status: number;
  body: unknown;
}

export interface Route {
  method: 'GET' | 'POST';
  /** Used as the metrics label. */
  name: string;
  pattern: RegExp;
  /** undefined: no token needed (health and metrics). */
  scope?: Scope;
  /** Whether the route reads a JSON body. */
  body: boolean;
  handle(ctx: RouteContext): Promise<RouteResult> | RouteResult;
}

const externalId = z.string().min(1).max(256).regex(/^[\x21-\x7e]+$/, 'expected printable ASCII without spaces');
const labels = z
  .record(z.string().regex(/^[A-Za-z0-9_.:/-]{1,64}$/, 'label names are 1-64 characters of [A-Za-z0-9_.:/-]'), z.string().max(256))
  .refine((l) => Object.keys(l).length <= 32, 'at most 32 labels');

const CreateBody = z.strictObject({ externalId: externalId.optional(), labels: labels.optional(), attest: z.boolean().optional() }).optional();
const EmptyBody = z.strictObject({}).optional();
const ListQuery = z.strictObject({
  externalId: externalId.optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  cursor: z.string().max(64).optional(),
});
const NoQuery = z.strictObject({});
const AttestationQuery = z.strictObject({ nonce: z.string().regex(/^0x(?:[0-9a-fA-F]{2}){1,512}$/, 'expected 1-512 bytes of 0x-prefixed hex').optional() });

function queryOf(q: URLSearchParams, schema: z.ZodType, name = 'query') {
  const obj: Record<string, string> = {};
  for (const [k, v] of q) {
    if (k in obj) throw new KeystoreError('INVALID_PARAMS', `${name}: "${k}" is given more than once`);
    obj[k] = v;
  }
  return parseOrThrow(schema, obj, name);
}

const KEY_ID = '([A-Za-z0-9_-]{1,64})';

export function routes(keys: KeyRegistry): Route[] {
  return [
    {
      method: 'POST',
      name: '/v1/keys',
      pattern: /^\/v1\/keys$/,
      scope: 'keys:create',
      body: true,
      async handle({ body, query }) {
        queryOf(query, NoQuery);
        const input = parseOrThrow(CreateBody, body, 'body') ?? {};
        const { record, created } = await keys.create(input);
        return { status: created ? 201 : 200, body: viewOf(record, true) };
      },
    },
    {
      method: 'GET',
      name: '/v1/keys',
      pattern: /^\/v1\/keys$/,
      scope: 'keys:read',
      body: false,
      handle({ query }) {
        const q = queryOf(query, ListQuery) as z.output<typeof ListQuery>;
        const page = keys.list(q);
        return { status: 200, body: { keys: page.keys.map((r) => viewOf(r)), nextCursor: page.nextCursor } };
      },
    },
    {
      method: 'GET',
      name: '/v1/keys/{keyId}',
      pattern: new RegExp(`^/v1/keys/${KEY_ID}$`),
      scope: 'keys:read',
      body: false,
      handle({ params, query }) {
        queryOf(query, NoQuery);
        return { status: 200, body: viewOf(keys.get(params.keyId as string)) };
      },
    },
    {
      method: 'POST',
      name: '/v1/keys/{keyId}/sign',
      pattern: new RegExp(`^/v1/keys/${KEY_ID}/sign$`),
      scope: 'keys:sign',
      body: true,
      async handle({ params, body, query }) {
        queryOf(query, NoQuery);
        if (body === undefined) throw new KeystoreError('INVALID_PARAMS', 'body: a sign request is required');
        parseOrThrow(SignRequestSchema, body, 'body'); // early, precise 400; the enclave validates again
        return { status: 200, body: await keys.sign(params.keyId as string, body as SignRequestInput) };
      },
    },
    ...(['disable', 'enable'] as const).map(
      (action): Route => ({
        method: 'POST',
        name: `/v1/keys/{keyId}/${action}`,
        pattern: new RegExp(`^/v1/keys/${KEY_ID}/${action}$`),
        scope: 'admin',
        body: true,
        handle({ params, body, query }) {
          queryOf(query, NoQuery);
          parseOrThrow(EmptyBody, body, 'body');
          return { status: 200, body: viewOf(keys.setDisabled(params.keyId as string, action === 'disable')) };
        },
      }),
    ),
    {
      method: 'GET',
      name: '/v1/attestation',
      pattern: /^\/v1\/attestation$/,
      scope: 'keys:read',
      body: false,
      async handle({ query }) {
        const q = queryOf(query, AttestationQuery) as z.output<typeof AttestationQuery>;
        return { status: 200, body: await keys.attestation(q.nonce) };
      },
    },
  ];
}
