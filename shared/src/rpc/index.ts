export { RpcClient, backoffDelay, type RpcClientOptions, type CallOptions, type BackoffOptions } from './client';
export { RpcServer, rpcMethod, type RpcMethod, type RpcServerOptions, type RpcCallContext, type RpcServerStats } from './server';
export { FramedConnection } from './framed-connection';
export * from './protocol';
