//! Rate limits shared across replicas through a real `redis-server` (`store = "redis"`): one
//! budget per client across two app instances, fail open and fail closed while Redis is down
//! or hung, recovery when it returns, and the GCRA script's arithmetic with a given clock.
//!
//! Each test starts its own `redis-server` on a free loopback port (no persistence) and kills
//! it when done. Without the binary the tests print `SKIPPED: redis-server not installed` and
//! pass; CI installs it (`apt-get install -y redis-server`).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kiln_serve::ServeConfig;
use kiln_serve::config::{OnStoreError, RateLimitConfig, RateLimitStore};
use kiln_serve::ratelimit::{Budget, LimitClass, RedisLimiter};
use serde_json::json;

use crate::*;

/// A `redis-server` child on 127.0.0.1, killed on drop.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one on a free port, or `None` (after printing why) when the binary is missing.
    fn start() -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            println!("SKIPPED: redis-server not installed");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        server.restart();
        Some(server)
    }

    /// Starts the server on its port again (with no data: nothing is saved).
    fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command("PING") != "+PONG\r\n" {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server and waits for it to exit.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops (`SIGSTOP`) or resumes (`SIGCONT`) the server: a hung Redis.
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One inline command; the raw reply ("" when the server does not answer).
    fn command(&self, line: &str) -> String {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        if stream.write_all(format!("{line}\r\n").as_bytes()).is_err() {
            return String::new();
        }
        let mut reply = Vec::new();
        let mut chunk = [0; 4096];
        while let Ok(n @ 1..) = stream.read(&mut chunk) {
            reply.extend_from_slice(&chunk[..n]);
            if reply.ends_with(b"\r\n") {
                // One read is enough for these small replies unless it ended mid-line.
                stream
                    .set_read_timeout(Some(Duration::from_millis(20)))
                    .unwrap();
            }
        }
        String::from_utf8_lossy(&reply).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped server cannot die of SIGKILL any later than a running one, but resume
            // it anyway so nothing lingers.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// Redis-backed limits: `burst` requests, then (at 0.001/s) none for the test's lifetime.
fn redis_config(redis: &RedisServer, burst: u32, on_error: OnStoreError) -> ServeConfig {
    ServeConfig {
        rate_limit: RateLimitConfig {
            rate_per_second: 0.001,
            burst,
            store: RateLimitStore::Redis,
            redis_url: redis.url(),
            redis_timeout_ms: 200,
            on_redis_error: on_error,
            ..RateLimitConfig::default()
        },
        ..ServeConfig::default()
    }
}

fn predict_as(client: &str) -> axum::http::Request<axum::body::Body> {
    let mut request = post_json("/predict", &json!({ "instances": [vec![0; 784]] }));
    request
        .headers_mut()
        .insert("x-api-key", client.parse().unwrap());
    request
}

fn store_errors(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("kiln_rate_limit_store_errors_total "))
        .unwrap_or_else(|| panic!("no store error counter in {metrics}"))
        .parse()
        .unwrap()
}

async fn errors_of(state: &Arc<AppState>) -> u64 {
    store_errors(&call(state, get("/metrics")).await.text_full())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_budget_through_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (_tmp, dir) = mlp_artifact(41);
    // Fail closed: a request that did not reach Redis would be a 503, not a silent pass.
    let config = redis_config(&redis, 5, OnStoreError::Closed);
    let replicas = [state(&dir, config.clone()), state(&dir, config)];
    for i in 0..5 {
        let answer = call(&replicas[i % 2], predict_as("alice")).await;
        assert_eq!(answer.status, 200, "request {i}: {}", answer.text());
        assert_eq!(answer.headers["ratelimit-limit"], "5");
        assert_eq!(
            answer.headers["ratelimit-remaining"],
            (4 - i).to_string().as_str(),
            "request {i}"
        );
    }
    // Both replicas now refuse alice: the budget was one, not one per replica.
    for replica in &replicas {
        let refused = call(replica, predict_as("alice")).await;
        assert_eq!(refused.status, 429, "{}", refused.text());
        assert_eq!(refused.json()["error"]["code"], "rate_limited");
        let retry: u64 = refused.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry >= 1, "Retry-After {retry}");
        assert_eq!(refused.headers["ratelimit-remaining"], "0");
        assert!(refused.headers.contains_key("ratelimit-reset"));
    }
    // Another client has its own budget.
    assert_eq!(call(&replicas[1], predict_as("bob")).await.status, 200);
    // At once, from many tasks on both replicas: still exactly the burst (the script is atomic).
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let replica = Arc::clone(&replicas[i % 2]);
            tokio::spawn(async move { call(&replica, predict_as("carol")).await.status })
        })
        .collect();
    let mut passed = 0;
    for task in tasks {
        match task.await.unwrap().as_u16() {
            200 => passed += 1,
            429 => {}
            other => panic!("status {other}"),
        }
    }
    assert_eq!(passed, 5);
    for replica in &replicas {
        assert_eq!(errors_of(replica).await, 0);
    }
    // Keys carry the prefix and the class, and expire when the bucket would be full again.
    let keys = redis.command("KEYS *");
    assert!(keys.starts_with("*3\r\n"), "{keys}");
    assert!(keys.contains("kiln:rl:inference:key#"), "{keys}");
    let key = keys
        .lines()
        .find(|l| l.starts_with("kiln:rl:"))
        .unwrap()
        .to_string();
    let ttl: i64 = redis.command(&format!("PTTL {key}"))[1..]
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 0, "PTTL {ttl}");
}

#[tokio::test]
async fn redis_down_fails_open_counts_errors_and_recovers() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (_tmp, dir) = mlp_artifact(42);
    let state = state(&dir, redis_config(&redis, 2, OnStoreError::Open));
    let first = call(&state, predict_as("alice")).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.headers["ratelimit-remaining"], "1");

    redis.kill();
    for i in 0..4 {
        let answer = call(&state, predict_as("alice")).await;
        assert_eq!(answer.status, 200, "request {i} while Redis is down");
        assert!(!answer.headers.contains_key("ratelimit-limit"));
    }
    assert!(errors_of(&state).await >= 4);

    // Redis comes back (empty: nothing was saved); limiting resumes within the backoff.
    redis.restart();
    let resumed = wait_for_headers(&state, "alice").await;
    assert_eq!(resumed.headers["ratelimit-remaining"], "1");
    assert_eq!(call(&state, predict_as("alice")).await.status, 200);
    assert_eq!(call(&state, predict_as("alice")).await.status, 429);
}

#[tokio::test]
async fn redis_down_or_hung_fails_closed_with_503_and_recovers() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (_tmp, dir) = mlp_artifact(43);
    let state = state(&dir, redis_config(&redis, 2, OnStoreError::Closed));
    assert_eq!(call(&state, predict_as("alice")).await.status, 200);

    // Hung: each check gives up at redis_timeout_ms (200 ms) and answers 503.
    redis.signal("-STOP");
    let start = Instant::now();
    let hung = call(&state, predict_as("alice")).await;
    assert_eq!(hung.status, 503, "{}", hung.text());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    redis.signal("-CONT");

    redis.kill();
    for i in 0..3 {
        let refused = call(&state, predict_as("alice")).await;
        assert_eq!(refused.status, 503, "request {i}: {}", refused.text());
        assert_eq!(refused.headers["retry-after"], "1");
        assert_eq!(refused.json()["error"]["code"], "rate_limit_unavailable");
    }
    // Health and metrics do not depend on the store.
    assert_eq!(call(&state, get("/healthz")).await.status, 200);
    assert!(errors_of(&state).await >= 4);

    redis.restart();
    let resumed = wait_for_headers(&state, "alice").await;
    assert_eq!(resumed.status, 200);
    assert_eq!(resumed.headers["ratelimit-remaining"], "1");
    assert_eq!(call(&state, predict_as("alice")).await.status, 200);
    assert_eq!(call(&state, predict_as("alice")).await.status, 429);
}

/// Sends requests until one is answered by the limiter again (within the reconnect backoff).
async fn wait_for_headers(state: &Arc<AppState>, client: &str) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = call(state, predict_as(client)).await;
        if answer.headers.contains_key("ratelimit-limit") {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "limiting did not resume: {} {}",
            answer.status,
            answer.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn gcra_script_arithmetic_with_a_given_clock() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limiter = RedisLimiter::new(
        &redis.url(),
        "test:",
        Budget {
            rate: 2.0,
            burst: 3,
        },
        Budget {
            rate: 0.1,
            burst: 1,
        },
    );
    let t0 = 1_700_000_000_000_000_u64;
    let at = |client: &'static str, class, now| limiter.check_with_clock(client, class, now);
    for i in 0..3_u32 {
        let d = at("a", LimitClass::Inference, t0).await.unwrap();
        assert!(d.allowed, "request {i}");
        assert_eq!(d.remaining, 2 - i);
        assert_eq!(d.limit, 3);
        // The bucket is full again 0.5 s per token taken after t0.
        assert_eq!(d.reset_seconds, 1 + u64::from(i) / 2);
    }
    let refused = at("a", LimitClass::Inference, t0).await.unwrap();
    assert!(!refused.allowed);
    assert_eq!((refused.remaining, refused.retry_after_seconds), (0, 1));
    // A clock behind the one that spent the tokens gets no more of them.
    assert!(
        !at("a", LimitClass::Inference, t0 - 5_000_000)
            .await
            .unwrap()
            .allowed
    );
    // Another client and another class have their own budgets.
    assert!(at("b", LimitClass::Inference, t0).await.unwrap().allowed);
    assert!(at("a", LimitClass::Admin, t0).await.unwrap().allowed);
    let admin = at("a", LimitClass::Admin, t0).await.unwrap();
    assert!(!admin.allowed);
    assert_eq!(admin.retry_after_seconds, 10);
    // 0.5 s at 2/s is one token, exactly: the interval is whole microseconds.
    assert!(
        !at("a", LimitClass::Inference, t0 + 499_999)
            .await
            .unwrap()
            .allowed
    );
    let later = at("a", LimitClass::Inference, t0 + 500_000).await.unwrap();
    assert!(later.allowed);
    assert_eq!(later.remaining, 0);
    // Long idle: a full bucket, never more than the burst.
    let idle = at("a", LimitClass::Inference, t0 + 3_600_000_000)
        .await
        .unwrap();
    assert_eq!((idle.allowed, idle.remaining), (true, 2));
}

#[test]
fn configs_serve_toml_lists_the_store_keys_with_their_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/serve.toml");
    let config = ServeConfig::from_file(&path).unwrap();
    assert_eq!(config.rate_limit, RateLimitConfig::default());
    let text = std::fs::read_to_string(&path).unwrap();
    for key in [
        "store",
        "redis_url",
        "redis_key_prefix",
        "redis_timeout_ms",
        "on_redis_error",
    ] {
        assert!(text.contains(&format!("\n{key} = ")), "{key} not listed");
    }
}

#[test]
fn bad_store_settings_are_refused_with_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("serve.toml");
    for (toml, expected) in [
        (
            "[rate_limit]\nstore = \"redis\"\nredis_url = \"http://cache:6379\"\n",
            "rate_limit.redis_url",
        ),
        ("[rate_limit]\nredis_timeout_ms = 0\n", "redis_timeout_ms"),
        (
            "[rate_limit]\non_redis_error = \"maybe\"\n",
            "on_redis_error",
        ),
        ("[rate_limit]\nstore = \"etcd\"\n", "store"),
    ] {
        std::fs::write(&path, toml).unwrap();
        let error = ServeConfig::from_file(&path).unwrap_err().to_string();
        assert!(error.contains(expected), "{toml}: {error}");
    }
}
