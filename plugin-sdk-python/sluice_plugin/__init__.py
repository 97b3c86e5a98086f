"""Write Sluice mail-filter plugins in Python.

A plugin is a class derived from `Plugin` that overrides only the hooks it needs (every other
hook answers "no opinion"); `hooks_for` turns it into the `Hooks` export componentize-py
builds a component from::

    from sluice_plugin import Plugin, hooks_for, reject

    class NoReplyGuard(Plugin):
        def check_recipient(self, session, envelope, recipient):
            if local_part(recipient.address) == "noreply":
                return reject(550, "5.1.1", "This address does not receive mail")

    Hooks = hooks_for(NoReplyGuard, name="no-reply-guard")

Build: ``componentize-py -w plugin componentize app -p . -p SDK -o no-reply-guard.wasm``
(the package's `componentize-py.toml` points componentize-py at its WIT; see the README). The
hooks Sluice calls are the ones the class overrides; a method whose name is close to a hook's
but not one (``check_recipients``) stops the build with the list of hooks.

Submodules: `sluice_plugin.view` (the message as Sluice parsed it: parts, text, attachments,
links), `sluice_plugin.kv` (state between transactions; capability "kv") and
`sluice_plugin.dns` (lookups; capability "dns").

Lifetimes: Sluice makes a fresh instance of the component for every SMTP transaction, so the
plugin object (built on the first hook call of a transaction, from the operator's settings)
holds state for that transaction only.
"""

from wit_world import exports
from wit_world.imports import host, types
from componentize_py_types import Err

__all__ = [
    "Plugin", "hooks_for", "Config", "ConfigError",
    "CONTINUE", "accept", "reject", "tempfail", "discard", "quarantine", "MessageVerdict",
    "local_part", "domain", "domain_is", "header", "headers", "body",
    "debug", "info", "warn", "error", "now_ms", "authentication", "arc",
]


# --- settings ------------------------------------------------------------------------------

class ConfigError(ValueError):
    """A setting that is missing or has the wrong type or value; the message names the key,
    in the same words as the Rust SDK: "setting `key`: expected a number, found ..."."""

    def __init__(self, key, problem):
        super().__init__(f"setting `{key}`: {problem}")
        self.key = key
        self.problem = problem


def _describe(value):
    if isinstance(value, types.ConfigValue_Text):
        return f"the string {value.value!r}"
    if isinstance(value, (types.ConfigValue_Integer, types.ConfigValue_Float)):
        return f"the number {value.value}"
    if isinstance(value, types.ConfigValue_Boolean):
        return "true" if value.value else "false"
    return "a list"


class Config:
    """The operator's settings for this plugin (`[plugin.NAME.config]`)."""

    def raw(self, key):
        """The raw WIT value of `key`, or None."""
        return host.get_config(key)

    def keys(self):
        """Every key that is set, sorted."""
        return host.config_keys()

    def _get(self, key, default, kinds, expected, convert=lambda v: v):
        value = host.get_config(key)
        if value is None:
            return default
        if not isinstance(value, kinds):
            raise ConfigError(key, f"expected {expected}, found {_describe(value)}")
        return convert(value.value)

    def str(self, key, default=None):
        """`key` as a string."""
        return self._get(key, default, types.ConfigValue_Text, "a string")

    def int(self, key, default=None):
        """`key` as a whole number."""
        return self._get(key, default, types.ConfigValue_Integer, "a whole number")

    def float(self, key, default=None):
        """`key` as a number (a whole number is accepted)."""
        return self._get(key, default, (types.ConfigValue_Float, types.ConfigValue_Integer),
                         "a number", float)

    def bool(self, key, default=None):
        """`key` as true or false."""
        return self._get(key, default, types.ConfigValue_Boolean, "true or false")

    def list(self, key, default=None):
        """`key` as a list of strings."""
        return self._get(key, default, types.ConfigValue_TextList, "a list", list)

    def require(self, key, kind="str"):
        """`key` read with the method named `kind`; a ConfigError when it is not set."""
        value = getattr(self, kind)(key)
        if value is None:
            raise ConfigError(key, "is required")
        return value

    def deny_unknown(self, known):
        """Refuses any key not in `known`, so a typo in the operator's file is reported."""
        for key in self.keys():
            if key not in known:
                raise ConfigError(key, "unknown setting; known settings are: "
                                  + ", ".join(known))


# --- verdicts ------------------------------------------------------------------------------

CONTINUE = types.Verdict_Continue()
"""No opinion: the next plugin decides. Returning None means the same."""


def accept():
    """Accept at this stage; the plugins after this one are not called for it."""
    return types.Verdict_Accept()


def reject(code, enhanced, text):
    """Refuse permanently: ``reject(550, "5.7.1", "not welcome")``."""
    return types.Verdict_Reject(types.Reply(code=code, enhanced=enhanced, text=text))


def tempfail(code, enhanced, text):
    """Refuse temporarily: ``tempfail(451, "4.7.1", "try again later")``."""
    return types.Verdict_Tempfail(types.Reply(code=code, enhanced=enhanced, text=text))


def discard():
    """Accept and drop silently."""
    return types.Verdict_Discard()


def quarantine(reason):
    """Accept and hold in quarantine, with `reason`."""
    return types.Verdict_Quarantine(reason)


class MessageVerdict:
    """What `check_message` returns when it does more than a verdict: header edits and
    spam-score symbols. ``MessageVerdict().add_header("X-Checked", "yes").symbol("S", 1.5)``."""

    def __init__(self, verdict=None):
        self.verdict = verdict
        self.add_headers = []
        self.remove_headers = []
        self.symbols = []

    def with_verdict(self, verdict):
        self.verdict = verdict
        return self

    def add_header(self, name, value):
        self.add_headers.append(types.Header(name=name, value=value))
        return self

    def remove_header(self, name):
        self.remove_headers.append(name)
        return self

    def symbol(self, name, score, detail=""):
        self.symbols.append(types.Symbol(name=name, score=float(score), detail=detail))
        return self


_VERDICTS = (types.Verdict_Continue, types.Verdict_Accept, types.Verdict_Reject,
             types.Verdict_Tempfail, types.Verdict_Discard, types.Verdict_Quarantine)
_BY_NAME = {"continue": CONTINUE, "accept": types.Verdict_Accept(),
            "discard": types.Verdict_Discard()}


def _verdict(value, hook):
    if value is None:
        return CONTINUE
    if isinstance(value, _VERDICTS):
        return value
    if isinstance(value, str) and value in _BY_NAME:
        return _BY_NAME[value]
    raise TypeError(
        f"{hook} returned {value!r}, which is not a verdict: return None (no opinion), "
        "accept(), reject(550, '5.7.1', 'text'), tempfail(451, '4.7.1', 'text'), discard() "
        "or quarantine('reason')")


def _message_verdict(value):
    if isinstance(value, MessageVerdict):
        mv = value
    else:
        mv = MessageVerdict(_verdict(value, "check_message"))
    return types.MessageVerdict(verdict=_verdict(mv.verdict, "check_message"),
                                add_headers=mv.add_headers,
                                remove_headers=mv.remove_headers, symbols=mv.symbols)


# --- addresses, messages, logging ------------------------------------------------------------

def local_part(address):
    """The part before the last @ (the whole address when there is none)."""
    return address.rpartition("@")[0] if "@" in address else address


def domain(address):
    """The part after the last @, lower case ("" when there is none)."""
    return address.rpartition("@")[2].lower() if "@" in address else ""


def domain_is(address, name):
    """True when the address's domain is `name`, ignoring case."""
    return domain(address) == name.lower().rstrip(".")


def header(message, name):
    """The first value of header field `name` (case-insensitive), or None."""
    lower = name.lower()
    for h in message.headers:
        if h.name.lower() == lower:
            return h.value
    return None


def headers(message, name):
    """Every value of header field `name`, in message order."""
    lower = name.lower()
    return [h.value for h in message.headers if h.name.lower() == lower]


def body(message):
    """The bytes after the header section."""
    raw = bytes(message.raw)
    end = raw.find(b"\r\n\r\n")
    return raw[end + 4:] if end >= 0 else b""


def debug(text):
    host.log(host.Level.DEBUG, str(text))


def info(text):
    host.log(host.Level.INFO, str(text))


def warn(text):
    host.log(host.Level.WARN, str(text))


def error(text):
    host.log(host.Level.ERROR, str(text))


def now_ms():
    """The host's wall clock, milliseconds since the Unix epoch."""
    return host.now()


def authentication():
    """SPF/DKIM/DMARC results of the transaction (a WIT auth-results), or None."""
    from wit_world.imports import authentication as auth
    return auth.results()


def arc():
    """The message's ARC chain as the host verified it (a WIT arc-check: verdict, sets,
    domains, detail; WIT 0.1.4), or None before check_message or without verification."""
    from wit_world.imports import authentication as auth
    return auth.arc()


# --- the plugin and its export -----------------------------------------------------------------

class Plugin:
    """Derive from this and override the hooks you need. `__init__` receives the settings
    (`Config`): check them there and raise ConfigError for a bad one — Sluice refuses to load
    the plugin with your message. Every hook may return None for "no opinion"."""

    def __init__(self, config):
        self.config = config

    def verify_sender(self, session, sender):
        return None

    def check_recipient(self, session, envelope, recipient):
        return None

    def check_message(self, session, envelope, message):
        return None

    def on_delivery(self, report):
        return None

    def render_bounce(self, request):
        return None


_FLAGS = {
    "verify_sender": "VERIFY_SENDER",
    "check_recipient": "CHECK_RECIPIENT",
    "check_message": "CHECK_MESSAGE",
    "on_delivery": "ON_DELIVERY",
    "render_bounce": "RENDER_BOUNCE",
}


def _misspelt_hooks(plugin_class):
    """Methods of `plugin_class` whose names look like a hook's but are not one, each with
    the hook it resembles: ``check_recipients`` would build, load and never be called."""
    import difflib

    def squash(name):
        return name.replace("_", "").lower()

    found = []
    for klass in plugin_class.__mro__:
        if klass in (Plugin, object):
            continue
        for attr, value in vars(klass).items():
            if attr.startswith("_") or attr in _FLAGS or not callable(value):
                continue
            near = [h for h in _FLAGS if squash(h) == squash(attr)]
            near = near or difflib.get_close_matches(attr, list(_FLAGS), n=1, cutoff=0.8)
            if near:
                found.append((attr, near[0]))
    return found


def hooks_for(plugin_class, name, version="0.1.0"):
    """The `Hooks` export for `plugin_class`: assign it to a module-level name `Hooks`. The
    hooks Sluice calls are those the class overrides. A method named like a hook but not one
    (``check_recipients``) raises TypeError here, that is, when the plugin is built."""
    misspelt = _misspelt_hooks(plugin_class)
    if misspelt:
        attr, hook = misspelt[0]
        raise TypeError(
            f"{plugin_class.__name__}.{attr} is not a hook, so Sluice would never call it: did "
            f"you mean {hook}? The hooks are: " + ", ".join(_FLAGS))
    flags = types.Hooks(0)
    for method, flag in _FLAGS.items():
        if getattr(plugin_class, method) is not getattr(Plugin, method):
            flags |= getattr(types.Hooks, flag)
    state = {}

    def plugin():
        # One plugin object per component instance, that is, per transaction.
        if "plugin" not in state:
            state["plugin"] = plugin_class(Config())
        return state["plugin"]

    class Hooks(exports.Hooks):
        def describe(self):
            return types.PluginInfo(name=name, version=version, hooks=flags)

        def validate_config(self):
            try:
                plugin_class(Config())
            except ValueError as e:
                raise Err(str(e))

        def verify_sender(self, session, sender):
            return _verdict(plugin().verify_sender(session, sender), "verify_sender")

        def check_recipient(self, session, envelope, recipient):
            return _verdict(plugin().check_recipient(session, envelope, recipient),
                            "check_recipient")

        def check_message(self, session, envelope, message):
            return _message_verdict(plugin().check_message(session, envelope, message))

        def on_delivery(self, report):
            plugin().on_delivery(report)

        def render_bounce(self, request):
            return plugin().render_bounce(request)

    return Hooks
