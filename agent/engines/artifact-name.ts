/**
 * A safe artifact file name for a database: the name itself when it is made of
 * `[A-Za-z0-9_-]` and dots (not leading), else each other byte of its UTF-8 form
 * as `%XX`, so that a database called `../x` or `a/b` cannot steer where the artifact
 * is stored. `artifactFileName('sakila', '.sql')` is `sakila.sql`.
 */
export function artifactFileName(database: string, extension: string): string {
  let out = '';
  for (const byte of Buffer.from(database, 'utf8')) {
    const ch = String.fromCharCode(byte);
    const plain = /[A-Za-z0-9_-]/.test(ch) || (ch === '.' && out !== '');
    out += plain ? ch : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return `${out === '' ? '%' : out}${extension}`;
}
