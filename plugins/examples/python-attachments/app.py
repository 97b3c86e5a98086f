"""Sluice plugin in Python: refuse messages that carry dangerous attachments.

An attachment is dangerous when its file name has a blocked extension or its MIME type is a
blocked type; parts nested inside attached messages (message/rfc822) are inspected too.

Only the header block of each MIME part is parsed (by Python's `email` package); the parts are
found by their boundary lines with `bytes.find`, which runs as compiled code inside the
interpreter. Parsing the whole message with `email.message_from_bytes` reads every body line
in interpreted Python (see README.md for what each costs).

Settings (all optional):
  blocked_extensions  list of extensions without the dot   (default: exe, scr, bat, ...)
  blocked_types       list of MIME types                   (default: application/x-msdownload, ...)
  action              "reject" (default) or "quarantine"
"""
import email.policy
# componentize-py bundles only modules imported at build time; `email` imports these lazily.
import email.parser
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


HEADERS = email.parser.BytesHeaderParser(policy=email.policy.compat32)
# Bounds, so that a hostile message cannot make the scan expensive.
MAX_ATTACHED_DEPTH = 10
MAX_NESTING = 50
MAX_PARTS = 1000


def head_and_body(raw):
    """Splits a message or MIME part at the blank line that ends its header block."""
    if raw.startswith(b"\r\n"):
        return b"", raw[2:]
    if raw.startswith(b"\n"):
        return b"", raw[1:]
    ends = [(i, n) for i, n in ((raw.find(b"\r\n\r\n"), 4), (raw.find(b"\n\n"), 2)) if i >= 0]
    if not ends:
        return raw, b""
    i, n = min(ends)
    return raw[:i + n // 2], raw[i + n:]


def subparts(body, boundary):
    """The parts of a multipart body: what lies between its boundary lines (RFC 2046, 5.1.1),
    without the preamble and the epilogue."""
    delimiter = b"\n--" + boundary
    pieces = (b"\n" + body).split(delimiter, MAX_PARTS + 1)[1:]
    for piece in pieces[:MAX_PARTS]:
        if piece.startswith(b"--"):
            return  # the close delimiter
        line_end = piece.find(b"\n")
        if line_end < 0:
            return
        part = piece[line_end + 1:]
        # The line break before the next delimiter belongs to the delimiter.
        yield part[:-1] if part.endswith(b"\r") else part


def find_dangerous(raw, extensions, mime_types, attached=0, nesting=0):
    """Returns a description of the first dangerous part of `raw` (a message or a MIME part),
    or None. Recurses into multiparts and attached messages, with bounded depth."""
    if attached > MAX_ATTACHED_DEPTH or nesting > MAX_NESTING:
        return "attachments nested too deeply"
    head, body = head_and_body(raw)
    part = HEADERS.parsebytes(head)
    ctype = part.get_content_type().lower()
    name = part.get_filename()
    if name:
        ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        if ext in extensions:
            return f"attachment {name!r} has a blocked file type (.{ext})"
    if ctype in mime_types:
        return f"attachment of blocked type {ctype}"
    if ctype == "message/rfc822":
        found = find_dangerous(body, extensions, mime_types, attached + 1, nesting + 1)
        return found and found + " (inside an attached message)"
    if ctype.startswith("multipart/"):
        boundary = part.get_boundary()
        if not boundary:
            return None
        for sub in subparts(body, boundary.encode("ascii", "surrogateescape")):
            found = find_dangerous(sub, extensions, mime_types, attached, nesting + 1)
            if found:
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
        found = find_dangerous(bytes(message.raw), self.extensions, self.mime_types)
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


# A warm-up while the plugin is built: componentize-py snapshots the interpreter once this
# module has run, so what the first message would otherwise do in every fresh instance (the
# lazy imports of the `email` package, the regular expressions it compiles on first use) is
# done once, here, and is part of the snapshot each transaction starts from.
find_dangerous(
    b'Content-Type: multipart/mixed; boundary="b"\r\nSubject: warm-up\r\n\r\n'
    b'--b\r\nContent-Type: text/plain; charset="utf-8"\r\n\r\nhi\r\n'
    b'--b\r\nContent-Type: application/octet-stream; name="a.bin"\r\n'
    b'Content-Disposition: attachment; filename*=utf-8\'\'a%C3%A9.bin\r\n\r\nAA==\r\n--b--\r\n',
    {"exe"},
    {"application/x-msdownload"},
)
