// Test plugin in JavaScript: reads the parsed message (`view`), keeps state (the kv wrapper)
// and looks things up (the dns wrapper) through the SDK, and reports what it got in header
// fields of checkMessage (tests/it/message_view.rs).
// sluice-world: plugin-kv-dns
import { definePlugin, messageVerdict, view } from '../../../plugin-sdk-js/sluice-plugin.js';
import { kv } from '../../../plugin-sdk-js/sluice-plugin-kv.js';
import { dns, DnsError } from '../../../plugin-sdk-js/sluice-plugin-dns.js';

function lookup(name) {
  try {
    return dns.a(name).join(',');
  } catch (e) {
    if (e instanceof DnsError) return e.kind;
    throw e;
  }
}

export const hooks = definePlugin({
  name: 'js-probe',
  checkMessage() {
    const parts = view.parts().map((p) => `${p.contentType}@${p.depth}`).join(' ');
    const attachments = view.attachments()
      .map((a) => `${a.name}|${a.sniffedType ?? ''}|${a.size}|${a.sha256.slice(0, 12)}|${view.readAttachment(a).length}`)
      .join(' ');
    const links = view.links().map((l) => `${l.host}=${l.registrableDomain ?? ''}`).join(' ');
    const words = view.bodyText().split(/\s+/).filter((w) => w.length > 0);
    const count = kv.increment('n', 1, 3600);
    const first = kv.compareAndSet('once', undefined, 'seen', 3600);
    return messageVerdict()
      .addHeader('X-Js-Parts', parts)
      .addHeader('X-Js-Attachments', attachments)
      .addHeader('X-Js-Links', links)
      .addHeader('X-Js-Subject', view.summary().subject ?? '')
      .addHeader('X-Js-Text', words[0] ?? '')
      .addHeader('X-Js-Kv', `${count}/${kv.counter('n')}/${first ? 'True' : 'False'}/${kv.getText('once')}`)
      .addHeader('X-Js-Dns', `${lookup('listed.test')} ${lookup('missing.test')}`);
  },
});
