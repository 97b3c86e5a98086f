"""State kept between transactions: the `kv` capability (WIT 0.1.2).

Build against a world that imports it (`-w plugin-kv` or `-w plugin-kv-dns` in `build.sh`);
the operator grants it with ``capabilities = ["kv"]`` in ``[plugin.NAME]`` (and `sluice
reload`). Keys are the plugin's own (Sluice prefixes them with its name); every key expires:
a `ttl_secs` of 0 means the longest the operator allows (90 days by default)::

    from sluice_plugin import kv

    seen = kv.increment(f"sender:{domain}", 1, ttl_secs=86400)   # atomic; the new value
    if kv.compare_and_set(f"grey:{triplet}", None, b"1", ttl_secs=3600):
        ...                                                        # first time seen

A call past the limits (keys of 1 to 256 bytes, values up to 64 KiB, `kv_ops_per_call` calls
per hook) or a store that does not answer in time fails the hook, and the plugin's
`on_failure` policy applies.
"""

try:
    from wit_world.imports import kv as _kv
except ImportError as e:  # the world built against has no kv
    raise ImportError(
        "sluice_plugin.kv needs the kv capability: build with `-w plugin-kv` (or "
        "`plugin-kv-dns`) and have the operator set capabilities = [\"kv\"]") from e

__all__ = ["get", "get_text", "counter", "set", "increment", "delete", "compare_and_set"]


def _bytes(value):
    return value.encode() if isinstance(value, str) else bytes(value)


def get(key):
    """The value of `key` as bytes, or None when it is not set (or has expired)."""
    value = _kv.get(key)
    return None if value is None else bytes(value)


def get_text(key):
    """The value of `key` decoded as UTF-8, or None."""
    value = get(key)
    return None if value is None else value.decode("utf-8", "replace")


def counter(key):
    """The counter `key` (0 when it is not set) without changing it."""
    value = get(key)
    return int(value) if value else 0


def set(key, value, ttl_secs=0):  # noqa: A001  (the WIT's name)
    """Sets `key` to `value` (bytes or str), expiring after `ttl_secs` (0: the longest)."""
    _kv.set(key, _bytes(value), ttl_secs)


def increment(key, delta=1, ttl_secs=0):
    """Adds `delta` to the counter `key` atomically and returns the new value; a missing key
    counts as 0 and is created with `ttl_secs` (an existing key keeps its expiry)."""
    return _kv.increment(key, delta, ttl_secs)


def delete(key):
    """Removes `key`; True when it was set."""
    return _kv.delete(key)


def compare_and_set(key, expected, value, ttl_secs=0):
    """Sets `key` to `value` only if it holds `expected` (None: only if it is not set),
    atomically; True when it was set."""
    return _kv.compare_and_set(key, None if expected is None else _bytes(expected),
                               _bytes(value), ttl_secs)
