//! Rate limits in Redis, shared by every replica: GCRA (the generic cell rate algorithm, a
//! token bucket kept as one timestamp per client) in one Lua script that reads the time from
//! Redis, so replicas whose clocks disagree still agree on every client's budget.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::resp::{Connection, RedisAddress, Value};
use super::{Budget, CheckFuture, Decision, LimitClass, RateLimiter, StoreError};

/// The GCRA script. `KEYS[1]`: the client's key; `ARGV[1]`: the emission interval (microseconds
/// between requests at the sustained rate, an integer so the arithmetic is exact); `ARGV[2]`:
/// the burst; `ARGV[3]` (tests only): the time in microseconds, instead of Redis's clock.
///
/// The key holds the theoretical arrival time (TAT): when the bucket would be full again. A
/// request is allowed if, after adding one interval, the TAT is at most `burst` intervals ahead
/// of now. It answers `{allowed, remaining, retry_after_us, reset_us}`; the key expires when
/// the bucket is full again, so idle clients cost no memory. `replicate_commands` (the default
/// from Redis 5) lets a script that read `TIME` write.
pub(crate) const GCRA_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now
if ARGV[3] then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
if tat < now then tat = now end
local tolerance = interval * burst
local ahead = tat + interval - now
if ahead > tolerance then
  return {0, 0, ahead - tolerance, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', tat + interval), 'PX', math.ceil(ahead / 1000))
return {1, math.floor((tolerance - ahead) / interval), 0, ahead}
";

/// Connections kept open to Redis; each carries one command at a time.
const POOL_SIZE: usize = 4;
/// First wait before reconnecting after a failed connection, doubled per failure up to
/// [`MAX_BACKOFF`]; while it lasts, checks fail at once instead of each trying to connect.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A budget as GCRA sees it.
#[derive(Debug, Clone, Copy)]
struct Gcra {
    interval_us: u64,
    burst: u32,
}

impl Gcra {
    fn new(budget: Budget) -> Self {
        Self {
            interval_us: (1e6 / budget.rate).round().max(1.0) as u64,
            burst: budget.burst,
        }
    }
}

/// One connection attempt: its failure, or its drop before success, starts or lengthens the
/// backoff; its success ends it.
struct Attempt<'a> {
    backoff: &'a Mutex<Backoff>,
    succeeded: bool,
}

impl Attempt<'_> {
    fn succeed(mut self) {
        self.succeeded = true;
        *super::lock(self.backoff) = Backoff::default();
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.succeeded {
            let mut backoff = super::lock(self.backoff);
            let wait = backoff.next.max(FIRST_BACKOFF);
            backoff.until = Some(Instant::now() + wait);
            backoff.next = (wait * 2).min(MAX_BACKOFF);
        }
    }
}

#[derive(Debug, Default)]
struct Backoff {
    /// No connection attempt before this.
    until: Option<Instant>,
    /// The wait after the next failure.
    next: Duration,
}

/// Per-client limits kept in Redis (see the module docs). Connects lazily, on the first check,
/// and again after a failure (with backoff), so it recovers when Redis comes back.
#[derive(Debug)]
pub struct RedisLimiter {
    address: Result<RedisAddress, String>,
    prefix: String,
    inference: Gcra,
    admin: Gcra,
    slots: Vec<tokio::sync::Mutex<Option<Connection>>>,
    next_slot: AtomicUsize,
    script_sha: Mutex<Option<String>>,
    backoff: Mutex<Backoff>,
}

impl RedisLimiter {
    /// A limiter on the Redis at `url` (`redis://[[user]:password@]host[:port][/db]`), keys
    /// named `{prefix}inference:{client}` and `{prefix}admin:{client}`. Nothing is connected
    /// yet; a bad URL makes every check fail with the reason (the config check refuses one
    /// before a server starts).
    #[must_use]
    pub fn new(url: &str, prefix: &str, inference: Budget, admin: Budget) -> Self {
        Self {
            address: RedisAddress::parse(url),
            prefix: prefix.to_string(),
            inference: Gcra::new(inference),
            admin: Gcra::new(admin),
            slots: (0..POOL_SIZE)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next_slot: AtomicUsize::new(0),
            script_sha: Mutex::new(None),
            backoff: Mutex::default(),
        }
    }

    /// As [`RateLimiter::check`], with the time (microseconds since the Unix epoch) given
    /// instead of read from Redis's clock: for tests of the script's arithmetic.
    ///
    /// # Errors
    /// [`StoreError`] when Redis cannot answer.
    pub async fn check_with_clock(
        &self,
        client: &str,
        class: LimitClass,
        now_us: u64,
    ) -> Result<Decision, StoreError> {
        self.check_in_redis(client, class, Some(now_us)).await
    }

    async fn check_in_redis(
        &self,
        client: &str,
        class: LimitClass,
        now_us: Option<u64>,
    ) -> Result<Decision, StoreError> {
        let (gcra, class_name) = match class {
            LimitClass::Inference => (self.inference, "inference"),
            LimitClass::Admin => (self.admin, "admin"),
        };
        let key = format!("{}{class_name}:{client}", self.prefix);
        let reply = self
            .run_script(&key, gcra.interval_us, gcra.burst, now_us)
            .await?;
        decision(&reply, gcra.burst)
    }

    /// Runs the GCRA script for `key`, on a pooled connection; `now_us` replaces Redis's clock
    /// (tests only).
    pub(crate) async fn run_script(
        &self,
        key: &str,
        interval_us: u64,
        burst: u32,
        now_us: Option<u64>,
    ) -> Result<Value, StoreError> {
        let slot = &self.slots[self.next_slot.fetch_add(1, Ordering::Relaxed) % self.slots.len()];
        let mut slot = slot.lock().await;
        let interval = interval_us.to_string();
        let burst = burst.to_string();
        let now = now_us.map(|n| n.to_string());
        let mut args: Vec<&[u8]> = vec![key.as_bytes(), interval.as_bytes(), burst.as_bytes()];
        if let Some(now) = &now {
            args.push(now.as_bytes());
        }
        // A connection is taken out of its slot while in use: if this future is dropped (the
        // caller's timeout) part way through a reply, the connection goes with it.
        let (mut connection, reused) = match slot.take() {
            Some(c) => (c, true),
            None => (self.connect().await?, false),
        };
        let mut result = self.eval(&mut connection, &args).await;
        if reused && matches!(result, Err(StoreError::Io(_))) {
            // A pooled connection that Redis closed (a restart, an idle timeout): one retry on a
            // fresh one.
            connection = self.connect().await?;
            result = self.eval(&mut connection, &args).await;
        }
        match result {
            Err(StoreError::Io(e)) => Err(StoreError::Io(e)),
            Err(StoreError::Protocol(e)) => Err(StoreError::Protocol(e)),
            other => {
                *slot = Some(connection);
                other
            }
        }
    }

    /// `EVALSHA` with the script's digest when known, `EVAL` when not (or when Redis has
    /// forgotten it: `NOSCRIPT` after a restart or `SCRIPT FLUSH`).
    async fn eval(&self, connection: &mut Connection, args: &[&[u8]]) -> Result<Value, StoreError> {
        let sha = super::lock(&self.script_sha).clone();
        if let Some(sha) = sha {
            let mut command: Vec<&[u8]> = vec![b"EVALSHA", sha.as_bytes(), b"1"];
            command.extend_from_slice(args);
            match connection.command(&command).await? {
                Value::Error(e) if e.starts_with("NOSCRIPT") => {}
                Value::Error(e) => return Err(StoreError::Reply(e)),
                v => return Ok(v),
            }
        }
        let mut command: Vec<&[u8]> = vec![b"EVAL", GCRA_SCRIPT.as_bytes(), b"1"];
        command.extend_from_slice(args);
        match connection.command(&command).await? {
            Value::Error(e) => Err(StoreError::Reply(e)),
            v => Ok(v),
        }
    }

    /// Opens a connection (unless backing off) and learns the script's digest.
    async fn connect(&self) -> Result<Connection, StoreError> {
        let address = self
            .address
            .as_ref()
            .map_err(|e| StoreError::Config(e.clone()))?;
        if let Some(until) = super::lock(&self.backoff).until {
            let now = Instant::now();
            if now < until {
                return Err(StoreError::BackingOff(until - now));
            }
        }
        // Counts as failed unless it succeeds, also when the caller's timeout drops this future
        // (a Redis that accepts connections but does not answer), so that backs off too.
        let attempt = Attempt {
            backoff: &self.backoff,
            succeeded: false,
        };
        let connection = self.open(address).await?;
        attempt.succeed();
        Ok(connection)
    }

    async fn open(&self, address: &RedisAddress) -> Result<Connection, StoreError> {
        let mut connection = Connection::open(address).await?;
        match connection
            .command(&[b"SCRIPT", b"LOAD", GCRA_SCRIPT.as_bytes()])
            .await?
        {
            Value::Bulk(Some(sha)) => {
                *super::lock(&self.script_sha) = Some(String::from_utf8_lossy(&sha).into_owned());
            }
            Value::Error(e) => return Err(StoreError::Reply(e)),
            other => {
                return Err(StoreError::Protocol(format!(
                    "SCRIPT LOAD answered {other:?}"
                )));
            }
        }
        Ok(connection)
    }
}

impl RateLimiter for RedisLimiter {
    fn check<'a>(&'a self, client: &'a str, class: LimitClass) -> CheckFuture<'a> {
        Box::pin(self.check_in_redis(client, class, None))
    }
}

/// The script's answer as a [`Decision`].
pub(crate) fn decision(reply: &Value, burst: u32) -> Result<Decision, StoreError> {
    let numbers: Option<Vec<i64>> = match reply {
        Value::Array(Some(items)) if items.len() == 4 => items
            .iter()
            .map(|v| match v {
                Value::Integer(n) => Some(*n),
                _ => None,
            })
            .collect(),
        _ => None,
    };
    let Some([allowed, remaining, retry_after_us, reset_us]) =
        numbers.and_then(|n| <[i64; 4]>::try_from(n).ok())
    else {
        return Err(StoreError::Protocol(format!(
            "the rate limit script answered {reply:?}"
        )));
    };
    let seconds = |us: i64| u64::try_from(us).unwrap_or(0).div_ceil(1_000_000);
    let allowed = allowed == 1;
    Ok(Decision {
        allowed,
        limit: burst,
        remaining: u32::try_from(remaining).unwrap_or(0).min(burst),
        reset_seconds: seconds(reset_us),
        retry_after_seconds: if allowed {
            0
        } else {
            seconds(retry_after_us).max(1)
        },
    })
}
