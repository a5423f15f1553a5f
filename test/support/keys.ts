/** API keys as the tests handle them. */

/** `key` with its last four characters changed: the same prefix, a secret that does not match. */
export function wrongSecretOf(key: string): string {
  return `${key.slice(0, -4)}${key.endsWith('AAAA') ? 'BBBB' : 'AAAA'}`;
}
