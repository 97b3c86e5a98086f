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

from wit_world import exports
from wit_world.imports import host, types
from componentize_py_types import Err

DEFAULT_EXTENSIONS = [
    "exe", "scr", "com", "pif", "bat", "cmd", "vbs", "vbe", "js", "jse", "wsf", "wsh",
    "msi", "msp", "hta", "cpl", "jar", "lnk", "ps1", "reg", "iso", "img",
]
DEFAULT_TYPES = [
    "application/x-msdownload", "application/x-dosexec", "application/x-msdos-program",
    "application/x-ms-shortcut", "application/hta", "application/x-sh",
]
KNOWN = {"blocked_extensions", "blocked_types", "action"}


def _text_list(key, default):
    value = host.get_config(key)
    if value is None:
        return default
    if not isinstance(value, types.ConfigValue_TextList):
        raise ValueError(f"setting `{key}`: expected a list of strings")
    return [v.strip().lower().lstrip(".") if key == "blocked_extensions" else v.strip().lower()
            for v in value.value]


def _settings():
    for key in host.config_keys():
        if key not in KNOWN:
            raise ValueError(f"setting `{key}`: unknown setting; known settings are: "
                             + ", ".join(sorted(KNOWN)))
    action = host.get_config("action")
    if action is None:
        action = "reject"
    elif isinstance(action, types.ConfigValue_Text) and action.value in ("reject", "quarantine"):
        action = action.value
    else:
        raise ValueError("setting `action`: expected \"reject\" or \"quarantine\"")
    return (set(_text_list("blocked_extensions", DEFAULT_EXTENSIONS)),
            set(_text_list("blocked_types", DEFAULT_TYPES)), action)


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


class Hooks(exports.Hooks):
    def describe(self):
        return types.PluginInfo(name="python-attachments", version="0.1.0",
                                hooks=types.Hooks.CHECK_MESSAGE)

    def validate_config(self):
        try:
            _settings()
        except ValueError as e:
            raise Err(str(e))

    def verify_sender(self, session, sender):
        return types.Verdict_Continue()

    def check_recipient(self, session, envelope, recipient):
        return types.Verdict_Continue()

    def check_message(self, session, envelope, message):
        extensions, mime_types, action = _settings()
        msg = email.message_from_bytes(bytes(message.raw), policy=email.policy.compat32)
        found = find_dangerous(msg, extensions, mime_types)
        if found is None:
            return types.MessageVerdict(verdict=types.Verdict_Continue(), add_headers=[],
                                        remove_headers=[], symbols=[])
        host.log(host.Level.INFO, f"{session.transaction_id}: {found}")
        if action == "quarantine":
            verdict = types.Verdict_Quarantine(found)
        else:
            verdict = types.Verdict_Reject(types.Reply(
                code=550, enhanced="5.7.1",
                text="Message refused: it carries an attachment type we do not accept"))
        return types.MessageVerdict(
            verdict=verdict, add_headers=[], remove_headers=[],
            symbols=[types.Symbol(name="DANGEROUS_ATTACHMENT", score=0.0, detail=found)])

    def on_delivery(self, report):
        pass

    def render_bounce(self, request):
        return None
