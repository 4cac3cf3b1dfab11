/** A database URL as logs and errors may show it: never its password (in the userinfo or a `password=` parameter). */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    for (const key of [...u.searchParams.keys()]) if (/^password$/i.test(key)) u.searchParams.set(key, '***');
    return u.toString();
  } catch {
    // Not a URL this can take apart: nothing of it is shown.
    return '(a database URL that does not parse)';
  }
}
