// One chain: Hardhat's EDR (@nomicfoundation/edr) in a Node process of its own, driven over the IPC channel by
// test/chain/harness.ts. Its own process because EDR is a native addon whose thread-safe functions live as long
// as the process (jest --detectOpenHandles reports them in a test worker), and it sets a process-wide tracing
// subscriber, so one context per process. Here the chain ends with the process: nothing outlives close().
//
// Messages in: {start: {chainId, hardfork, privateKeys, balance}} once, then {id, request} (a JSON-RPC request
// object), and {exit: true} to end. Messages out: {ready: true} or {startError}, then {id, data} (EDR's JSON-RPC
// response, a string or an object).
'use strict';
const { EdrContext, MineOrdering, Provider, SpecId } = require('@nomicfoundation/edr');

const HARDFORKS = { cancun: SpecId.Cancun, prague: SpecId.Prague };

async function start({ chainId, hardfork, privateKeys, balance }) {
  const specId = HARDFORKS[hardfork];
  if (specId === undefined) throw new Error(`unknown hardfork ${hardfork}`);
  return Provider.withConfig(
    new EdrContext(),
    {
      allowBlocksWithSameTimestamp: false,
      allowUnlimitedContractSize: false,
      // Like a real node: a reverting transaction is mined (status 0), a reverting eth_call answers an error.
      bailOnCallFailure: true,
      bailOnTransactionFailure: false,
      blockGasLimit: 30_000_000n,
      chainId: BigInt(chainId),
      chains: [],
      coinbase: Buffer.alloc(20),
      enableRip7212: false,
      genesisAccounts: privateKeys.map((secretKey) => ({ secretKey, balance: BigInt(balance) })),
      hardfork: specId,
      initialBaseFeePerGas: 1_000_000_000n,
      minGasPrice: 0n,
      // Automine: every transaction is mined in its own block before eth_sendRawTransaction answers.
      mining: { autoMine: true, memPool: { order: MineOrdering.Priority } },
      networkId: BigInt(chainId),
    },
    { enable: false, decodeConsoleLogInputsCallback: () => [], printLineCallback: () => {} },
    {},
    () => {},
  );
}

let provider = null;
process.on('message', (msg) => {
  if (msg.exit) return process.exit(0);
  if (msg.start) {
    start(msg.start).then(
      (p) => {
        provider = p;
        process.send({ ready: true });
      },
      (e) => process.send({ startError: String(e && e.stack ? e.stack : e) }),
    );
    return;
  }
  provider.handleRequest(JSON.stringify(msg.request)).then(
    (response) => process.send({ id: msg.id, data: response.data }),
    (e) => process.send({ id: msg.id, data: { error: { code: -32603, message: `EDR: ${String(e && e.message ? e.message : e)}` } } }),
  );
});
// The test process went away (or closed the chain): so does the chain.
process.on('disconnect', () => process.exit(0));
