// Compiled (never run) by the test suite with `tsc --noEmit --strict`: a plugin written against
// the SDK's declarations, so that the .d.ts files and the examples in the README agree.
import { definePlugin, messageVerdict, reject, view, header, type Attachment } from './sluice-plugin.js';
import { kv } from './sluice-plugin-kv.js';
import { dns, DnsError } from './sluice-plugin-dns.js';

interface Settings { blocked: string[]; }

export const hooks = definePlugin<Settings>({
  name: 'typed',
  init(config) {
    config.denyUnknown(['blocked']);
    return { blocked: config.list('blocked', []) ?? [] };
  },
  checkRecipient(_session, _envelope, recipient, settings) {
    if (settings.blocked.includes(recipient.address)) return reject(550, '5.1.1', 'No mail here');
    return undefined;
  },
  checkMessage(session, _envelope, message) {
    const risky: Attachment[] = view.attachments().filter((a) => a.sniffedType === 'application/x-msdownload');
    const bytes: Uint8Array = risky.length ? view.readAttachment(risky[0]) : new Uint8Array();
    const domains: string[] = view.links().map((l) => l.registrableDomain ?? l.host);
    const subject: string = view.summary().subject ?? header(message, 'Subject') ?? '';
    const seen: number = kv.increment(`seen:${session.clientIp}`, 1, 3600);
    let listed = false;
    try {
      listed = dns.a('2.0.0.127.zen.example').length > 0;
    } catch (e) {
      if (!(e instanceof DnsError && e.kind === 'nxdomain')) throw e;
    }
    return messageVerdict()
      .addHeader('X-Typed', `${subject} ${bytes.length} ${domains.length} ${seen} ${listed}`)
      .symbol('TYPED', view.limitsHit().length);
  },
});
