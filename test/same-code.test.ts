/**
 * scripts/same-code.mjs decides whether a measured module's mutation score still stands after an edit
 * (scripts/mutation-changed.mjs): a reformat or a comment is not a change; anything the compiler keeps is.
 */
// @ts-expect-error: a plain ES module script without type declarations
import { sameCode } from '../scripts/same-code.mjs';

const original = `/** Doubles. */
export function f(a: number, b: string[]): number {
  const list = [1, 2, 3];
  return a * 2 + list.length + b.length;
}
`;

describe('sameCode', () => {
  it('treats a reformat, a comment and a type annotation change as the same code', () => {
    const reformatted = `export function f(
  a: number,
  b: string[],
): number {
  // a comment here
  const list = [
    1,
    2,
    3,
  ];
  return (a * 2) + list.length + b.length;
}`;
    expect(sameCode(original, reformatted)).toBe(true);
    expect(sameCode(original, original.replace('b: string[]', 'b: readonly string[]'))).toBe(true);
  });

  it('sees any change the compiler keeps: an operator, a literal, a name, a string', () => {
    expect(sameCode(original, original.replace('a * 2', 'a * 3'))).toBe(false);
    expect(sameCode(original, original.replace('a * 2 +', 'a * 2 -'))).toBe(false);
    expect(sameCode(original, original.replace('const list', 'const items').replace('list.length', 'items.length'))).toBe(false);
    expect(sameCode(`const s = 'a b';`, `const s = 'a  b';`)).toBe(false);
  });

  it('counts a source that does not compile as changed', () => {
    expect(sameCode(original, 'export function f( {')).toBe(false);
  });
});
