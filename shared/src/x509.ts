/** @peculiar/x509, ready to use in the enclave: it needs the reflect-metadata polyfill and a WebCrypto provider. */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509 };
