// Write Sluice mail-filter plugins in JavaScript, for componentize-js (sluice:filter@0.1.4).
//
//   import { definePlugin, reject } from './sluice-plugin.js';
//   export const hooks = definePlugin({
//     name: 'no-reply-guard',
//     checkRecipient(session, envelope, recipient) {
//       if (localPart(recipient.address) === 'noreply') return reject(550, '5.1.1', 'No mail here');
//     },
//   });
//
// Implement only the hooks you need: Sluice calls exactly those, and every other hook answers
// "no opinion". A hook may return undefined for "no opinion". `init(config)` (optional) reads
// and checks the settings once per transaction; what it returns is passed to every hook as its
// last argument, and what it throws refuses the plugin at load with your message.
//
// `view` is the message of checkMessage as Sluice parsed it (parts, decoded text,
// attachments, links); `./sluice-plugin-kv.js` and `./sluice-plugin-dns.js` wrap the `kv` and
// `dns` capabilities. Types: `sluice-plugin.d.ts`.
import { log as hostLog, getConfig, configKeys, now } from 'sluice:filter/host@0.1.4';
import * as messageView from 'sluice:filter/message-view@0.1.4';

// --- verdicts ---------------------------------------------------------------------------------

/** No opinion: the next plugin decides. Returning undefined means the same. */
export const CONTINUE = Object.freeze({ tag: 'continue' });
/** Accept at this stage; the plugins after this one are not called for it. */
export const accept = () => ({ tag: 'accept' });
/** Refuse permanently: reject(550, '5.7.1', 'not welcome'). */
export const reject = (code, enhanced, text) => ({ tag: 'reject', val: { code, enhanced, text } });
/** Refuse temporarily: tempfail(451, '4.7.1', 'try again later'). */
export const tempfail = (code, enhanced, text) => ({ tag: 'tempfail', val: { code, enhanced, text } });
/** Accept and drop silently. */
export const discard = () => ({ tag: 'discard' });
/** Accept and hold in quarantine with `reason`. */
export const quarantine = (reason) => ({ tag: 'quarantine', val: String(reason) });

/** What checkMessage returns to edit headers or add spam-score symbols:
 *  messageVerdict().addHeader('X-Checked', 'yes').symbol('NAME', 1.5, 'why') */
export function messageVerdict(verdict = CONTINUE) {
  const mv = {
    verdict,
    addHeaders: [],
    removeHeaders: [],
    symbols: [],
    withVerdict(v) { mv.verdict = v; return mv; },
    addHeader(name, value) { mv.addHeaders.push({ name: String(name), value: String(value) }); return mv; },
    removeHeader(name) { mv.removeHeaders.push(String(name)); return mv; },
    symbol(name, score, detail = '') { mv.symbols.push({ name: String(name), score: Number(score), detail: String(detail) }); return mv; },
  };
  return mv;
}

const TAGS = ['continue', 'accept', 'reject', 'tempfail', 'discard', 'quarantine'];
const SHAPES = "undefined (no opinion), CONTINUE, accept(), reject(550, '5.7.1', 'text'), tempfail(451, '4.7.1', 'text'), discard() or quarantine('reason')";

function verdict(value, hook) {
  if (value === undefined || value === null) return CONTINUE;
  if (typeof value === 'string' && ['continue', 'accept', 'discard'].includes(value)) return { tag: value };
  if (typeof value === 'object' && TAGS.includes(value.tag)) {
    if ((value.tag === 'reject' || value.tag === 'tempfail')
        && !(value.val && Number.isInteger(value.val.code) && typeof value.val.text === 'string')) {
      throw new Error(`${hook} returned a ${value.tag} without a reply: use ${value.tag}(code, enhanced, text)`);
    }
    if (value.tag === 'reject' || value.tag === 'tempfail') {
      return { tag: value.tag, val: { code: value.val.code, enhanced: String(value.val.enhanced ?? ''), text: value.val.text } };
    }
    return value;
  }
  throw new Error(`${hook} returned ${JSON.stringify(value)}, which is not a verdict: return ${SHAPES}`);
}

function messageResult(value) {
  if (value && typeof value === 'object' && Array.isArray(value.addHeaders)) {
    return {
      verdict: verdict(value.verdict, 'checkMessage'),
      addHeaders: value.addHeaders,
      removeHeaders: value.removeHeaders ?? [],
      symbols: value.symbols ?? [],
    };
  }
  return { verdict: verdict(value, 'checkMessage'), addHeaders: [], removeHeaders: [], symbols: [] };
}

// --- settings ---------------------------------------------------------------------------------

/** A setting that is missing or has the wrong type or value; the message names the key, in
 *  the Rust SDK's words: "setting `key`: expected a number, found the string \"x\"". */
export class ConfigError extends Error {
  constructor(key, problem) {
    super(`setting \`${key}\`: ${problem}`);
    this.key = key;
    this.problem = problem;
  }
}

function describe(v) {
  switch (v.tag) {
    case 'text': return `the string ${JSON.stringify(v.val)}`;
    case 'integer': case 'float': return `the number ${v.val}`;
    case 'boolean': return String(v.val);
    default: return 'a list';
  }
}

function typed(key, fallback, tags, expected, convert = (x) => x) {
  const v = getConfig(key);
  if (v === undefined || v === null) return fallback;
  if (!tags.includes(v.tag)) throw new ConfigError(key, `expected ${expected}, found ${describe(v)}`);
  return convert(v.val);
}

/** The operator's settings for this plugin ([plugin.NAME.config]). */
export const config = {
  keys: () => configKeys(),
  raw: (key) => getConfig(key),
  str: (key, fallback) => typed(key, fallback, ['text'], 'a string'),
  int: (key, fallback) => typed(key, fallback, ['integer'], 'a whole number', Number),
  float: (key, fallback) => typed(key, fallback, ['float', 'integer'], 'a number', Number),
  bool: (key, fallback) => typed(key, fallback, ['boolean'], 'true or false'),
  list: (key, fallback) => typed(key, fallback, ['text-list'], 'a list', (l) => [...l]),
  require(key, kind = 'str') {
    const v = config[kind](key);
    if (v === undefined) throw new ConfigError(key, 'is required');
    return v;
  },
  denyUnknown(known) {
    for (const key of configKeys()) {
      if (!known.includes(key)) throw new ConfigError(key, `unknown setting; known settings are: ${known.join(', ')}`);
    }
  },
};

// --- addresses, messages, logging -------------------------------------------------------------

/** The part before the last @. */
export const localPart = (a) => (a.lastIndexOf('@') < 0 ? a : a.slice(0, a.lastIndexOf('@')));
/** The part after the last @, lower case. */
export const domain = (a) => (a.lastIndexOf('@') < 0 ? '' : a.slice(a.lastIndexOf('@') + 1).toLowerCase());
/** True when the address's domain is `name`, ignoring case. */
export const domainIs = (a, name) => domain(a) === name.toLowerCase().replace(/\.$/, '');
/** The first value of header field `name` (case-insensitive), or undefined. */
export function header(message, name) {
  const lower = name.toLowerCase();
  const h = message.headers.find((x) => x.name.toLowerCase() === lower);
  return h ? h.value : undefined;
}
/** Every value of header field `name`. */
export const headers = (message, name) => message.headers.filter((x) => x.name.toLowerCase() === name.toLowerCase()).map((x) => x.value);
/** The message body (after the header section) as text. */
export function bodyText(message) {
  const text = new TextDecoder().decode(message.raw);
  const end = text.indexOf('\r\n\r\n');
  return end < 0 ? '' : text.slice(end + 4);
}
/** Logging, tagged by Sluice with the plugin's name and the transaction id. */
export const log = {
  debug: (t) => hostLog('debug', String(t)),
  info: (t) => hostLog('info', String(t)),
  warn: (t) => hostLog('warn', String(t)),
  error: (t) => hostLog('error', String(t)),
};
/** The host's wall clock, milliseconds since the Unix epoch. */
export const nowMs = () => Number(now());

// --- the parsed message (WIT 0.1.3) -----------------------------------------------------------

const num = (x) => (typeof x === 'bigint' ? Number(x) : x);
const CHUNK = 1 << 20;

/** The message of checkMessage, parsed once by Sluice for every plugin of the transaction (on
 *  the first call; a plugin that never calls these pays nothing). Outside checkMessage there is
 *  no message: lists are empty, options undefined. Sizes and offsets are Numbers. Bounds: 1,000
 *  parts, nesting 32 deep, 1 MiB of decoded text per part, 1,000 links, 1 MiB per slice;
 *  `limitsHit()` names those that cut what the plugin read (the readable text and links only
 *  once it read them: call it after the reads it is about). */
export const view = {
  /** The parts tree, depth first; index 0 is the message itself. */
  parts: () => messageView.parts().map((p) => ({
    ...p, size: num(p.size), rawOffset: num(p.rawOffset), rawLength: num(p.rawLength),
  })),
  /** The decoded text of a text or HTML part (HTML as markup), or undefined. */
  text: (part) => messageView.text(part) ?? undefined,
  /** What a reader sees of a text or HTML part (HTML without markup), or undefined. */
  visibleText: (part) => messageView.visibleText(part) ?? undefined,
  /** The readable text: text parts that are not attachments, HTML made text. */
  bodyText: () => messageView.bodyText(),
  /** The attachments without their bytes: part, name, declaredType, sniffedType, size, sha256. */
  attachments: () => messageView.attachments().map((a) => ({ ...a, size: num(a.size) })),
  /** Up to `length` decoded bytes of a part from `offset` (1 MiB at most), or undefined. */
  attachmentBytes: (part, offset = 0, length = CHUNK) => messageView.attachmentBytes(part, BigInt(offset), length) ?? undefined,
  /** The whole decoded content of an attachment, read 1 MiB at a time. */
  readAttachment(attachment) {
    const out = new Uint8Array(attachment.size);
    let at = 0;
    while (at < attachment.size) {
      const chunk = messageView.attachmentBytes(attachment.part, BigInt(at), CHUNK);
      if (!chunk || chunk.length === 0) break;
      out.set(chunk, at);
      at += chunk.length;
    }
    return out.subarray(0, at);
  },
  /** The links of the text and HTML parts (hrefs included), each URL once: url, host,
   *  registrableDomain (Public Suffix List; undefined for an IP or a public suffix), part. */
  links: () => messageView.links(),
  /** The decoded From and To (mailboxes: name, address), subject, and date (ms, or undefined). */
  summary() {
    const s = messageView.summary();
    return { ...s, date: s.date === undefined || s.date === null ? undefined : num(s.date) };
  },
  /** Bytes of the raw message. */
  rawSize: () => num(messageView.rawSize()),
  /** Up to `length` bytes of the raw message from `offset` (1 MiB at most). */
  rawSlice: (offset, length) => messageView.rawSlice(BigInt(offset), length),
  /** The bounds that cut the view short: 'parts', 'depth', 'text', 'links'. */
  limitsHit: () => messageView.limitsHit(),
};

// --- the plugin -------------------------------------------------------------------------------

const HOOKS = ['verifySender', 'checkRecipient', 'checkMessage', 'onDelivery', 'renderBounce'];

/** The `hooks` export for `plugin` ({ name, version?, init?, verifySender?, … }). */
export function definePlugin(plugin) {
  if (!plugin || typeof plugin.name !== 'string' || plugin.name === '') {
    throw new Error('definePlugin: give the plugin a name: definePlugin({ name: "my-plugin", … })');
  }
  const unknown = Object.keys(plugin).filter((k) => !['name', 'version', 'init', ...HOOKS].includes(k));
  if (unknown.length) {
    throw new Error(`definePlugin: unknown member(s) ${unknown.join(', ')}; hooks are ${HOOKS.join(', ')}`);
  }
  let settings;
  let ready = false;
  const state = () => {
    // Built once per component instance, that is, per transaction.
    if (!ready) {
      settings = plugin.init ? plugin.init(config) : undefined;
      ready = true;
    }
    return settings;
  };
  const has = (h) => typeof plugin[h] === 'function';
  return {
    describe() {
      return {
        name: plugin.name,
        version: plugin.version ?? '0.1.0',
        hooks: Object.fromEntries(HOOKS.map((h) => [h, has(h)])),
      };
    },
    validateConfig() {
      try {
        if (plugin.init) plugin.init(config);
      } catch (e) {
        throw String(e instanceof Error ? e.message : e);
      }
    },
    verifySender(session, sender) {
      return has('verifySender') ? verdict(plugin.verifySender(session, sender, state()), 'verifySender') : CONTINUE;
    },
    checkRecipient(session, envelope, recipient) {
      return has('checkRecipient') ? verdict(plugin.checkRecipient(session, envelope, recipient, state()), 'checkRecipient') : CONTINUE;
    },
    checkMessage(session, envelope, message) {
      return has('checkMessage') ? messageResult(plugin.checkMessage(session, envelope, message, state())) : messageResult(undefined);
    },
    onDelivery(report) {
      if (has('onDelivery')) plugin.onDelivery(report, state());
    },
    renderBounce(request) {
      return has('renderBounce') ? (plugin.renderBounce(request, state()) ?? undefined) : undefined;
    },
  };
}
