/**
 * A real PostgreSQL for a test suite (the same launcher `npm run dev` uses): start it in `beforeAll`, stop it in
 * `afterAll`. As root it runs as `nobody`. `createAppRole` makes a role with the parent's grants only.
 */
export { createAppRole, startPostgres, type PostgresServer, type StartOptions } from '../../sim/src/postgres';
