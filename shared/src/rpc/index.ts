export { RpcClient, backoffDelay, type RpcClientOptions, type CallOptions, type BackoffOptions } from './client';
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
