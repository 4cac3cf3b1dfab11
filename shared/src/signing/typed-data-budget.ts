/**
 * A complexity budget for EIP-712 typed data, checked at schema validation (so the parent and the enclave
 * both enforce it) before anything is hashed.
 *
 * Why: viem's `hashTypedData` rebuilds and hashes `encodeType(T)` — the type's whole dependency closure as a
 * string — for every struct instance it encodes, and pays a few keccak and ABI-encoding calls for every
 * struct, array and array element. So the cost is roughly
 *
 *     Σ over struct instances (c₁ + c₂ · |encodeType(T)|)  +  Σ over values (fields and array elements) c₃
 *
 * (plus hashing each string and bytes value, linear in the request's size) which a small request can make enormous: 250 chained types and thousands of struct instances holding empty
 * arrays (99 KB of JSON) took 5.8 s. The budget bounds every term of that sum. It is computed by walking the
 * types together with the message, exactly as the encoder will, and stops as soon as a limit is passed, so the
 * check itself costs at most a few milliseconds whatever the input.
 *
 * The walk also refuses values whose shape cannot be encoded (an object where an array is declared, a missing
 * struct), since the encoder would fail on them anyway.
 */

export interface TypedDataLimits {
  /** Struct types in `types`, EIP712Domain included. */
  maxTypes: number;
  /** Fields of any one struct type. */
  maxFieldsPerType: number;
  /** Nesting of structs and arrays in the message (the message itself is depth 1). */
  maxDepth: number;
  /** Elements of any one array. */
  maxArrayLength: number;
  /** Struct values the encoder hashes: the domain, the message and every nested or array-held struct. */
  maxStructInstances: number;
  /**
   * Values the encoder visits: every field of every struct value and every array element (an empty array is
   * one value; each costs an ABI encoding and often a keccak).
   */
  maxValues: number;
  /** Σ over struct instances of |encodeType(T)|: the type strings viem rebuilds and hashes per instance. */
  maxTypeStringChars: number;
}

/**
 * The limits. Real payloads use a small fraction of each (shared/test/typed-data-budget.test.ts): a Seaport
 * order with 30 offer and 30 consideration items is 62 struct values, 405 values and 7,672 type-string
 * characters; a Seaport bulk order of 256 orders (tree height 8, more than the parent's default 256 KiB body)
 * is 1,282 struct values, 10,243 values, 244,299 characters and depth 12; Permit2 PermitBatch, UniswapX
 * orders and Safe transactions have at most 5 types and 11 fields per type. At these limits the costliest
 * request (the benchmark's `atLimitStructs`, 2,048 struct values and 16,372 string values in 977 KB) takes
 * roughly 0.4–0.7 s of one CPU on the development machine; `npm run bench` reports it.
 */
export const TYPED_DATA_LIMITS: Readonly<TypedDataLimits> = Object.freeze({
  maxTypes: 32,
  maxFieldsPerType: 64,
  maxDepth: 32,
  maxArrayLength: 1024,
  maxStructInstances: 2048,
  maxValues: 16_384,
  maxTypeStringChars: 1_000_000,
});

export interface TypedDataUsage {
  types: number;
  maxFields: number;
  depth: number;
  longestArray: number;
  structInstances: number;
  values: number;
  typeStringChars: number;
}

export type BudgetVerdict =
  | { ok: true; usage: TypedDataUsage }
  | { ok: false; limit: keyof TypedDataLimits | 'shape'; path: Array<string | number>; message: string };

interface Field {
  name: string;
  type: string;
}

export interface TypedDataShape {
  domain?: Record<string, unknown> | undefined;
  types: Record<string, readonly Field[]>;
  primaryType: string;
  message: unknown;
}

/** EIP712Domain's fields in canonical order, as viem derives them from the domain object. */
export const CANONICAL_DOMAIN_FIELDS: readonly Field[] = Object.freeze([
  { name: 'name', type: 'string' },
  { name: 'version', type: 'string' },
  { name: 'chainId', type: 'uint256' },
  { name: 'verifyingContract', type: 'address' },
  { name: 'salt', type: 'bytes32' },
]);

/** The EIP712Domain type a domain implies: its present fields, in canonical order. */
export function domainFieldsOf(domain: Record<string, unknown> | undefined): Field[] {
  return CANONICAL_DOMAIN_FIELDS.filter((f) => domain?.[f.name] !== undefined && domain?.[f.name] !== null);
}

/** `T[2][]` → `T`; viem strips trailing array suffixes the same way. */
const baseType = (type: string) => type.replace(/(\[[0-9]*\])+$/, '');
const isArrayType = (type: string) => type.endsWith(']');

interface Frame {
  type: string;
  value: unknown;
  depth: number;
  path: Array<string | number>;
}

/**
 * Checks typed data against `limits`. Never throws on hostile input; returns the first limit exceeded with
 * the path where it happened, or the usage (for tests and the benchmark).
 */
export function checkTypedDataBudget(td: TypedDataShape, limits: TypedDataLimits = TYPED_DATA_LIMITS): BudgetVerdict {
  const fail = (limit: keyof TypedDataLimits | 'shape', path: Array<string | number>, message: string): BudgetVerdict => ({
    ok: false,
    limit,
    path,
    message,
  });

  const tooManyValues = (path: Array<string | number>) =>
    fail(
      'maxValues',
      path,
      `typed data exceeds its complexity budget: more than ${limits.maxValues} values (struct fields and array elements) to encode in all (maxValues)`,
    );

  // 1. The type definitions: counts first, so the closures below are cheap.
  const typeNames = Object.keys(td.types);
  if (typeNames.length > limits.maxTypes) {
    return fail(
      'maxTypes',
      ['types'],
      `typed data exceeds its complexity budget: ${typeNames.length} types, more than the ${limits.maxTypes} allowed (maxTypes)`,
    );
  }
  const structs = new Map<string, readonly Field[]>();
  let maxFields = 0;
  for (const name of typeNames) {
    const fields = td.types[name] as readonly Field[];
    if (fields.length > limits.maxFieldsPerType) {
      return fail(
        'maxFieldsPerType',
        ['types', name],
        `typed data exceeds its complexity budget: a type with ${fields.length} fields, more than the ${limits.maxFieldsPerType} allowed (maxFieldsPerType)`,
      );
    }
    maxFields = Math.max(maxFields, fields.length);
    structs.set(name, fields);
  }
  // hashTypedData hashes the domain with types.EIP712Domain, or the type the domain implies (which is then
  // also what a field of type EIP712Domain means).
  const domainFields = structs.get('EIP712Domain') ?? domainFieldsOf(td.domain);
  const fieldsOf = (name: string): readonly Field[] | undefined => (name === 'EIP712Domain' ? domainFields : structs.get(name));

  // |encodeType(T)|: `T(t1 n1,t2 n2)` for T and every struct type it reaches. At most maxTypes × maxFields
  // steps per type, computed once per type on first use.
  const typeStringLength = new Map<string, number>();
  const lengthOf = (root: string): number => {
    const known = typeStringLength.get(root);
    if (known !== undefined) return known;
    const seen = new Set<string>([root]);
    const stack = [root];
    let chars = 0;
    while (stack.length > 0) {
      const name = stack.pop() as string;
      const fields = fieldsOf(name) as readonly Field[];
      chars += name.length + 2 + Math.max(0, fields.length - 1);
      for (const f of fields) {
        chars += f.type.length + 1 + f.name.length;
        const dep = baseType(f.type);
        if (fieldsOf(dep) !== undefined && !seen.has(dep)) {
          seen.add(dep);
          stack.push(dep);
        }
      }
    }
    typeStringLength.set(root, chars);
    return chars;
  };

  // 2. Walk the values as the encoder will: the domain, then the message (unless the primary type is the domain).
  let depth = 0;
  let longestArray = 0;
  let structInstances = 0;
  let values = 0;
  let typeStringChars = 0;
  const stack: Frame[] = [];
  if (td.primaryType !== 'EIP712Domain') stack.push({ type: td.primaryType, value: td.message, depth: 1, path: ['message'] });
  stack.push({ type: 'EIP712Domain', value: td.domain ?? {}, depth: 1, path: ['domain'] });

  while (stack.length > 0) {
    const { type, value, depth: d, path } = stack.pop() as Frame;
    if (d > limits.maxDepth) {
      return fail(
        'maxDepth',
        path,
        `typed data exceeds its complexity budget: nested deeper than ${limits.maxDepth} levels of structs and arrays (maxDepth)`,
      );
    }
    depth = Math.max(depth, d);

    if (isArrayType(type)) {
      if (!Array.isArray(value)) return fail('shape', path, `expected an array for type ${type}`);
      if (value.length > limits.maxArrayLength) {
        return fail(
          'maxArrayLength',
          path,
          `typed data exceeds its complexity budget: an array of ${value.length} elements, more than the ${limits.maxArrayLength} allowed (maxArrayLength)`,
        );
      }
      longestArray = Math.max(longestArray, value.length);
      values += value.length;
      if (values > limits.maxValues) return tooManyValues(path);
      const element = type.slice(0, type.lastIndexOf('['));
      // Elements of an atomic type are counted above and need no walk.
      if (isArrayType(element) || fieldsOf(element) !== undefined) {
        for (let i = value.length - 1; i >= 0; i--) stack.push({ type: element, value: value[i], depth: d + 1, path: [...path, i] });
      }
      continue;
    }

    const fields = fieldsOf(type);
    if (fields === undefined) continue; // an atomic value (or an unknown type, which viem refuses)
    if (typeof value !== 'object' || value === null || Array.isArray(value))
      return fail('shape', path, `expected an object for struct type ${type}`);
    structInstances += 1;
    if (structInstances > limits.maxStructInstances) {
      return fail(
        'maxStructInstances',
        path,
        `typed data exceeds its complexity budget: more than ${limits.maxStructInstances} struct values to encode (maxStructInstances)`,
      );
    }
    values += fields.length;
    if (values > limits.maxValues) return tooManyValues(path);
    typeStringChars += lengthOf(type);
    if (typeStringChars > limits.maxTypeStringChars) {
      return fail(
        'maxTypeStringChars',
        path,
        `typed data exceeds its complexity budget: its type strings, rebuilt for every struct value, exceed ${limits.maxTypeStringChars} characters in all (maxTypeStringChars; fewer or smaller types, or fewer struct values)`,
      );
    }
    const record = value as Record<string, unknown>;
    for (let i = fields.length - 1; i >= 0; i--) {
      const f = fields[i] as Field;
      if (!isArrayType(f.type) && fieldsOf(f.type) === undefined) continue;
      stack.push({
        type: f.type,
        value: Object.hasOwn(record, f.name) ? record[f.name] : undefined,
        depth: d + 1,
        path: [...path, f.name],
      });
    }
  }
  return { ok: true, usage: { types: typeNames.length, maxFields, depth, longestArray, structInstances, values, typeStringChars } };
}
