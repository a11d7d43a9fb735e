import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { ConfigError, EncryptionKeyError, errorMessage } from '../shared/errors.js';
import type { WireArtifact } from '../shared/wire.js';
import { runTool, spawnTool, type ToolProcess } from './tool-process.js';

/** The one encryption scheme: age with an X25519 key (https://age-encryption.org/v1). */
export const SCHEME = 'age-x25519';

/**
 * This agent's encryption key: an age identity file (made with `age-keygen`),
 * its public recipient, and the fingerprint recorded in the manifest. The key
 * file never leaves the node and is never stored with the backups.
 */
export interface EncryptionKey {
  identityFile: string;
  /** `age1…`, the public key artifacts are encrypted to. */
  recipient: string;
  /** First 16 hex digits of the SHA-256 of `recipient`. */
  fingerprint: string;
}

/**
 * Loads an age identity file and derives its recipient with `age-keygen -y`.
 *
 * @throws ConfigError when the file is unreadable, readable by others than its owner, or not an age identity.
 */
export async function loadEncryptionKey(identityFile: string): Promise<EncryptionKey> {
  const st = await stat(identityFile).catch((err: unknown) => {
    throw new ConfigError(`encryption key file ${identityFile} cannot be read: ${errorMessage(err)}`);
  });
  if ((st.mode & 0o077) !== 0) {
    throw new ConfigError(`encryption key file ${identityFile} is readable by group or others`, {
      hint: `chmod 600 ${identityFile}`,
    });
  }
  let recipient: string;
  try {
    recipient = (await runTool('age-keygen', ['-y', identityFile], { debianPackage: 'age' })).trim();
  } catch (err) {
    throw new ConfigError(
      `encryption key file ${identityFile} is not an age identity: ${errorMessage(err)}`,
      {
        hint: 'create one with: age-keygen -o FILE',
        cause: err,
      },
    );
  }
  if (!/^age1[0-9a-z]+$/.test(recipient)) {
    throw new ConfigError(`encryption key file ${identityFile} holds no X25519 age identity`);
  }
  return { identityFile, recipient, fingerprint: fingerprintOf(recipient) };
}

/** The fingerprint of an age recipient, as recorded in manifests. */
export function fingerprintOf(recipient: string): string {
  return createHash('sha256').update(recipient).digest('hex').slice(0, 16);
}

/**
 * `age -e -r RECIPIENT`: plaintext on stdin, age file on stdout.
 *
 * @param output stdout: `'pipe'` (`child.stdout`), or a file descriptor age writes to (a storage file).
 */
export function startEncryptor(
  key: EncryptionKey,
  signal?: AbortSignal,
  output: 'pipe' | number = 'pipe',
): ToolProcess {
  return spawnTool('age', ['-e', '-r', key.recipient], {
    signal,
    debianPackage: 'age',
    stdio: ['pipe', output],
  });
}

/** `age -d -i IDENTITY_FILE`: age file on stdin, plaintext on stdout. */
export function startDecryptor(key: EncryptionKey, signal?: AbortSignal): ToolProcess {
  return spawnTool('age', ['-d', '-i', key.identityFile], {
    signal,
    debianPackage: 'age',
    stdio: ['pipe', 'pipe'],
  });
}

/**
 * Checks, before a restore touches anything, that this agent can decrypt an
 * artifact: it holds the key whose fingerprint the manifest recorded.
 *
 * @throws EncryptionKeyError naming the artifact and both fingerprints.
 */
export function checkKeyFor(a: WireArtifact, key: EncryptionKey | undefined): void {
  if (!a.encryption) return;
  if (a.encryption !== SCHEME) {
    throw new EncryptionKeyError(`artifact ${a.name} uses unknown encryption "${a.encryption}"`, {
      hint: 'upgrade the agent',
    });
  }
  if (!key) {
    throw new EncryptionKeyError(
      `artifact ${a.name} is encrypted (key fingerprint ${a.keyFingerprint}) and this agent has no encryption_key_file`,
      { hint: 'set agent.encryption_key_file to the key the backup was made with' },
    );
  }
  if (key.fingerprint !== a.keyFingerprint) {
    throw new EncryptionKeyError(
      `artifact ${a.name} was encrypted with key fingerprint ${a.keyFingerprint}, but this agent's key is ${key.fingerprint}`,
      { hint: 'nothing was restored; use the agent key the backup was made with' },
    );
  }
}
