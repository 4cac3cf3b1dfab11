/**
 * Typed RPC method tables, in the shape of viem's `RpcSchema` and tRPC's routers: one table per direction maps
 * each method name to its params schema (what the server validates) and its result type (types only). The
 * client's `call` and the server's handler map are both typed from the same table, so an unknown method,
 * params of the wrong shape or a handler returning the wrong shape is a compile error
 * (shared/test/rpc-api.types.ts shows each).
 *
 * A result type is what the server promises, not something the client checks: a side that must not trust its
 * peer (the enclave reading the parent's KMS answers) takes the answer as `unknown` and validates it.
 */
import type { z } from 'zod';
import { rpcMethod, type RpcCallContext, type RpcMethod } from './server';

/** One method: the params schema the server validates with, and the type of its result. */
export interface RpcMethodDef<P extends z.ZodType = z.ZodType, R = unknown> {
  readonly params: P;
  /** Never set at run time: it only carries the result type. */
  readonly result?: R;
}

/** A method table: method name -> definition. */
export type RpcApi = Record<string, RpcMethodDef>;

/** `defineMethod<Result>()(ParamsSchema)`: the result type is given, the params type is inferred from the schema. */
export function defineMethod<R>() {
  return <P extends z.ZodType>(params: P): RpcMethodDef<P, R> => ({ params });
}

export type MethodName<A extends RpcApi> = Extract<keyof A, string>;

/** What a caller passes (the schema's input: defaults may be left out). */
export type ParamsOf<A extends RpcApi, M extends keyof A> = z.input<A[M]['params']>;

/** What a handler receives (the schema's output, after validation). */
export type ValidParamsOf<A extends RpcApi, M extends keyof A> = z.output<A[M]['params']>;

export type ResultOf<A extends RpcApi, M extends keyof A> = A[M] extends RpcMethodDef<z.ZodType, infer R> ? R : never;

/** One handler per method of `A`, no more and no fewer, each returning its method's result. */
export type RpcHandlers<A extends RpcApi> = {
  [M in MethodName<A>]: (params: ValidParamsOf<A, M>, ctx: RpcCallContext) => ResultOf<A, M> | Promise<ResultOf<A, M>>;
};

/** The server's method map for `api`, with each handler checked against its table entry. */
export function serveApi<A extends RpcApi>(api: A, handlers: RpcHandlers<A>): Record<string, RpcMethod> {
  const methods: Record<string, RpcMethod> = {};
  for (const name of Object.keys(api) as Array<MethodName<A>>) {
    const handler = handlers[name] as (params: unknown, ctx: RpcCallContext) => unknown;
    methods[name] = rpcMethod((api[name] as RpcMethodDef).params, handler);
  }
  return methods;
}
