// State kept between transactions: the `kv` capability (WIT 0.1.2), for componentize-js.
//
//   import { kv } from './sluice-plugin-kv.js';
//   const seen = kv.increment(`sender:${domain}`, 1, 86400);   // atomic; the new value
//
// Build against a world that imports it (`// sluice-world: plugin-kv` or `-n plugin-kv`); the
// operator grants it with capabilities = ["kv"] in [plugin.NAME] (then `sluice reload`).
// Keys are the plugin's own; every key expires: ttlSecs 0 means the longest the operator
// allows (90 days by default). Values are bytes (Uint8Array) or strings (stored as UTF-8).
import * as raw from 'sluice:filter/kv@0.1.4';

const bytes = (v) => (typeof v === 'string' ? new TextEncoder().encode(v) : v);

export const kv = {
  /** The value of `key` (Uint8Array), or undefined when it is not set or has expired. */
  get: (key) => raw.get(key) ?? undefined,
  /** The value of `key` decoded as UTF-8, or undefined. */
  getText(key) {
    const v = raw.get(key);
    return v === undefined || v === null ? undefined : new TextDecoder().decode(v);
  },
  /** The counter `key` (0 when not set), without changing it. */
  counter(key) {
    const v = kv.getText(key);
    return v === undefined ? 0 : Number(v);
  },
  /** Sets `key` to `value`, expiring after `ttlSecs` (0: the longest allowed). */
  set: (key, value, ttlSecs = 0) => raw.set(key, bytes(value), ttlSecs),
  /** Adds `delta` atomically and returns the new value (a Number); a missing key counts as 0
   *  and is created with `ttlSecs`; an existing key keeps its expiry. */
  increment: (key, delta = 1, ttlSecs = 0) => Number(raw.increment(key, BigInt(delta), ttlSecs)),
  /** Removes `key`; true when it was set. */
  delete: (key) => raw['delete'](key),
  /** Sets `key` to `value` only if it holds `expected` (undefined: only if it is not set),
   *  atomically; true when it was set. */
  compareAndSet: (key, expected, value, ttlSecs = 0) =>
    raw.compareAndSet(key, expected === undefined ? undefined : bytes(expected), bytes(value), ttlSecs),
};
