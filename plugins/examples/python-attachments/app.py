"""Sluice plugin in Python: refuse messages that carry dangerous attachments.

Uses Python's own `email` package inside the sandbox. An attachment is dangerous when its
file name has a blocked extension or its MIME type is a blocked type; parts nested inside
attached messages (message/rfc822) are inspected too.

Settings (all optional):
  blocked_extensions  list of extensions without the dot   (default: exe, scr, bat, ...)
  blocked_types       list of MIME types                   (default: application/x-msdownload, ...)
  action              "reject" (default) or "quarantine"
"""
import email
import email.policy
# componentize-py bundles only modules imported at build time; `email` imports these lazily.
import email.parser  # noqa: F401
import email.feedparser  # noqa: F401
import email.message  # noqa: F401

from sluice_plugin import ConfigError, MessageVerdict, Plugin, hooks_for, info, quarantine, reject

DEFAULT_EXTENSIONS = [
    "exe", "scr", "com", "pif", "bat", "cmd", "vbs", "vbe", "js", "jse", "wsf", "wsh",
    "msi", "msp", "hta", "cpl", "jar", "lnk", "ps1", "reg", "iso", "img",
]
DEFAULT_TYPES = [
    "application/x-msdownload", "application/x-dosexec", "application/x-msdos-program",
    "application/x-ms-shortcut", "application/hta", "application/x-sh",
]
KNOWN = ["blocked_extensions", "blocked_types", "action"]


def find_dangerous(msg, extensions, mime_types, depth=0):
    """Returns a description of the first dangerous part, or None. Recurses into attached
    messages (bounded depth, so a hostile nesting cannot exhaust the stack)."""
    if depth > 10:
        return "attachments nested too deeply"
    for part in msg.walk():
        ctype = part.get_content_type().lower()
        name = part.get_filename()
        if name:
            ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
            if ext in extensions:
                return f"attachment {name!r} has a blocked file type (.{ext})"
        if ctype in mime_types:
            return f"attachment of blocked type {ctype}"
        if ctype == "message/rfc822" and part.is_multipart():
            for inner in part.get_payload():
                found = find_dangerous(inner, extensions, mime_types, depth + 1)
                if found:
                    return found + " (inside an attached message)"
    return None


class Attachments(Plugin):
    def __init__(self, config):
        config.deny_unknown(KNOWN)
        self.extensions = {e.strip().lower().lstrip(".")
                           for e in config.list("blocked_extensions", DEFAULT_EXTENSIONS)}
        self.mime_types = {t.strip().lower()
                           for t in config.list("blocked_types", DEFAULT_TYPES)}
        self.action = config.str("action", "reject")
        if self.action not in ("reject", "quarantine"):
            raise ConfigError("action", 'expected "reject" or "quarantine"')

    def check_message(self, session, envelope, message):
        msg = email.message_from_bytes(bytes(message.raw), policy=email.policy.compat32)
        found = find_dangerous(msg, self.extensions, self.mime_types)
        if found is None:
            return None
        info(f"{session.transaction_id}: {found}")
        if self.action == "quarantine":
            verdict = quarantine(found)
        else:
            verdict = reject(550, "5.7.1",
                             "Message refused: it carries an attachment type we do not accept")
        return MessageVerdict(verdict).symbol("DANGEROUS_ATTACHMENT", 0.0, found)


Hooks = hooks_for(Attachments, name="python-attachments", version="0.2.0")
