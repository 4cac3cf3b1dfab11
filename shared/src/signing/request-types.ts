/**
 * The kinds of sign request, once: the request schema (schema.ts) has one variant per name, and project records
 * list the ones a project allows. No zod here, so records (and the CLI and SDK that check them) need none.
 */
export const SIGN_REQUEST_TYPES = ['digest', 'message', 'typedData', 'transaction', 'authorization', 'userOperation'] as const;
export type SignRequestType = (typeof SIGN_REQUEST_TYPES)[number];
