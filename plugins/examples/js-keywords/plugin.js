// Sluice plugin in JavaScript: a keyword rule set read from the operator's configuration.
//
// Settings (all optional):
//   blocked_words  list of words; a message whose Subject contains one is refused (550 5.7.1)
//   flagged_words  list of words; each one found in the Subject or body adds `score`
//   score          number added per flagged word (default 1.0)
//   header         name of the header added to every message checked (default X-Keywords-Checked)
import { log, getConfig, configKeys } from 'sluice:filter/host@0.1.1';

const KNOWN = ['blocked_words', 'flagged_words', 'score', 'header'];

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
  let score = 1.0;
  const s = getConfig('score');
  if (s !== undefined && s !== null) {
    if (s.tag !== 'float' && s.tag !== 'integer') throw 'setting `score`: expected a number';
    score = Number(s.val);
  }
  let header = 'X-Keywords-Checked';
  const h = getConfig('header');
  if (h !== undefined && h !== null) {
    if (h.tag !== 'text' || !/^[!-9;-~]+$/.test(h.val)) throw 'setting `header`: expected a header field name';
    header = h.val;
  }
  return { blocked: textList('blocked_words'), flagged: textList('flagged_words'), score, header };
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
  checkMessage(session, _envelope, message) {
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
