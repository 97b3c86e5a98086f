"""Sluice plugin in Python: refuse messages that carry dangerous attachments.

An attachment is dangerous when its file name has a blocked extension, its declared MIME type is
a blocked type, or its first bytes show a blocked type whatever it declares (an .exe sent as
`application/pdf`); parts nested inside attached messages (message/rfc822) are inspected too.

The message is not parsed here: Sluice parses it once for every plugin of the transaction
(`sluice_plugin.view`, WIT 0.1.3) and hands over the parts tree, with file names decoded
(RFC 2231 and 2047) and each attachment's sniffed type. The plugin only compares.

Settings (all optional):
  blocked_extensions  list of extensions without the dot   (default: exe, scr, bat, ...)
  blocked_types       list of MIME types                   (default: application/x-msdownload, ...)
  action              "reject" (default) or "quarantine"
"""
from sluice_plugin import ConfigError, MessageVerdict, Plugin, hooks_for, info, quarantine, reject
from sluice_plugin import view

DEFAULT_EXTENSIONS = [
    "exe", "scr", "com", "pif", "bat", "cmd", "vbs", "vbe", "js", "jse", "wsf", "wsh",
    "msi", "msp", "hta", "cpl", "jar", "lnk", "ps1", "reg", "iso", "img",
]
DEFAULT_TYPES = [
    "application/x-msdownload", "application/x-dosexec", "application/x-msdos-program",
    "application/x-ms-shortcut", "application/hta", "application/x-sh",
    "application/vnd.microsoft.portable-executable",
]
KNOWN = ["blocked_extensions", "blocked_types", "action"]


def inside_attached_message(part, parts):
    """True when a container above `part` is an attached message."""
    parent = part.parent
    while parent is not None:
        if parts[parent].kind == view.PartKind.MESSAGE:
            return True
        parent = parts[parent].parent
    return False


def find_dangerous(extensions, mime_types):
    """A description of the first dangerous part of the message, or None."""
    if {"parts", "depth"} & set(view.limits_hit()):
        return "attachments nested too deeply or too many parts to inspect"
    parts = view.parts()
    sniffed = {a.part: a.sniffed_type for a in view.attachments()}
    for part in parts:
        found = None
        name = part.filename
        ext = name.rsplit(".", 1)[-1].lower() if name and "." in name else ""
        if ext in extensions:
            found = f"attachment {name!r} has a blocked file type (.{ext})"
        elif part.content_type in mime_types:
            found = f"attachment of blocked type {part.content_type}"
        elif sniffed.get(part.index) in mime_types:
            found = f"attachment {name or 'without a name'!r} is {sniffed[part.index]}"
        if found:
            if inside_attached_message(part, parts):
                found += " (inside an attached message)"
            return found
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
        found = find_dangerous(self.extensions, self.mime_types)
        if found is None:
            return None
        info(f"{session.transaction_id}: {found}")
        if self.action == "quarantine":
            verdict = quarantine(found)
        else:
            verdict = reject(550, "5.7.1",
                             "Message refused: it carries an attachment type we do not accept")
        return MessageVerdict(verdict).symbol("DANGEROUS_ATTACHMENT", 0.0, found)


Hooks = hooks_for(Attachments, name="python-attachments", version="0.3.0")
