/**
 * `nks projects`: create, list, read, disable and enable projects (an admin token; README.md, "Caller API").
 * A JWT project's users get their keys through the TrueWallet API with their own JWTs; a token project's keys
 * are made with `nks keys create --project P`.
 */
import { JWT_ALGORITHMS, type JwtAlgorithm } from '@nks/shared/project-auth';
import { SIGN_REQUEST_TYPES, type SignRequestType } from '@nks/shared/signing/request-types';
import type { Project, ProjectInput } from '../sdk';
import { clientFor, connectionOptions, parse, UsageError } from './context';
import { fields, print } from './output';

const projectRows = (p: Project): Array<[string, unknown]> => [
  ['projectId', p.projectId],
  ['projectKey', p.projectKey],
  ['name', p.name],
  ['auth', p.auth.type],
  ...(p.auth.type === 'jwt'
    ? ([
        ['issuer', p.auth.issuer],
        ['audience', p.auth.audience],
        ['userClaim', p.auth.userClaim],
        ['jwksUri', p.auth.jwksUri],
        ['algorithms', p.auth.algorithms.join(', ')],
        ['maxTokenLifetime', `${p.auth.maxTokenLifetime} s`],
      ] as Array<[string, unknown]>)
    : []),
  ['allowedOrigins', p.allowedOrigins.length ? p.allowedOrigins.join(', ') : 'none'],
  ['allowedRequestTypes', p.allowedRequestTypes.join(', ')],
  ['state', p.state],
  [
    'policies',
    // Older servers show none; the rules themselves: nks policies get.
    p.policies && (p.policies.rules.length || p.policies.limits.length)
      ? `${p.policies.rules.length} rule(s), ${p.policies.limits.length} limit(s) (nks policies get --project ${p.projectId})`
      : 'none',
  ],
  ['createdAt', p.createdAt],
];

const positiveInt = (flag: string, v: string | undefined): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${flag} must be a positive integer`);
  return n;
};

export async function projectsCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'create': {
      const { values } = parse(rest, {
        ...connectionOptions,
        name: { type: 'string' },
        'token-auth': { type: 'boolean' },
        issuer: { type: 'string' },
        audience: { type: 'string' },
        'jwks-uri': { type: 'string' },
        'user-claim': { type: 'string' },
        algorithm: { type: 'string', multiple: true },
        'max-token-lifetime': { type: 'string' },
        origin: { type: 'string', multiple: true },
        'request-type': { type: 'string', multiple: true },
      });
      if (!values.name) throw new UsageError('--name is required');
      const jwtFlags = (['issuer', 'audience', 'jwks-uri', 'user-claim', 'algorithm', 'max-token-lifetime'] as const).filter(
        (f) => values[f] !== undefined,
      );
      let auth: ProjectInput['auth'];
      if (values['token-auth']) {
        if (jwtFlags.length) throw new UsageError(`--token-auth takes none of --${jwtFlags.join(', --')}`);
        auth = { type: 'token' };
      } else {
        if (!values.issuer || !values.audience || !values['jwks-uri'])
          throw new UsageError('a JWT project needs --issuer, --audience and --jwks-uri (or give --token-auth)');
        for (const a of values.algorithm ?? [])
          if (!(JWT_ALGORITHMS as readonly string[]).includes(a))
            throw new UsageError(`--algorithm ${a}: expected one of ${JWT_ALGORITHMS.join(', ')}`);
        const lifetime = positiveInt('--max-token-lifetime', values['max-token-lifetime']);
        auth = {
          type: 'jwt',
          issuer: values.issuer,
          audience: values.audience,
          jwksUri: values['jwks-uri'],
          ...(values['user-claim'] ? { userClaim: values['user-claim'] } : {}),
          ...(values.algorithm ? { algorithms: values.algorithm as JwtAlgorithm[] } : {}),
          ...(lifetime ? { maxTokenLifetime: lifetime } : {}),
        };
      }
      for (const t of values['request-type'] ?? [])
        if (!(SIGN_REQUEST_TYPES as readonly string[]).includes(t))
          throw new UsageError(`--request-type ${t}: expected one of ${SIGN_REQUEST_TYPES.join(', ')}`);
      const project = await clientFor(values).createProject({
        name: values.name,
        auth,
        ...(values.origin ? { allowedOrigins: values.origin } : {}),
        ...(values['request-type'] ? { allowedRequestTypes: values['request-type'] as SignRequestType[] } : {}),
      });
      print(project, values.json ?? false, () => `Created project\n${fields(projectRows(project))}`);
      return 0;
    }
    case 'get': {
      const { values, positionals } = parse(rest, connectionOptions, ['projectId']);
      const project = await clientFor(values).getProject(positionals[0] as string);
      print(project, values.json ?? false, () => fields(projectRows(project)));
      return 0;
    }
    case 'list': {
      const { values } = parse(rest, {
        ...connectionOptions,
        limit: { type: 'string' },
        cursor: { type: 'string' },
        all: { type: 'boolean' },
      });
      const client = clientFor(values);
      let projects: Project[];
      let nextCursor: string | null = null;
      if (values.all) {
        projects = [];
        for await (const p of client.allProjects()) projects.push(p);
      } else {
        const limit = positiveInt('--limit', values.limit);
        const page = await client.listProjects({ ...(limit ? { limit } : {}), ...(values.cursor ? { cursor: values.cursor } : {}) });
        projects = page.projects;
        nextCursor = page.nextCursor;
      }
      print({ projects, nextCursor }, values.json ?? false, () =>
        [
          `${projects.length} project(s)`,
          ...projects.map((p) => `${p.projectId}  ${p.projectKey}  ${p.auth.type}  ${p.state}  ${p.name}`),
          ...(nextCursor ? [`more: --cursor ${nextCursor}`] : []),
        ].join('\n'),
      );
      return 0;
    }
    case 'disable':
    case 'enable': {
      const { values, positionals } = parse(rest, connectionOptions, ['projectId']);
      const client = clientFor(values);
      const id = positionals[0] as string;
      const project = sub === 'disable' ? await client.disableProject(id) : await client.enableProject(id);
      print(project, values.json ?? false, () => `${project.projectId} is ${project.state}`);
      return 0;
    }
    default:
      throw new UsageError('usage: nks projects create|get|list|disable|enable ...');
  }
}
