/**
 * The caller API's answers as zod schemas: each route's `response` (routes.ts, tls-routes.ts, server.ts), from
 * which the OpenAPI document is generated (openapi.ts) and with which the answers are serialized.
 *
 * Serializing with a schema checks the answer against it (`serializerCompiler` below): the objects are strict, so
 * an answer with a field the schema does not name fails (500 INTERNAL) rather than leave undocumented. Two
 * kinds of schema are documentation only, written out with JSON.stringify unchecked (`documentedOnly`):
 * - the sign route's answer, on the hot path: checking it costs CPU on every signature, and its fields are
 *   built by the enclave and checked by the parent already (keys.sign);
 * - the error envelope: an error must always get out, whatever its details.
 * Schemas with an `id` (`.meta({id})`) are the document's components (`#/components/schemas/…`). No transforms or
 * defaults here: they cannot be encoded.
 */
import type { FastifySerializerCompiler } from 'fastify';
import { serializerCompiler as zodSerializerCompiler } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { ERROR_CODES, type ErrorCode } from '@nks/shared/errors';
import { KEY_STATES, PROJECT_STATES } from '@nks/shared/records';
import { SIGN_REQUEST_TYPES } from '@nks/shared/signing/request-types';

const documented = new WeakSet<z.ZodType>();

/** A schema that documents an answer without checking it when serializing (see above). */
export function documentedOnly<S extends z.ZodType>(schema: S): S {
  documented.add(schema);
  return schema;
}

/** fastify-type-provider-zod's serializer (checks the answer, then JSON.stringify), except for `documentedOnly` schemas. */
export const serializerCompiler: FastifySerializerCompiler<z.ZodType> = (route) =>
  documented.has(route.schema) ? (data: unknown) => JSON.stringify(data) : zodSerializerCompiler(route);

const hex = (what: string) => z.string().describe(`${what}, 0x-prefixed hex`);
const isoTime = z.string().describe('ISO 8601 time (UTC)');

/** A record as the enclave signed it (docs/RECORDS.md). */
export const SignedRecordView = z
  .strictObject({
    record: z.string().describe('the record, canonical CBOR, base64'),
    signature: z.string().describe("the keystore identity's Ed25519 signature of the record, base64"),
  })
  .meta({ id: 'SignedRecord', description: 'A record signed by the keystore identity (docs/RECORDS.md): clients verify it.' });

export const KeyView = z
  .strictObject({
    keyId: z.string(),
    address: z.string().describe('EIP-55 address'),
    publicKey: hex('uncompressed secp256k1 public key'),
    externalId: z.string().nullable(),
    labels: z.record(z.string(), z.string()),
    createdAt: isoTime,
    disabled: z.boolean(),
    projectId: z.string().nullable().describe("from the key's signed record; null for a key made before 0.4 and not migrated"),
    state: z.enum(KEY_STATES).nullable(),
    record: SignedRecordView.nullable(),
    predecessor: z.string().optional().describe("a successor's: the key it succeeds (docs/LIFECYCLE.md)"),
    attestation: z.string().optional().describe('the birth attestation (COSE_Sign1, base64), when made at creation'),
  })
  .meta({ id: 'Key' });

/** The fields a create names that its external id's existing key differs in (field names only, never values). */
const mismatch = z
  .array(z.enum(['labels', 'attest']))
  .optional()
  .describe('re-creating an existing external id, to a token with keys:read: the fields given that the existing key differs in');

/** `POST /v1/keys` for an existing external id, to a token that may read keys: the key as it is. */
export const CreatedKeyView = KeyView.extend({ created: z.literal(false), mismatch }).meta({ id: 'KeyExisting' });

/**
 * `POST /v1/keys` for an existing external id, to a token that may not read keys: no `mismatch` (it would confirm
 * guesses of labels the token may not read).
 */
export const KeyCreatedRef = z
  .strictObject({ keyId: z.string(), created: z.literal(false) })
  .meta({ id: 'KeyExists', description: 'The key of this external id exists; a token without keys:read sees only its id.' });

/** `PATCH /v1/keys/{keyId}` to a token that may not read keys: what it set. */
export const KeyLabelsRef = z
  .strictObject({ keyId: z.string(), labels: z.record(z.string(), z.string()) })
  .meta({ id: 'KeyLabels', description: 'The labels set; a token without keys:read sees only these.' });

/**
 * `POST /v1/keys/{keyId}/successor`, and an Idempotency-Key's replay of `POST /v1/keys`, to a token that may not
 * read keys: the key without its labels, external id and record (what it takes from a predecessor, or may have
 * changed since).
 */
export const SuccessorOwnView = KeyView.omit({ labels: true, externalId: true, record: true }).meta({ id: 'KeyWithoutRecord' });

export const KeyList = z.strictObject({ keys: z.array(KeyView), nextCursor: z.string().nullable() }).meta({ id: 'KeyPage' });

export const HistoryEntryView = z
  .strictObject({
    keyId: z.string(),
    address: z.string(),
    state: z.enum(KEY_STATES).nullable(),
    disabled: z.boolean(),
    predecessor: z.string().nullable(),
    createdAt: isoTime,
    updatedAt: isoTime,
  })
  .meta({ id: 'KeyHistoryEntry' });
export const KeyHistory = z.strictObject({ keys: z.array(HistoryEntryView) });

/** The sign answer (documentation only: the hot path). */
export const SignResultView = documentedOnly(
  z
    .strictObject({
      signature: hex('r ‖ s ‖ v, 65 bytes, v 27/28'),
      r: hex('32 bytes'),
      s: hex('32 bytes'),
      v: z.union([z.literal(27), z.literal(28)]),
      yParity: z.union([z.literal(0), z.literal(1)]),
      hash: hex('the 32-byte digest that was signed'),
      address: z.string().describe('the EIP-55 address of the key'),
      serializedTransaction: hex('transactions: the signed, serialized transaction (EIP-4844: without blob sidecars)').optional(),
      transactionHash: hex('transactions: keccak-256 of serializedTransaction, the hash it is mined under').optional(),
      userOperationHash: hex("user operations: the EntryPoint's userOpHash").optional(),
    })
    .meta({ id: 'SignResult' }),
);

/**
 * The batch sign answer (documentation only, like the single one): one item per request, in order, its result or
 * the error the single sign route would have answered for it (without the request id: the answer's).
 */
export const SignBatchAnswer = documentedOnly(
  z
    .strictObject({
      results: z.array(
        z.union([
          z.strictObject({ result: SignResultView }),
          z.strictObject({
            error: z.strictObject({
              code: z.enum(Object.keys(ERROR_CODES) as [ErrorCode, ...ErrorCode[]]).describe('the error code a single sign would answer'),
              message: z.string(),
              retryable: z.boolean().describe('whether this request may succeed if sent again (the SDK re-sends only these)'),
              details: z.record(z.string(), z.string().nullable()).describe('machine-readable facts (POLICY_DENIED)').optional(),
            }),
          }),
        ]),
      ),
    })
    .meta({ id: 'SignBatchAnswer' }),
);

/**
 * A project's policies as its record holds them, normalized (EIP-55 addresses, lower-case selectors, decimal
 * amounts): the fields of the `PUT …/policies` body (docs/POLICIES.md).
 */
export const PoliciesView = z
  .strictObject({
    rules: z.array(z.looseObject({ name: z.string() })),
    limits: z.array(z.looseObject({ name: z.string() })),
    approvers: z.looseObject({ threshold: z.number().int(), addresses: z.array(z.string()) }).optional(),
  })
  .meta({ id: 'Policies', description: 'Normalized policies (docs/POLICIES.md): the fields of the PUT …/policies body.' });

const ProjectAuthView = z
  .discriminatedUnion('type', [
    z.strictObject({ type: z.literal('token') }),
    z.strictObject({
      type: z.literal('jwt'),
      issuer: z.string(),
      audience: z.string(),
      userClaim: z.string(),
      jwksUri: z.string(),
      algorithms: z.array(z.string()),
      maxTokenLifetime: z.number(),
    }),
  ])
  .meta({ id: 'ProjectAuth' });

export const ProjectView = z
  .strictObject({
    projectId: z.string(),
    projectKey: z.string().describe("the project's key in the wallet routes' paths"),
    name: z.string(),
    auth: ProjectAuthView,
    allowedOrigins: z.array(z.string()),
    allowedRequestTypes: z.array(z.enum(SIGN_REQUEST_TYPES)),
    state: z.enum(PROJECT_STATES),
    createdAt: isoTime,
    policies: PoliciesView,
    record: SignedRecordView,
  })
  .meta({ id: 'Project' });
export const ProjectList = z
  .strictObject({ projects: z.array(ProjectView), nextCursor: z.string().nullable() })
  .meta({ id: 'ProjectPage' });

export const PoliciesAnswer = z
  .strictObject({
    projectId: z.string(),
    seq: z.number().int().describe("the record's seq: every change of the policies is a new record"),
    recordSha256: hex('the record\'s digest, SHA-256("nks-record-v1" ‖ record)'),
    policies: PoliciesView,
    record: SignedRecordView,
  })
  .meta({ id: 'ProjectPolicies' });

export const PolicyApprovalAnswer = z
  .strictObject({
    projectId: z.string(),
    seq: z.number().int(),
    recordSha256: hex("the current record's digest"),
    approvers: PoliciesView.shape.approvers.unwrap().nullable(),
    typedData: z
      .looseObject({ domain: z.looseObject({}).optional(), types: z.looseObject({}), primaryType: z.string(), message: z.looseObject({}) })
      .describe('EIP-712 typed data (eth_signTypedData_v4) an approver signs'),
  })
  .meta({ id: 'PolicyApproval' });

export const PolicyDecisionView = z
  .strictObject({
    allowed: z.boolean(),
    rule: z.string().nullable().describe('the rule that decided; null when none matched'),
    limit: z.string().nullable().describe('the limit that refused, if one did'),
    reason: z.string(),
    rules: z.array(
      z.strictObject({ name: z.string(), effect: z.enum(['allow', 'deny']), matched: z.boolean(), failed: z.string().optional() }),
    ),
    limits: z.array(
      z.strictObject({
        name: z.string(),
        scope: z.string(),
        window: z.string(),
        applies: z.boolean(),
        count: z.strictObject({ used: z.number(), max: z.number() }).optional(),
        value: z.strictObject({ used: z.string(), max: z.string() }).optional(),
        exceeded: z.string().optional(),
      }),
    ),
  })
  .meta({ id: 'PolicyDecision' });

export const AttestationAnswer = z
  .strictObject({ document: z.string().describe('NSM attestation document (COSE_Sign1), base64') })
  .meta({ id: 'Attestation' });

export const IdentityAnswer = z
  .strictObject({
    publicKey: z.string().describe("the keystore identity's Ed25519 public key"),
    genesisDocument: z.string().describe("the genesis attestation document: pin the identity's public key from it"),
    attestation: z.string().describe('a fresh attestation document (with the nonce, when given), base64'),
  })
  .meta({ id: 'Identity' });

const TlsStatusView = z
  .strictObject({
    state: z.enum(['none', 'installed']),
    publicKey: z.string().nullable(),
    names: z.array(z.string()),
    notBefore: z.string().nullable(),
    notAfter: z.string().nullable(),
    fingerprint256: z.string().nullable(),
  })
  .meta({ id: 'TlsStatus' });
export const TlsStatusAnswer = TlsStatusView;
export const TlsKeyCreatedAnswer = z
  .strictObject({
    publicKey: z.string().describe("the new key's DER SubjectPublicKeyInfo, base64"),
    csr: z.string().describe('PKCS#10 certificate request, PEM'),
    attestation: z.string().describe('COSE_Sign1, base64: its user_data binds the key to the enclave'),
    names: z.array(z.string()),
    createdAt: isoTime,
  })
  .meta({ id: 'TlsKeyCreated' });
export const TlsOverviewAnswer = z
  .strictObject({
    status: TlsStatusView.nullable(),
    current: z.strictObject({ publicKey: z.string(), names: z.array(z.string()), notAfter: isoTime, installedAt: isoTime }).nullable(),
    pending: z.array(z.strictObject({ publicKey: z.string(), names: z.array(z.string()), createdAt: isoTime })),
  })
  .meta({ id: 'TlsOverview' });

export const HealthAnswer = z.strictObject({ status: z.literal('ok') });
export const ReadinessAnswer = z
  .strictObject({ status: z.enum(['ready', 'not ready']), checks: z.record(z.string(), z.union([z.boolean(), z.string()])) })
  .meta({ id: 'Readiness' });

/** The error codes answered with `status` (shared/src/errors.ts). */
export const codesWithStatus = (status: number): ErrorCode[] =>
  (Object.keys(ERROR_CODES) as ErrorCode[]).filter((c) => ERROR_CODES[c].httpStatus === status);

/** Every status an error code maps to, ascending. */
export const ERROR_STATUSES: number[] = [...new Set(Object.values(ERROR_CODES).map((c) => c.httpStatus))].sort((a, b) => a - b);

/** The error envelope of every error (server.ts, answerError): documentation only (see above). */
export const ErrorAnswer = documentedOnly(
  z
    .strictObject({
      error: z.strictObject({
        code: z.enum(Object.keys(ERROR_CODES) as [ErrorCode, ...ErrorCode[]]).describe('the error code; its HTTP status is fixed'),
        message: z.string().describe('what went wrong, in words (never key material)'),
        retryable: z.boolean().describe('whether the same request may succeed later'),
        requestId: z.string().describe('the x-request-id of the answer'),
        details: z
          .union([
            z
              .array(z.strictObject({ path: z.string(), expected: z.string(), received: z.string() }))
              .describe('INVALID_PARAMS: each problem with the request, the first named by the message'),
            z.record(z.string(), z.string().nullable()).describe('machine-readable facts (POLICY_DENIED: the rule or limit)'),
          ])
          .optional(),
      }),
    })
    .meta({ id: 'Error' }),
);

/**
 * `/readyz` 503: not ready, or an error (a readiness check that throws one with status 503): both written as they
 * are, as every error is.
 */
export const NotReadyAnswer = documentedOnly(ReadinessAnswer.or(ErrorAnswer));
