// DNS lookups through Sluice's resolver: the `dns` capability (WIT 0.1.2), for componentize-js.
//
//   import { dns, DnsError } from './sluice-plugin-dns.js';
//   try { const codes = dns.a('2.0.0.127.zen.example'); /* listed */ }
//   catch (e) { if (e instanceof DnsError && e.kind === 'nxdomain') { /* not listed */ } }
//
// Build against a world that imports it (`// sluice-world: plugin-dns` or `-n plugin-dns`);
// the operator grants it with capabilities = ["dns"] in [plugin.NAME].
import * as raw from 'sluice:filter/dns@0.1.4';

/** A lookup without records: `kind` is 'nxdomain' (for a blocklist: not listed),
 *  'no-records', 'temporary' (no answer in time) or 'invalid'; `detail` the host's words. */
export class DnsError extends Error {
  constructor(name, kind, detail = '') {
    super(`${name}: ${kind}${detail ? ` (${detail})` : ''}`);
    this.name = 'DnsError';
    this.lookup = name;
    this.kind = kind;
    this.detail = detail;
  }
}

function lookup(fn, name) {
  try {
    return fn(name);
  } catch (e) {
    // componentize-js throws the WIT error value ({ tag, val }), possibly wrapped in `payload`.
    const why = e && (e.payload ?? e);
    if (why && typeof why.tag === 'string') throw new DnsError(name, why.tag, why.val ?? '');
    throw e;
  }
}

export const dns = {
  /** IPv4 addresses of `name`, as text. */
  a: (name) => lookup(raw.lookupA, name),
  /** IPv6 addresses of `name`, as text. */
  aaaa: (name) => lookup(raw.lookupAaaa, name),
  /** TXT records of `name`, each one's strings joined. */
  txt: (name) => lookup(raw.lookupTxt, name),
  /** PTR names of an IPv4 or IPv6 address. */
  ptr: (address) => lookup(raw.lookupPtr, address),
  /** Mail exchangers of `name`: [{ preference, exchange }], most preferred first. */
  mx: (name) => lookup(raw.lookupMx, name),
};
