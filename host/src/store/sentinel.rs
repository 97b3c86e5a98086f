//! A connection to the primary that Redis Sentinel names (`[store] url =
//! "redis+sentinel://[:password@]host:port[,host:port…]/SERVICE[/DB]"`).
//!
//! The `redis` crate asks the sentinels for the primary (`SentinelClient`), but its
//! reconnecting `ConnectionManager` knows one fixed address. So this wraps a multiplexed
//! connection to the primary of the moment: a command that fails because the connection
//! broke, or because the node it reached is no longer the primary (`READONLY` after a
//! failover), drops the connection, asks the sentinels again and is sent once more. Every
//! call stays bounded by the plugin runtime's deadline, which is the caller's.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// How long asking the sentinels and connecting to the primary may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one command may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a `redis+sentinel://` URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// The sentinels, `host:port`.
    pub sentinels: Vec<String>,
    /// The monitored service (the primary's name).
    pub service: String,
    /// The data nodes' password.
    pub password: Option<String>,
    /// The database.
    pub db: i64,
}

/// Parses `redis+sentinel://[:password@]host:port[,host:port…]/SERVICE[/DB]`.
pub fn parse(url: &str) -> Result<SentinelUrl, String> {
    let rest = url
        .strip_prefix("redis+sentinel://")
        .ok_or("not a redis+sentinel:// URL")?;
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((u, r)) => (Some(u), r),
        None => (None, rest),
    };
    let password = userinfo
        .map(|u| u.split_once(':').map_or(u, |(_, p)| p).to_string())
        .filter(|p| !p.is_empty());
    let (hosts, path) = rest
        .split_once('/')
        .ok_or("name the service after the hosts: …/SERVICE")?;
    let sentinels: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| {
            if h.rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            {
                h.to_string()
            } else {
                format!("{h}:26379")
            }
        })
        .collect();
    if sentinels.is_empty() {
        return Err("list at least one sentinel, host:port".to_string());
    }
    let (service, db) = match path.split_once('/') {
        Some((s, d)) => (
            s,
            d.parse::<i64>()
                .map_err(|_| format!("{d:?} is not a database number"))?,
        ),
        None => (path, 0),
    };
    if service.is_empty() {
        return Err("name the service after the hosts: …/SERVICE".to_string());
    }
    Ok(SentinelUrl {
        sentinels,
        service: service.to_string(),
        password,
        db,
    })
}

/// A connection to the current primary (clones share it).
#[derive(Clone)]
pub struct SentinelConnection {
    inner: Arc<Inner>,
}

struct Inner {
    client: tokio::sync::Mutex<SentinelClient>,
    current: tokio::sync::RwLock<Option<MultiplexedConnection>>,
    db: i64,
}

impl SentinelConnection {
    /// A connection through the sentinels of `url`; nothing is connected until the first
    /// command.
    pub fn new(url: &SentinelUrl) -> Result<SentinelConnection, String> {
        let mut node = redis::RedisConnectionInfo::default().set_db(url.db);
        if let Some(p) = &url.password {
            node = node.set_password(p.clone());
        }
        let info = SentinelNodeConnectionInfo::default().set_redis_connection_info(node);
        let addresses: Vec<String> = url
            .sentinels
            .iter()
            .map(|h| format!("redis://{h}"))
            .collect();
        let client = SentinelClient::build(
            addresses,
            url.service.clone(),
            Some(info),
            SentinelServerType::Master,
        )
        .map_err(|e| e.to_string())?;
        Ok(SentinelConnection {
            inner: Arc::new(Inner {
                client: tokio::sync::Mutex::new(client),
                current: tokio::sync::RwLock::new(None),
                db: url.db,
            }),
        })
    }

    /// The connection to the primary, asking the sentinels when there is none.
    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(c) = self.inner.current.read().await.as_ref() {
            return Ok(c.clone());
        }
        let mut current = self.inner.current.write().await;
        if let Some(c) = current.as_ref() {
            return Ok(c.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn = tokio::time::timeout(CONNECT_TIMEOUT * 2, async {
            self.inner
                .client
                .lock()
                .await
                .get_async_connection_with_config(&config)
                .await
        })
        .await
        .map_err(|_| {
            redis::RedisError::from((
                redis::ErrorKind::Io,
                "timed out asking the sentinels for the primary",
            ))
        })??;
        *current = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets the connection (it broke, or reached a node that is no longer the primary).
    async fn reset(&self) {
        *self.inner.current.write().await = None;
    }
}

/// True for failures after which the primary may be elsewhere: the connection broke or
/// timed out, or the node answers that it is a read-only replica now.
fn primary_lost(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_timeout()
        || e.to_string().contains("READONLY")
}

impl ConnectionLike for SentinelConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            match conn.req_packed_command(cmd).await {
                Err(e) if primary_lost(&e) => {
                    self.reset().await;
                    self.connection().await?.req_packed_command(cmd).await
                }
                other => other,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut conn = self.connection().await?;
            match conn.req_packed_commands(pipeline, offset, count).await {
                Err(e) if primary_lost(&e) => {
                    self.reset().await;
                    self.connection()
                        .await?
                        .req_packed_commands(pipeline, offset, count)
                        .await
                }
                other => other,
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse("redis+sentinel://:pw@127.0.0.1:26379,127.0.0.1:26380/mymaster/2").unwrap(),
            SentinelUrl {
                sentinels: vec!["127.0.0.1:26379".into(), "127.0.0.1:26380".into()],
                service: "mymaster".into(),
                password: Some("pw".into()),
                db: 2,
            }
        );
        let plain = parse("redis+sentinel://s1,s2:5000/main").unwrap();
        assert_eq!(plain.sentinels, ["s1:26379", "s2:5000"]);
        assert_eq!((plain.password, plain.db), (None, 0));
        assert!(parse("redis+sentinel://s1").is_err());
        assert!(parse("redis+sentinel://s1/").is_err());
        assert!(parse("redis+sentinel:///main").is_err());
        assert!(parse("redis+sentinel://s1/main/x").is_err());
    }
}
