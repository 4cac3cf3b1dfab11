/**
 * The enclave's side of signed records (docs/RECORDS.md): it checks every record the parent hands it before
 * acting on it, and remembers enough to keep the warm path cheap and to refuse old records.
 *
 * - Verified records: a record whose signature verified is kept (bounded in count and in bytes, least recently
 *   used dropped first) under its exact base64 text, with its digest and decoded content. The same record
 *   again costs a map lookup, not an Ed25519 verification, a decode or even a hash. What is kept is always
 *   what decoding the signed bytes gives, also for the records the enclave signs itself (`remember`), so a
 *   cached record never means anything its bytes do not say (docs/SECURITY.md, "Signed records mean their
 *   bytes").
 * - High-water marks: the highest `seq` seen in a genuine record of each key and each project. A record
 *   older than that is refused: once the enclave has seen a key disabled (seq n), the parent cannot hand it
 *   the record from before (seq n-1). The marks live in memory only: a restart forgets them, and an older
 *   record is then accepted again until a newer one is seen. That is the documented limit of this check
 *   (docs/RECORDS.md). Key marks are bounded like the cache (a mark dropped at the bound is forgotten as by a
 *   restart), except for retired and cancelled keys: their final record itself is kept (its digest), never
 *   dropped, and is the only record of the key accepted from then on; and for successors this enclave activated:
 *   their activation's seq is kept, never dropped, and no pending record of them is accepted again (the parent
 *   could otherwise hand one back as "the user's pending key" to a cancel, and end the user's key). A parent that could push the mark out (by
 *   disabling many keys of its own), or keep a record it had the enclave make before the retirement (a disable)
 *   and hand that back, would sign with a retired key, or activate a second successor, without the restart
 *   everyone can see (docs/LIFECYCLE.md).
 *   Project marks are never dropped either: a project's record carries its policy and its approvers, and
 *   a parent that could push a mark out (by changing many other projects) would hand back the record from
 *   before the approvers without the restart everyone can see (docs/POLICIES.md, "Approvers"). At the bound a
 *   project (a key to pin) that needs a new mark is refused (OVERLOADED): the parent made that many project
 *   changes (key transitions), which denies service and nothing else.
 *
 * Every integrity failure is one KEY_INTEGRITY with one fixed message (`integrityRefused`), whichever check
 * failed, and is counted in `failures` (health: integrityFailures): the parent learns "no", never which.
 */
import type { KeyObject } from 'node:crypto';
import { KeystoreError } from '@nks/shared/errors';
import {
  decodeKeyRecord,
  isFinalKeyState,
  decodeProjectRecord,
  MAX_RECORD_BYTES,
  recordDigest,
  verifySignedRecord,
  type KeyRecord,
  type ProjectRecord,
  type SignedRecord,
} from '@nks/shared/records';
import { Lru } from './lru';

/** A key whose lifecycle went one way: its final record's digest, or the seq of its activation. */
type KeyPin = { final: string } | { activatedAt: number };

/** What the OVERLOADED answer at the bound of pinned keys names. */
const KEY_PINS = 'retired, cancelled or activated keys';

/** The one message of every record or blob mismatch. */
export const INTEGRITY_REFUSED_MESSAGE = 'the key does not match its signed records';

export interface Verified<R extends KeyRecord | ProjectRecord> {
  record: R;
  /** recordDigest of its bytes: what `prev` of the next record names. */
  digest: Buffer;
}

interface Entry {
  signature: string;
  verified: Verified<KeyRecord> | Verified<ProjectRecord>;
}

export interface RecordLimits {
  maxVerified: number;
  /** The verified records' total weight (`entryWeight`, about their bytes in memory). */
  maxVerifiedBytes: number;
  maxSeqMarks: number;
}

/**
 * At least the memory a verified record takes in V8's heap, in bytes: its base64 text (the map key, one byte a
 * character) and the signature's, the decoded content at twice the record's bytes (its strings are at most
 * that many characters, one or two bytes each, plus their objects), and the entry's own objects. Measured with
 * `--expose-gc` (heap after, minus heap before, over thousands of entries): a project record of 7.9 KB takes
 * 20.8 KB (weight 26.4 KB), a key record of 250 bytes 0.8 KB (weight 1.2 KB).
 */
export function entryWeight(recordB64: string, signatureB64: string): number {
  const bytes = Math.floor((recordB64.length * 3) / 4);
  return recordB64.length + signatureB64.length + 2 * bytes + 256;
}

export class VerifiedRecords {
  /** Integrity failures: records, blobs and their bindings (not failed opens of KMS answers). */
  failures = 0;
  private readonly verified: Lru<string, Entry>;
  private readonly keyMarks: Lru<string, number>;
  /**
   * Keys whose lifecycle went one way (see the file comment), never dropped: a retired or cancelled key's final
   * record (its digest; a final state is terminal, so this record is the only one of the key still current: any
   * other, older or a fork the parent made from an older record, is refused), and a successor this enclave
   * activated (the seq of its activation: no record of it before that, and no pending record, is accepted again).
   */
  private readonly pinnedKeys = new Map<string, KeyPin>();
  private readonly projectMarks = new Map<string, number>();
  private readonly maxProjectMarks: number;

  constructor(
    /** The identity's public key; null in a genesis image, where no record verifies. */
    private readonly identity: KeyObject | null,
    limits: RecordLimits,
  ) {
    this.verified = new Lru(limits.maxVerified, {
      maxWeight: limits.maxVerifiedBytes,
      weigh: (text, entry) => entryWeight(text, entry.signature),
    });
    this.keyMarks = new Lru(limits.maxSeqMarks);
    this.maxProjectMarks = limits.maxSeqMarks;
  }

  /** Counts an integrity failure and returns the one error for all of them (to throw). */
  refused(cause?: unknown): KeystoreError {
    this.failures += 1;
    return new KeystoreError('KEY_INTEGRITY', INTEGRITY_REFUSED_MESSAGE, cause === undefined ? undefined : { cause });
  }

  /** A key record signed by the identity, or KEY_INTEGRITY. Does not check seq (see `current`). */
  key(signed: SignedRecord): Verified<KeyRecord> {
    const v = this.open(signed, 'key');
    return v as Verified<KeyRecord>;
  }

  /** A project record signed by the identity, or KEY_INTEGRITY. Does not check seq (see `current`). */
  project(signed: SignedRecord): Verified<ProjectRecord> {
    return this.open(signed, 'project') as Verified<ProjectRecord>;
  }

  /**
   * Refuses (KEY_INTEGRITY) a genuine record older than the newest of its key or project seen since start;
   * otherwise raises the mark to it.
   */
  current(v: Verified<KeyRecord> | Verified<ProjectRecord>): void {
    const { record } = v;
    const id = this.idOf(record);
    const pin = record.kind === 'key' ? this.pinnedKeys.get(id) : undefined;
    const mark = this.markOf(record, id);
    if (!this.fits(v, pin, mark)) throw this.refused();
    if (pin && 'final' in pin) return;
    // Only a record after the first needs a mark (nothing is older than seq 0): making keys does not push
    // the marks of changed keys out of the bound.
    if (record.seq === 0 || (mark !== undefined && record.seq <= mark)) return;
    if (record.kind === 'project') {
      this.pinned(this.projectMarks, id, 'changed projects').set(id, record.seq);
    } else if (isFinalKeyState(record.state)) {
      this.pinned(this.pinnedKeys, id, KEY_PINS).set(id, { final: v.digest.toString('hex') });
      this.keyMarks.delete(id);
    } else {
      this.keyMarks.set(id, record.seq);
    }
  }

  /**
   * Whether `v` is not older than the newest record of its key or project seen: for a retired or cancelled key,
   * whether it is that final record itself; for an activated successor, also neither pending nor from before.
   */
  private notOlder(v: Verified<KeyRecord> | { record: ProjectRecord }, id: string): boolean {
    const pin = v.record.kind === 'key' ? this.pinnedKeys.get(id) : undefined;
    return this.fits(v, pin, this.markOf(v.record, id));
  }

  /** `notOlder`, given the key's pin (if any) and the mark of its key or project (if any). */
  private fits(v: Verified<KeyRecord> | { record: ProjectRecord }, pin: KeyPin | undefined, mark: number | undefined): boolean {
    if (pin && 'final' in pin) return pin.final === (v as Verified<KeyRecord>).digest.toString('hex');
    if (pin && (v.record.state === 'pending' || v.record.seq < pin.activatedAt)) return false;
    return mark === undefined || v.record.seq >= mark;
  }

  /** A map of marks that are never dropped, with room for `id`; OVERLOADED at the bound. */
  private pinned<V>(marks: Map<string, V>, id: string, what: string): Map<string, V> {
    if (!marks.has(id) && marks.size >= this.maxProjectMarks) throw this.overloaded(what);
    return marks;
  }

  private overloaded(what: string): KeystoreError {
    const message = `the enclave keeps the newest record of at most ${this.maxProjectMarks} ${what} (records.maxSeqMarks)`;
    return new KeystoreError('OVERLOADED', message, { retryable: false });
  }

  /**
   * Refuses (KEY_INTEGRITY) a record that is no longer the newest of its key or project, without raising any
   * mark: for a request that checked `current` and then waited (a JWT check, a KMS answer) while other requests
   * may have made a newer record, e.g. disabled the key or the project.
   */
  stillCurrent(v: Verified<KeyRecord> | Verified<ProjectRecord>): void {
    if (!this.notOlder(v, this.idOf(v.record))) throw this.refused();
  }

  /** Whether no newer record of its key or project has been seen (no failure counted): for a cache's entries. */
  isCurrent(v: Verified<KeyRecord> | { record: ProjectRecord }): boolean {
    return this.notOlder(v, this.idOf(v.record));
  }

  /**
   * A key is its key id and address: key ids are the parent's choice, so two keys made under one id (the
   * parent's doing) keep separate marks rather than refusing each other.
   */
  private idOf(record: KeyRecord | ProjectRecord): string {
    return record.kind === 'key' ? `${record.keyId}\u0000${record.address}` : record.projectId;
  }

  /** The highest seq seen of the record's key (not retired or cancelled) or project, if any is kept. */
  private markOf(record: KeyRecord | ProjectRecord, id: string): number | undefined {
    return record.kind === 'project' ? this.projectMarks.get(id) : this.keyMarks.get(id);
  }

  /**
   * A record the enclave has just signed, which becomes the newest of its key or project. What is remembered
   * (and returned) is what its bytes decode to, as a restarted enclave, the parent or a client will read it,
   * never the object that was encoded: a value the encoding could not carry as it was (a string that is not
   * well-formed Unicode, say) cannot be enforced from the cache and mean something else everywhere else. A
   * record the enclave could not read back (too large, or refused by the decoder) throws: it is never handed out.
   */
  remember<R extends KeyRecord | ProjectRecord>(signed: SignedRecord, kind: R['kind']): Verified<R> {
    const bytes = Buffer.from(signed.record, 'base64');
    if (bytes.length > MAX_RECORD_BYTES) {
      throw new KeystoreError(
        'INVALID_PARAMS',
        `the record would be ${bytes.length} bytes, over the ${MAX_RECORD_BYTES} a record may have`,
      );
    }
    let record: KeyRecord | ProjectRecord;
    try {
      record = kind === 'key' ? decodeKeyRecord(bytes) : decodeProjectRecord(bytes);
    } catch (err) {
      // The parameters it was made from are the caller's own: saying which field is wrong tells it nothing new.
      throw new KeystoreError('INVALID_PARAMS', `the record these parameters make would not be readable: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const verified = { record, digest: recordDigest(bytes) } as Verified<R>;
    this.verified.set(signed.record, { signature: signed.signature, verified: verified as Entry['verified'] });
    this.current(verified as Entry['verified']);
    return verified;
  }

  /**
   * An activation this enclave made (keys/lifecycle.ts): the predecessor's retired record and the successor's
   * active one, both remembered and both keys pinned, or neither (OVERLOADED, nothing changed, when the pins are
   * at their bound). The successor's pin refuses its pending records from now on: a parent that pushed its
   * ordinary mark out could otherwise hand one back (as "the user's pending key", to a cancel) and end it.
   */
  rememberActivation(active: SignedRecord, retired: SignedRecord): void {
    // The records are the enclave's own, just signed: read for their ids, not verified.
    const idOfSigned = (r: SignedRecord) => this.idOf(decodeKeyRecord(Buffer.from(r.record, 'base64')));
    const newPins = [active, retired].filter((r) => !this.pinnedKeys.has(idOfSigned(r))).length;
    if (this.pinnedKeys.size + newPins > this.maxProjectMarks) throw this.overloaded(KEY_PINS);
    this.remember<KeyRecord>(retired, 'key');
    const made = this.remember<KeyRecord>(active, 'key');
    this.pinnedKeys.set(this.idOf(made.record), { activatedAt: made.record.seq });
  }

  private open(signed: SignedRecord, kind: 'key' | 'project'): Verified<KeyRecord> | Verified<ProjectRecord> {
    const hit = this.verified.get(signed.record);
    if (hit && hit.signature === signed.signature && hit.verified.record.kind === kind) return hit.verified;
    if (!this.identity) throw this.refused();
    let verified: Verified<KeyRecord> | Verified<ProjectRecord>;
    try {
      const { bytes, digest } = verifySignedRecord(signed, this.identity);
      verified = { record: kind === 'key' ? decodeKeyRecord(bytes) : decodeProjectRecord(bytes), digest } as typeof verified;
    } catch (err) {
      throw this.refused(err);
    }
    this.verified.set(signed.record, { signature: signed.signature, verified });
    return verified;
  }
}
