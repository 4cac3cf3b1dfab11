/** Database URLs and error texts made fit for logs and errors: never a password (docs/STORAGE.md, "Configuration"). */

/** `url` with its password (the user info's, or any `…password` parameter) replaced by `***`. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    for (const name of [...u.searchParams.keys()]) if (/password/i.test(name)) u.searchParams.set(name, '***');
    return u.toString();
  } catch {
    return redactText(url);
  }
}

/** Every URL password and `password=` value in free text (an error message, a key=value connection string). */
export function redactText(text: string): string {
  return text.replace(/(\b[a-z][a-z0-9+.-]*:\/\/[^\s:/@]*:)[^\s@]*@/gi, '$1***@').replace(/(password=)[^&\s]*/gi, '$1***');
}
