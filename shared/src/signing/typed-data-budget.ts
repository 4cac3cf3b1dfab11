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
 * The same walk checks the message against its types, so that a mistake is refused naming its field rather than
 * hashed into a signature the verifier will not accept: the primary type and every field type must exist; a struct
 * value has exactly its type's fields (an unknown field is refused, a missing one named); a fixed-size array has
 * its length; and each atomic value is of its type (address: 20 bytes of 0x hex; uintN/intN: an integer in range as
 * a decimal string, 0x hex or a safe JSON integer; bytesN: exactly N bytes of 0x hex; bytes: 0x hex; bool; string).
 * viem's `validateTypedData` (which the enclave still runs before hashing) checks ranges, byte sizes and address
 * checksums, but not missing or extra fields, nor the types of strings and booleans. Each check is constant work
 * per value the budget already counts (plus a pass over a struct value's own keys), so the budget still bounds
 * the whole walk. Address checksums are left to viem, on the signer thread: they cost a keccak each. With primary
 * type EIP712Domain only the domain is hashed, so the message must be `{}`. Refusals quote the caller's names with
 * shared/src/echo.ts `quote` (escaped, at most 64 code points each; at most 4 of a type's fields listed).
 */

import { quote } from '../echo';

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
  | {
      ok: false;
      limit: keyof TypedDataLimits | 'shape';
      path: Array<string | number>;
      message: string;
      /** Shape failures: what the value at `path` should have been (`uint8: an integer from 0 to 255 …`). */
      expected?: string;
      /** Shape failures: the field at `path` is missing. */
      required?: true;
    };

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

const INTEGER_TYPE = /^(u?)int([0-9]{1,3})$/;
const BYTES_TYPE = /^bytes([0-9]{1,2})$/;
const ADDRESS = /^0x[0-9a-fA-F]{40}$/;
const HEX = /^0x[0-9a-fA-F]*$/;
const INTEGER = /^(?:-?[0-9]{1,78}|0x[0-9a-fA-F]{1,64})$/;

interface Atomic {
  /** Whether a value is one of this type, as the encoder will take it. */
  accepts(value: unknown): boolean;
  /** What a value of this type is, for the refusal. */
  expected: string;
}

/** An integer as a decimal string (optionally negative), 0x hex, a safe JSON integer, or a bigint, within [min, max]. */
function integerWithin(value: unknown, min: bigint, max: bigint): boolean {
  let n: bigint;
  if (typeof value === 'bigint') n = value;
  else if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) return false;
    n = BigInt(value);
  } else if (typeof value === 'string' && INTEGER.test(value)) n = BigInt(value);
  else return false;
  return n >= min && n <= max;
}

/** EIP-712's atomic and dynamic types (what viem hashes); undefined for any other name (`uint`, `uint7`, `bytes0`, a typo). */
function atomicOf(type: string): Atomic | undefined {
  switch (type) {
    case 'address':
      return { accepts: (v) => typeof v === 'string' && ADDRESS.test(v), expected: 'address: 20 bytes as 0x-prefixed hex' };
    case 'bool':
      return { accepts: (v) => typeof v === 'boolean', expected: 'bool: true or false' };
    case 'string':
      return { accepts: (v) => typeof v === 'string', expected: 'string: a JSON string' };
    case 'bytes':
      return { accepts: (v) => typeof v === 'string' && v.length % 2 === 0 && HEX.test(v), expected: 'bytes: 0x-prefixed hex bytes' };
  }
  const int = INTEGER_TYPE.exec(type);
  if (int) {
    const bits = Number(int[2]);
    if (bits < 8 || bits > 256 || bits % 8 !== 0 || int[2]?.startsWith('0')) return undefined;
    const signed = int[1] === '';
    const max = (1n << BigInt(signed ? bits - 1 : bits)) - 1n;
    const min = signed ? -max - 1n : 0n;
    const range = signed ? `-2^${bits - 1} to 2^${bits - 1}-1` : `0 to 2^${bits}-1`;
    return {
      accepts: (v) => integerWithin(v, min, max),
      expected: `${type}: an integer from ${range}, as a decimal string, 0x hex or a safe JSON integer`,
    };
  }
  const bytes = BYTES_TYPE.exec(type);
  if (bytes) {
    const size = Number(bytes[1]);
    if (size < 1 || size > 32 || bytes[1]?.startsWith('0')) return undefined;
    return {
      accepts: (v) => typeof v === 'string' && v.length === 2 + 2 * size && HEX.test(v),
      expected: `${type}: exactly ${size} byte${size === 1 ? '' : 's'} as 0x-prefixed hex (${2 * size} hex digits)`,
    };
  }
  return undefined;
}

/** The fixed length of an array type (`T[3]` → 3), or undefined for a dynamic one (`T[]`). */
function fixedLengthOf(type: string): number | undefined {
  const inner = type.slice(type.lastIndexOf('[') + 1, -1);
  return inner === '' ? undefined : Number(inner);
}

/** Field names a refusal lists at most. */
const LISTED_FIELDS = 4;

/** A short list of a struct's field names, for a refusal (bounded: at most LISTED_FIELDS named, each quoted). */
function fieldList(fields: readonly Field[]): string {
  const names = fields.slice(0, LISTED_FIELDS).map((f) => quote(f.name));
  return fields.length > LISTED_FIELDS ? `${names.join(', ')}, … (${fields.length} fields)` : names.join(', ') || 'no fields';
}

/** `{}`: a plain object with no own enumerable keys (stops at the first key). */
function isEmptyObject(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  for (const key in value) if (Object.hasOwn(value, key)) return false;
  return true;
}

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
  const wrong = (path: Array<string | number>, message: string, expected: string, required = false): BudgetVerdict => ({
    ok: false,
    limit: 'shape',
    path,
    message,
    expected,
    ...(required ? { required: true as const } : {}),
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

  // Every field's type names a struct or an atomic type, and no struct names a field twice (at most maxTypes ×
  // maxFieldsPerType steps); the primary type exists.
  const atomics = new Map<string, Atomic>();
  const fieldNames = new Map<string, ReadonlySet<string>>();
  for (const [name, fields] of structs) {
    const names = new Set<string>();
    for (let i = 0; i < fields.length; i++) {
      const f = fields[i] as Field;
      if (names.has(f.name))
        return wrong(
          ['types', name, i, 'name'],
          `type ${quote(name)} names its field ${quote(f.name)} twice`,
          'a field name not used before in its type',
        );
      names.add(f.name);
      const base = baseType(f.type);
      if (fieldsOf(base) !== undefined || atomics.has(base)) continue;
      const atomic = atomicOf(base);
      if (!atomic) {
        return wrong(
          ['types', name, i, 'type'],
          `type ${quote(f.type)} is neither a struct defined in types nor an EIP-712 type (address, bool, string, bytes, bytes1-bytes32, uint8-uint256, int8-int256, and arrays of them)`,
          'a struct defined in types or an EIP-712 type',
        );
      }
      atomics.set(base, atomic);
    }
    fieldNames.set(name, names);
  }
  if (td.primaryType !== 'EIP712Domain' && !structs.has(td.primaryType)) {
    return wrong(['primaryType'], `${quote(td.primaryType)} is not a type defined in types`, `one of the types defined in types`);
  }
  // With primary type EIP712Domain, viem hashes the domain alone (0x1901 ‖ domainSeparator): a message would be
  // signed without being in the hash, so only an empty one is taken.
  if (td.primaryType === 'EIP712Domain' && !isEmptyObject(td.message)) {
    return wrong(
      ['message'],
      'with primaryType "EIP712Domain" only the domain is signed: message must be {}',
      'an empty object ({}): with primaryType EIP712Domain only the domain is signed',
    );
  }
  const namesOf = (name: string): ReadonlySet<string> => {
    let names = fieldNames.get(name);
    if (names === undefined) fieldNames.set(name, (names = new Set((fieldsOf(name) ?? []).map((f) => f.name))));
    return names;
  };
  /** The refusal of an atomic value at `path` that is not a `type`, or undefined when it is one. */
  const checkAtomic = (type: string, value: unknown, path: Array<string | number>): BudgetVerdict | undefined => {
    const atomic = atomics.get(type) ?? atomicOf(type);
    if (!atomic) return wrong(path, `type ${quote(type)} is not an EIP-712 type`, 'a struct defined in types or an EIP-712 type');
    return atomic.accepts(value) ? undefined : wrong(path, `expected ${atomic.expected}`, atomic.expected);
  };

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
      if (!Array.isArray(value)) return wrong(path, `expected an array for type ${quote(type)}`, `array (${quote(type)})`);
      const fixed = fixedLengthOf(type);
      if (value.length > limits.maxArrayLength) {
        return fail(
          'maxArrayLength',
          path,
          `typed data exceeds its complexity budget: an array of ${value.length} elements, more than the ${limits.maxArrayLength} allowed (maxArrayLength)`,
        );
      }
      if (fixed !== undefined && value.length !== fixed)
        return wrong(
          path,
          `expected an array of exactly ${fixed} elements for type ${quote(type)}`,
          `array of ${fixed} items (${quote(type)})`,
        );
      longestArray = Math.max(longestArray, value.length);
      values += value.length;
      if (values > limits.maxValues) return tooManyValues(path);
      const element = type.slice(0, type.lastIndexOf('['));
      if (isArrayType(element) || fieldsOf(element) !== undefined) {
        for (let i = value.length - 1; i >= 0; i--) stack.push({ type: element, value: value[i], depth: d + 1, path: [...path, i] });
      } else {
        // Elements of an atomic type, counted above: checked here, not walked.
        for (let i = 0; i < value.length; i++) {
          const refused = checkAtomic(element, value[i], [...path, i]);
          if (refused) return refused;
        }
      }
      continue;
    }

    const fields = fieldsOf(type);
    if (fields === undefined) {
      // Only the message itself is pushed with a type not checked to be a struct (the primary type, checked above).
      continue;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value))
      return wrong(path, `expected an object for struct type ${quote(type)}`, `object (struct ${quote(type)})`);
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
    // Exactly the type's fields: an unknown one is refused (it would be silently left out of the hash), a
    // missing one named; then the atomic values, in the type's order.
    const names = namesOf(type);
    for (const key of Object.keys(record)) {
      if (!names.has(key))
        return wrong(
          [...path, key],
          `unknown field: ${quote(type)} has no field ${quote(key)} (its fields: ${fieldList(fields)})`,
          `no such field (${quote(type)} has: ${fieldList(fields)})`,
        );
    }
    for (const f of fields) {
      if (!Object.hasOwn(record, f.name))
        return wrong([...path, f.name], `${quote(f.type)}, a field of ${quote(type)}`, `${quote(f.type)}, a field of ${quote(type)}`, true);
      if (isArrayType(f.type) || fieldsOf(f.type) !== undefined) continue;
      const refused = checkAtomic(f.type, record[f.name], [...path, f.name]);
      if (refused) return refused;
    }
    for (let i = fields.length - 1; i >= 0; i--) {
      const f = fields[i] as Field;
      if (!isArrayType(f.type) && fieldsOf(f.type) === undefined) continue;
      stack.push({ type: f.type, value: record[f.name], depth: d + 1, path: [...path, f.name] });
    }
  }
  return { ok: true, usage: { types: typeNames.length, maxFields, depth, longestArray, structInstances, values, typeStringChars } };
}
