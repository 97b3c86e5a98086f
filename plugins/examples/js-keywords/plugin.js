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
// The words are looked for in the decoded Subject and the message's readable text as Sluice
// parsed it (`view`, WIT 0.1.3): base64 and quoted-printable parts are decoded, HTML is read as
// the text a reader sees, and the plugin parses nothing itself.
//
// The repeat-sender count is kept between transactions with the `kv` capability (WIT 0.1.2):
// the operator grants it with `capabilities = ["kv"]`, and the plugin is built against the
// `plugin-kv` world. Written with the JavaScript SDK (plugin-sdk-js).
import { ConfigError, definePlugin, domain, log, messageVerdict, reject, view } from '../../../plugin-sdk-js/sluice-plugin.js';
import { kv } from '../../../plugin-sdk-js/sluice-plugin-kv.js';

const DAY_SECS = 86400;

export const hooks = definePlugin({
  name: 'js-keywords',
  version: '0.3.0',

  init(config) {
    config.denyUnknown(['blocked_words', 'flagged_words', 'score', 'header', 'repeat_after', 'repeat_score']);
    const words = (key) => config.list(key, []).map((w) => w.toLowerCase()).filter((w) => w.length > 0);
    const repeatAfter = config.int('repeat_after', 3);
    if (repeatAfter < 0) throw new ConfigError('repeat_after', 'expected a whole number, 0 or more');
    const name = config.str('header', 'X-Keywords-Checked');
    if (!/^[!-9;-~]+$/.test(name)) throw new ConfigError('header', 'expected a header field name');
    return {
      blocked: words('blocked_words'),
      flagged: words('flagged_words'),
      score: config.float('score', 1.0),
      header: name,
      repeatAfter,
      repeatScore: config.float('repeat_score', 2.0),
    };
  },

  checkMessage(session, envelope, message, cfg) {
    const subject = (view.summary().subject ?? '').toLowerCase();
    const blocked = cfg.blocked.find((w) => subject.includes(w));
    if (blocked !== undefined) {
      log.info(`${session.transactionId}: blocked word "${blocked}" in subject`);
      return messageVerdict(reject(550, '5.7.1', 'Message refused by content rules'))
        .symbol('JS_BLOCKED_WORD', 0, blocked);
    }
    const text = (subject + '\n' + view.bodyText()).toLowerCase();
    const found = cfg.flagged.filter((w) => text.includes(w));
    const out = messageVerdict().addHeader(cfg.header, found.length ? `flagged=${found.length}` : 'clean');
    for (const w of found) out.symbol('JS_FLAGGED_WORD', cfg.score, w);
    const from = domain(envelope.sender.address);
    if (cfg.repeatAfter > 0 && from !== '') {
      const key = `flagged:${from}`;
      const before = kv.counter(key);
      if (before >= cfg.repeatAfter) {
        out.symbol('JS_REPEAT_SENDER', cfg.repeatScore, `${before} flagged messages from ${from} today`);
      }
      if (found.length) kv.increment(key, 1, DAY_SECS);
    }
    return out;
  },
});
