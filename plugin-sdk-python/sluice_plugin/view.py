"""The message of `check_message`, parsed by Sluice (WIT 0.1.3, `message-view`).

Sluice parses the message once for every plugin of the transaction, on the first call here;
a plugin that never calls these pays nothing. No capability is needed. Call them from
`check_message` (outside it there is no message: lists are empty and options None)::

    from sluice_plugin import view

    for a in view.attachments():          # name, declared and sniffed type, size, sha256
        if a.sniffed_type == "application/x-msdownload": ...
    for link in view.links():             # url, host, registrable_domain, part
        if link.registrable_domain == "example.co.uk": ...
    text = view.body_text()               # the readable text, HTML made text
    s = view.summary()                    # from, to (mailboxes), subject, date (ms)

Bounds (past them the view is cut short and `limits_hit()` says which): 1,000 parts,
nesting 32 deep, 1 MiB of decoded text per part, 1,000 links, 1 MiB per slice.
"""

from wit_world.imports import message_view as _mv
from wit_world.imports.message_view import PartKind  # noqa: F401  (re-exported)

__all__ = [
    "PartKind", "parts", "text", "visible_text", "body_text", "attachments",
    "attachment_bytes", "read_attachment", "links", "summary", "raw_size", "raw_slice",
    "limits_hit",
]

_CHUNK = 1 << 20


def parts():
    """The parts tree, depth first; index 0 is the message itself. Each part has `index`,
    `parent`, `depth`, `kind` (a PartKind), `content_type`, `params` (name, value) pairs,
    `disposition`, `filename`, `charset`, `transfer_encoding`, `size`, `raw_offset`,
    `raw_length` and `attachment`."""
    return _mv.parts()


def text(part):
    """The decoded text of a text or HTML part (HTML as markup), or None."""
    return _mv.text(part)


def visible_text(part):
    """What a reader sees of a text or HTML part (HTML without markup), or None."""
    return _mv.visible_text(part)


def body_text():
    """The message's readable text: its text parts that are not attachments, HTML made text
    where there is no plain alternative, separated by blank lines."""
    return _mv.body_text()


def attachments():
    """The attachments, without their bytes: `part`, `name`, `declared_type`,
    `sniffed_type` (from the first bytes, or None), `size`, `sha256`."""
    return _mv.attachments()


def attachment_bytes(part, offset=0, length=_CHUNK):
    """Up to `length` decoded bytes of a part from `offset` (1 MiB at most), or None."""
    data = _mv.attachment_bytes(part, offset, length)
    return None if data is None else bytes(data)


def read_attachment(attachment):
    """The whole decoded content of an attachment, read 1 MiB at a time."""
    out = bytearray()
    while len(out) < attachment.size:
        chunk = _mv.attachment_bytes(attachment.part, len(out), _CHUNK)
        if not chunk:
            break
        out += chunk
    return bytes(out)


def links():
    """The links of the text and HTML parts (hrefs included), each URL once: `url`, `host`,
    `registrable_domain` (by the Public Suffix List, or None) and `part`."""
    return _mv.links()


def summary():
    """The decoded From and To (lists of mailboxes with `name` and `address`), `subject` and
    `date` (milliseconds since the Unix epoch, or None)."""
    return _mv.summary()


def raw_size():
    """Bytes of the raw message."""
    return _mv.raw_size()


def raw_slice(offset, length):
    """Up to `length` bytes of the raw message from `offset` (1 MiB at most)."""
    return bytes(_mv.raw_slice(offset, length))


def limits_hit():
    """The bounds that cut what this plugin read (`parts`, `depth`, `text`, `links`); [] when
    nothing was cut. `text` of `body_text()` and `links` are checked only once they were read:
    call it after the reads it is about."""
    return list(_mv.limits_hit())
