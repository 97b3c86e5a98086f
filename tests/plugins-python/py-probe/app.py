"""Test plugin in Python: reads the parsed message (`sluice_plugin.view`), keeps state
(`sluice_plugin.kv`) and looks things up (`sluice_plugin.dns`) through the SDK, and reports
what it got in header fields of `check_message` (tests/it/message_view.rs).
"""
# sluice-world: plugin-kv-dns
from sluice_plugin import MessageVerdict, Plugin, dns, hooks_for, kv, view


def report(prefix):
    parts = " ".join(f"{p.content_type}@{p.depth}" for p in view.parts())
    attachments = " ".join(
        f"{a.name}|{a.sniffed_type or ''}|{a.size}|{a.sha256[:12]}|{len(view.read_attachment(a))}"
        for a in view.attachments())
    links = " ".join(f"{l.host}={l.registrable_domain or ''}" for l in view.links())
    summary = view.summary()
    words = view.body_text().split()
    count = kv.increment("n", 1, 3600)
    first = kv.compare_and_set("once", None, "seen", 3600)
    try:
        listed = ",".join(dns.a("listed.test"))
    except dns.DnsError as e:
        listed = e.kind
    try:
        missing = ",".join(dns.a("missing.test"))
    except dns.DnsError as e:
        missing = e.kind
    return (MessageVerdict()
            .add_header(f"X-{prefix}-Parts", parts)
            .add_header(f"X-{prefix}-Attachments", attachments)
            .add_header(f"X-{prefix}-Links", links)
            .add_header(f"X-{prefix}-Subject", summary.subject or "")
            .add_header(f"X-{prefix}-Text", words[0] if words else "")
            .add_header(f"X-{prefix}-Kv", f"{count}/{kv.counter('n')}/{first}/{kv.get_text('once')}")
            .add_header(f"X-{prefix}-Dns", f"{listed} {missing}"))


class Probe(Plugin):
    def check_message(self, session, envelope, message):
        return report("Py")


Hooks = hooks_for(Probe, name="py-probe")
