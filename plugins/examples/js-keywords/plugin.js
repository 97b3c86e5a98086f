// Sluice plugin in JavaScript: a keyword rule set read from the operator's configuration.
// sluice-world: plugin-kv
//
// Settings (all optional):
//   blocked_words  list of words; a message whose Subject contains one is refused (550 5.7.1)
//   flagged_words  list of words; each one found in the Subject or body adds `score`
//   score          number added per flagged word (default 1.0)
//   header         name of the header added to every message checked (default X-Keywords-Checked)
//   repeat_after   flagged messages from one sender domain within a day after which each
//                  further message from it adds `repeat_score` (default 3; 0 turns it off)
//   repeat_score   number added by JS_REPEAT_SENDER (default 2.0)
//
// The repeat-sender count is kept between transactions with the `kv` capability (WIT 0.1.2):
// the operator grants it with `capabilities = ["kv"]`, and the plugin is built against the
// `plugin-kv` world.
import { log, getConfig, configKeys } from 'sluice:filter/host@0.1.2';
import { get, increment } from 'sluice:filter/kv@0.1.2';

const KNOWN = ['blocked_words', 'flagged_words', 'score', 'header', 'repeat_after', 'repeat_score'];
const DAY_SECS = 86400;

function number(key, fallback) {
  const v = getConfig(key);
  if (v === undefined || v === null) return fallback;
  if (v.tag !== 'float' && v.tag !== 'integer') throw `setting \`${key}\`: expected a number`;
  return Number(v.val);
}

function textList(key) {
  const v = getConfig(key);
  if (v === undefined || v === null) return [];
  if (v.tag !== 'text-list') throw `setting \`${key}\`: expected a list of strings`;
  return v.val.map((w) => w.toLowerCase()).filter((w) => w.length > 0);
}

function settings() {
  for (const key of configKeys()) {
    if (!KNOWN.includes(key)) {
      throw `setting \`${key}\`: unknown setting; known settings are: ${KNOWN.join(', ')}`;
    }
  }
  const score = number('score', 1.0);
  const repeatAfter = number('repeat_after', 3);
  if (!Number.isInteger(repeatAfter) || repeatAfter < 0) throw 'setting `repeat_after`: expected a whole number, 0 or more';
  const repeatScore = number('repeat_score', 2.0);
  let header = 'X-Keywords-Checked';
  const h = getConfig('header');
  if (h !== undefined && h !== null) {
    if (h.tag !== 'text' || !/^[!-9;-~]+$/.test(h.val)) throw 'setting `header`: expected a header field name';
    header = h.val;
  }
  return { blocked: textList('blocked_words'), flagged: textList('flagged_words'), score, header, repeatAfter, repeatScore };
}

// The sender's domain, lower case; '' for the null sender.
function senderDomain(envelope) {
  const at = envelope.sender.address.lastIndexOf('@');
  return at < 0 ? '' : envelope.sender.address.slice(at + 1).toLowerCase();
}

function headerValue(message, name) {
  const lower = name.toLowerCase();
  const h = message.headers.find((x) => x.name.toLowerCase() === lower);
  return h ? h.value : '';
}

const CONTINUE = { tag: 'continue' };

export const hooks = {
  describe() {
    return {
      name: 'js-keywords',
      version: '0.1.0',
      hooks: { verifySender: false, checkRecipient: false, checkMessage: true, onDelivery: false, renderBounce: false },
    };
  },
  validateConfig() {
    settings();
  },
  verifySender(_session, _sender) {
    return CONTINUE;
  },
  checkRecipient(_session, _envelope, _recipient) {
    return CONTINUE;
  },
  checkMessage(session, envelope, message) {
    const cfg = settings();
    const subject = headerValue(message, 'Subject').toLowerCase();
    for (const word of cfg.blocked) {
      if (subject.includes(word)) {
        log('info', `${session.transactionId}: blocked word "${word}" in subject`);
        return {
          verdict: { tag: 'reject', val: { code: 550, enhanced: '5.7.1', text: 'Message refused by content rules' } },
          addHeaders: [],
          removeHeaders: [],
          symbols: [{ name: 'JS_BLOCKED_WORD', score: 0, detail: word }],
        };
      }
    }
    const text = (subject + '\n' + new TextDecoder().decode(message.raw)).toLowerCase();
    const symbols = cfg.flagged
      .filter((w) => text.includes(w))
      .map((w) => ({ name: 'JS_FLAGGED_WORD', score: cfg.score, detail: w }));
    const domain = senderDomain(envelope);
    if (cfg.repeatAfter > 0 && domain !== '') {
      const key = `flagged:${domain}`;
      const before = Number(new TextDecoder().decode(get(key) ?? new Uint8Array()) || 0);
      if (before >= cfg.repeatAfter) {
        symbols.push({ name: 'JS_REPEAT_SENDER', score: cfg.repeatScore, detail: `${before} flagged messages from ${domain} today` });
      }
      if (symbols.some((x) => x.name === 'JS_FLAGGED_WORD')) {
        increment(key, 1n, DAY_SECS);
      }
    }
    return {
      verdict: CONTINUE,
      addHeaders: [{ name: cfg.header, value: symbols.length ? `flagged=${symbols.length}` : 'clean' }],
      removeHeaders: [],
      symbols,
    };
  },
  onDelivery(_report) {},
  renderBounce(_request) {
    return undefined;
  },
};
