export { backoffDelay, type BackoffOptions } from '../backoff';
export { RpcClient, type RpcClientOptions, type CallOptions, type HandshakeCall } from './client';
export {
  defineMethod,
  serveApi,
  type RpcApi,
  type RpcMethodDef,
  type RpcHandlers,
  type MethodName,
  type ParamsOf,
  type ValidParamsOf,
  type ResultOf,
} from './api';
export {
  RpcServer,
  rpcMethod,
  RPC_SERVER_LIMIT_DEFAULTS,
  type RpcMethod,
  type RpcServerOptions,
  type RpcServerLimits,
  type RpcCallContext,
  type RpcServerStats,
  type RpcConnectionStats,
} from './server';
export { FramedConnection } from './framed-connection';
export * from './jsonrpc';
