"""DNS lookups through Sluice's resolver: the `dns` capability (WIT 0.1.2).

Build against a world that imports it (`-w plugin-dns` or `-w plugin-kv-dns` in `build.sh`);
the operator grants it with ``capabilities = ["dns"]`` in ``[plugin.NAME]``. A lookup
without records raises `DnsError`, whose `kind` says why::

    from sluice_plugin import dns

    try:
        codes = dns.a("2.0.0.127.zen.example")   # listed: the 127.0.0.x codes
    except dns.DnsError as e:
        if e.kind != "nxdomain":                  # "temporary": no answer in time
            warn(f"blocklist: {e}")
"""

try:
    from wit_world.imports import dns as _dns
except ImportError as e:  # the world built against has no dns
    raise ImportError(
        "sluice_plugin.dns needs the dns capability: build with `-w plugin-dns` (or "
        "`plugin-kv-dns`) and have the operator set capabilities = [\"dns\"]") from e
from componentize_py_types import Err

__all__ = ["DnsError", "a", "aaaa", "txt", "ptr", "mx"]


class DnsError(Exception):
    """A lookup without records. `kind` is "nxdomain" (the name does not exist: for a
    blocklist, not listed), "no-records" (no records of that type), "temporary" (no answer
    now: timeout, SERVFAIL, the hook's deadline) or "invalid" (a bad name); `detail` is the
    host's explanation, if any."""

    def __init__(self, name, kind, detail=""):
        super().__init__(f"{name}: {kind}" + (f" ({detail})" if detail else ""))
        self.name = name
        self.kind = kind
        self.detail = detail


_KINDS = {
    _dns.LookupError_Nxdomain: "nxdomain",
    _dns.LookupError_NoRecords: "no-records",
    _dns.LookupError_Temporary: "temporary",
    _dns.LookupError_Invalid: "invalid",
}


def _lookup(fn, name):
    try:
        return fn(name)
    except Err as e:
        why = e.value
        raise DnsError(name, _KINDS.get(type(why), "temporary"),
                       str(getattr(why, "value", "") or "")) from None


def a(name):
    """The IPv4 addresses of `name`, as text."""
    return list(_lookup(_dns.lookup_a, name))


def aaaa(name):
    """The IPv6 addresses of `name`, as text."""
    return list(_lookup(_dns.lookup_aaaa, name))


def txt(name):
    """The TXT records of `name`, each one's strings joined."""
    return list(_lookup(_dns.lookup_txt, name))


def ptr(address):
    """The PTR names of an IPv4 or IPv6 address, without the trailing dot."""
    return list(_lookup(_dns.lookup_ptr, address))


def mx(name):
    """The mail exchangers of `name` as (preference, host) pairs, most preferred first."""
    return [(m.preference, m.exchange) for m in _lookup(_dns.lookup_mx, name)]
