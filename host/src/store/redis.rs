//! The Redis store, for a fleet of Sluice nodes sharing state (`[store] url = "redis://…"`).
//!
//! URLs as the `redis` crate reads them: `redis://[user:password@]host[:port][/db]`, and
//! `rediss://` for TLS (trusting the system's roots, or `[store] ca_file`). Keys are
//! `sluice:kv:` followed by the namespaced key, so Sluice can share a Redis with other users.
//!
//! Atomicity is the server's: `get`, `set` and `delete` are single commands, `compare-and-set`
//! with no expected value is `SET … NX`, and `increment` and `compare-and-set` with an
//! expected value are Lua scripts, which Redis runs atomically — never a read-modify-write
//! from the host, so two nodes incrementing one counter never lose an increment.
//!
//! The connection is a `ConnectionManager`: one multiplexed connection, made lazily,
//! re-made with exponential backoff when it breaks. While Redis is down every call fails
//! fast (connection timeout), and the plugin runtime bounds each call by the hook's deadline.
//! With `redis+sentinel://…` it is a connection to the primary the sentinels name, asked
//! again after a failover ([`super::sentinel`]).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::StoreError;

/// Prefix of every key Sluice writes.
pub const KEY_PREFIX: &[u8] = b"sluice:kv:";

/// A counter increment, creating the key with its time-to-live (milliseconds, 0 for none).
const INCREMENT: &str = r"
local created = redis.call('EXISTS', KEYS[1]) == 0
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if created and tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
";

/// Compare-and-set against an expected value.
const COMPARE_AND_SET: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
";

/// A plugin's write with its usage counted and its quota checked, as one atomic script.
/// Usage per namespace lives in `sluice:kv-usage:NS` (a hash: each key's stored size, and the
/// total under `#bytes`) and `sluice:kv-expiry:NS` (a sorted set: each key by its expiry, so
/// keys Redis expired are given back, a bounded number per call).
///
/// KEYS: data key, usage hash, expiry set. ARGV: operation, now (ms), max keys, max bytes,
/// time-to-live (ms, 0 none), value or delta, expected value, whether one is expected.
/// Answers like the plain command (1/0, the counter, the number deleted; -1 for a failed
/// compare-and-set), or the error `QUOTA ...`.
pub const ACCOUNTED: &str = r"
local k, h, z = KEYS[1], KEYS[2], KEYS[3]
local op, now = ARGV[1], tonumber(ARGV[2])
local max_keys, max_bytes, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local NEVER = 9000000000000000
for _, due in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', now, 'LIMIT', 0, 64)) do
  local pttl = redis.call('PTTL', due)
  if pttl == -2 then
    redis.call('HINCRBY', h, '#bytes', -tonumber(redis.call('HGET', h, due) or '0'))
    redis.call('HDEL', h, due)
    redis.call('ZREM', z, due)
  elseif pttl > 0 then
    redis.call('ZADD', z, now + pttl, due)
  else
    redis.call('ZADD', z, NEVER, due)
  end
end
local function forget()
  local old = redis.call('HGET', h, k)
  if old then
    redis.call('HINCRBY', h, '#bytes', -tonumber(old))
    redis.call('HDEL', h, k)
    redis.call('ZREM', z, k)
  end
end
local function admit(size)
  local old = tonumber(redis.call('HGET', h, k) or '-1')
  local bytes = tonumber(redis.call('HGET', h, '#bytes') or '0')
  local delta = size - math.max(old, 0)
  if old < 0 and redis.call('ZCARD', z) + 1 > max_keys then
    return 'QUOTA ' .. (redis.call('ZCARD', z) + 1) .. ' keys, at most ' .. max_keys
  end
  if delta > 0 and bytes + delta > max_bytes then
    return 'QUOTA ' .. (bytes + delta) .. ' bytes, at most ' .. max_bytes
  end
  redis.call('HSET', h, k, size)
  redis.call('HINCRBY', h, '#bytes', delta)
  return nil
end
local function expiry()
  local pttl = redis.call('PTTL', k)
  if pttl > 0 then redis.call('ZADD', z, now + pttl, k) else redis.call('ZADD', z, NEVER, k) end
end
if op == 'del' then
  forget()
  return redis.call('DEL', k)
end
if op == 'incr' then
  local created = redis.call('EXISTS', k) == 0
  local v = redis.call('INCRBY', k, ARGV[6])
  local refused = admit(#k + #redis.call('GET', k))
  if refused then
    if created then redis.call('DEL', k) else redis.call('DECRBY', k, ARGV[6]) end
    return redis.error_reply(refused)
  end
  if created and ttl > 0 then redis.call('PEXPIRE', k, ttl) end
  expiry()
  return v
end
if op == 'cas' then
  local cur = redis.call('GET', k)
  if ARGV[8] == '1' then
    if cur ~= ARGV[7] then return -1 end
  elseif cur then
    return -1
  end
end
local refused = admit(#k + #ARGV[6])
if refused then return redis.error_reply(refused) end
if ttl > 0 then redis.call('SET', k, ARGV[6], 'PX', ttl) else redis.call('SET', k, ARGV[6]) end
expiry()
return 1
";

/// A plugin's write, for [`Redis::accounted`].
pub enum Op<'a> {
    /// `set` to this value.
    Set(&'a [u8]),
    /// `increment` by this delta.
    Increment(i64),
    /// `compare-and-set`: the expected value (None: absent) and the new one.
    CompareAndSet(Option<&'a [u8]>, &'a [u8]),
    /// `delete`.
    Delete,
}

/// The connection: to one server, or to the primary the sentinels name.
#[derive(Clone)]
enum Connection {
    Direct(ConnectionManager),
    Sentinel(super::sentinel::SentinelConnection),
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Connection::Direct(c) => c.req_packed_command(cmd),
            Connection::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Connection::Direct(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Direct(c) => c.get_db(),
            Connection::Sentinel(c) => c.get_db(),
        }
    }
}

/// A Redis-backed store (clones share the connection).
#[derive(Clone)]
pub struct Redis {
    connection: Connection,
    increment: std::sync::Arc<redis::Script>,
    compare_and_set: std::sync::Arc<redis::Script>,
    accounted: std::sync::Arc<redis::Script>,
    /// The URL without its password, for logs.
    shown: String,
}

/// The URL with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    let text = e.to_string();
    // The script's error reply; the client shows its first word as the error code.
    if let Some(at) = text.find("QUOTA") {
        let detail = text[at + 5..].trim_start_matches([':', ' ', '-']).trim();
        return StoreError::QuotaExceeded(detail.to_string());
    }
    if e.to_string().contains("not an integer") {
        return StoreError::NotACounter;
    }
    if e.to_string().contains("overflow") {
        return StoreError::Overflow;
    }
    StoreError::Unavailable(e.to_string())
}

fn key(k: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(KEY_PREFIX.len() + k.len());
    out.extend_from_slice(KEY_PREFIX);
    out.extend_from_slice(k);
    out
}

fn ttl_ms(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
}

impl Redis {
    /// A store on the server at `url`; the connection is made at the first call, so Sluice
    /// starts (and queues mail) while Redis is still down. `ca_file` is a PEM file of the CA
    /// to trust for `rediss://` instead of the system's roots.
    pub fn new(url: &str, ca_file: Option<&std::path::Path>) -> Result<Redis, String> {
        if url.starts_with("redis+sentinel://") {
            let parsed = super::sentinel::parse(url)
                .map_err(|e| format!("store.url {}: {e}", redact(url)))?;
            let connection = super::sentinel::SentinelConnection::new(&parsed)
                .map_err(|e| format!("store.url {}: {e}", redact(url)))?;
            return Ok(Redis {
                connection: Connection::Sentinel(connection),
                increment: std::sync::Arc::new(redis::Script::new(INCREMENT)),
                compare_and_set: std::sync::Arc::new(redis::Script::new(COMPARE_AND_SET)),
                accounted: std::sync::Arc::new(redis::Script::new(ACCOUNTED)),
                shown: redact(url),
            });
        }
        let client = match ca_file {
            Some(ca) => {
                let root_cert = std::fs::read(ca)
                    .map_err(|e| format!("store.ca_file {}: {e}", ca.display()))?;
                redis::Client::build_with_tls(
                    url,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(root_cert),
                    },
                )
            }
            None => redis::Client::open(url),
        }
        .map_err(|e| format!("store.url {}: {e}", redact(url)))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(6)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(5));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("store.url {}: {e}", redact(url)))?;
        Ok(Redis {
            connection: Connection::Direct(connection),
            increment: std::sync::Arc::new(redis::Script::new(INCREMENT)),
            compare_and_set: std::sync::Arc::new(redis::Script::new(COMPARE_AND_SET)),
            accounted: std::sync::Arc::new(redis::Script::new(ACCOUNTED)),
            shown: redact(url),
        })
    }

    /// Where the data lives, for logs.
    pub fn describe(&self) -> String {
        format!("Redis at {}", self.shown)
    }

    /// Up to `limit` entries whose key starts with `prefix` (SCAN, so the server is never
    /// blocked; bounded to 100 rounds): (key, value, milliseconds left, if it expires).
    pub(super) async fn scan(
        &self,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<super::Scanned>, StoreError> {
        let mut pattern = Vec::new();
        for &b in key(prefix).iter() {
            // SCAN's glob: its special characters stand for themselves.
            if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
                pattern.push(b'\\');
            }
            pattern.push(b);
        }
        pattern.push(b'*');
        let mut conn = self.connection.clone();
        let mut cursor: u64 = 0;
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for _ in 0..100 {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(200)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 || keys.len() >= limit {
                break;
            }
        }
        keys.sort();
        keys.truncate(limit);
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let (value, left): (Option<Vec<u8>>, i64) = redis::pipe()
                .cmd("GET")
                .arg(&k)
                .cmd("PTTL")
                .arg(&k)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if let Some(value) = value {
                let short = k[KEY_PREFIX.len().min(k.len())..].to_vec();
                out.push((short, value, u64::try_from(left).ok()));
            }
        }
        Ok(out)
    }

    pub(super) async fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        redis::cmd("GET")
            .arg(key(k))
            .query_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)
    }

    pub(super) async fn set(
        &self,
        k: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key(k)).arg(value);
        if ttl.is_some() {
            cmd.arg("PX").arg(ttl_ms(ttl));
        }
        cmd.query_async::<()>(&mut self.connection.clone())
            .await
            .map_err(unavailable)
    }

    pub(super) async fn increment(
        &self,
        k: &[u8],
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, StoreError> {
        self.increment
            .key(key(k))
            .arg(delta)
            .arg(ttl_ms(ttl))
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)
    }

    pub(super) async fn delete(&self, k: &[u8]) -> Result<bool, StoreError> {
        let n: u64 = redis::cmd("DEL")
            .arg(key(k))
            .query_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(n > 0)
    }

    /// Runs `op` on `k` with the namespace's usage counted and `quota` checked (see
    /// [`ACCOUNTED`]).
    pub(super) async fn accounted(
        &self,
        op: Op<'_>,
        k: &[u8],
        ttl: Option<Duration>,
        quota: super::Quota,
    ) -> Result<i64, StoreError> {
        let ns = super::namespace(k);
        let aux = |what: &str| {
            let mut out = format!("sluice:kv-{what}:").into_bytes();
            out.extend_from_slice(ns);
            out
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let (name, value, expected, has_expected): (&str, Vec<u8>, &[u8], &str) = match op {
            Op::Set(v) => ("set", v.to_vec(), b"", "0"),
            Op::Increment(d) => ("incr", d.to_string().into_bytes(), b"", "0"),
            Op::CompareAndSet(e, v) => (
                "cas",
                v.to_vec(),
                e.unwrap_or_default(),
                if e.is_some() { "1" } else { "0" },
            ),
            Op::Delete => ("del", Vec::new(), b"", "0"),
        };
        self.accounted
            .key(key(k))
            .key(aux("usage"))
            .key(aux("expiry"))
            .arg(name)
            .arg(now)
            .arg(quota.max_keys)
            .arg(quota.max_bytes)
            .arg(ttl_ms(ttl))
            .arg(value)
            .arg(expected)
            .arg(has_expected)
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)
    }

    pub(super) async fn compare_and_set(
        &self,
        k: &[u8],
        expected: Option<&[u8]>,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let Some(expected) = expected else {
            let mut cmd = redis::cmd("SET");
            cmd.arg(key(k)).arg(value).arg("NX");
            if ttl.is_some() {
                cmd.arg("PX").arg(ttl_ms(ttl));
            }
            let set: Option<String> = cmd
                .query_async(&mut self.connection.clone())
                .await
                .map_err(unavailable)?;
            return Ok(set.is_some());
        };
        let n: i64 = self
            .compare_and_set
            .key(key(k))
            .arg(expected)
            .arg(value)
            .arg(ttl_ms(ttl))
            .invoke_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redact("redis://:s3cret@10.0.0.1:6379/2"),
            "redis://:***@10.0.0.1:6379/2"
        );
        assert_eq!(
            redact("rediss://sluice:s3cret@redis.example/0"),
            "rediss://sluice:***@redis.example/0"
        );
        assert_eq!(redact("redis://127.0.0.1/"), "redis://127.0.0.1/");
    }
}
