//! API keys with roles (`[auth] mode = "keys"`): 401 without a key or with an unknown one,
//! 403 without the route's role, open health routes, the keys file reloaded on request, and
//! the key's id as the rate limiter's client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use kiln_serve::ServeConfig;
use kiln_serve::auth::{AuthConfig, AuthMode, hash_key};
use kiln_serve::config::RateLimitConfig;
use serde_json::json;

use crate::*;

/// Writes a keys file of `(id, key, roles)` at `path` (the digests, never the keys).
fn write_keys(path: &Path, keys: &[(&str, &str, &[&str])]) {
    let mut text = String::new();
    for (id, key, roles) in keys {
        text += &format!(
            "[[keys]]\nid = \"{id}\"\nsha256 = \"{}\"\nroles = {roles:?}\n\n",
            hash_key(key.as_bytes())
        );
    }
    std::fs::write(path, text).unwrap();
}

/// A config with keys on, reading `keys_file`.
fn keys_config(keys_file: &Path) -> ServeConfig {
    ServeConfig {
        auth: AuthConfig {
            mode: AuthMode::Keys,
            keys_file: keys_file.to_path_buf(),
        },
        ..ServeConfig::default()
    }
}

/// Server state with keys on, the keys file read.
fn keyed_state(artifact: &Path, config: ServeConfig) -> Arc<kiln_serve::AppState> {
    let state = state(artifact, config);
    state.auth.reload().expect("keys file");
    state
}

/// The keys file used by most tests: a predict key, an admin-only key and one with both.
fn standard_keys(dir: &Path) -> PathBuf {
    let path = dir.join("keys.toml");
    write_keys(
        &path,
        &[
            ("alice", "alice-key-0123456789", &["predict"]),
            ("ops", "ops-key-0123456789", &["admin"]),
            ("root", "root-key-0123456789", &["predict", "admin"]),
        ],
    );
    path
}

fn bearer(mut request: Request<Body>, key: &str) -> Request<Body> {
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

fn api_key_header(mut request: Request<Body>, key: &str) -> Request<Body> {
    request
        .headers_mut()
        .insert("x-api-key", key.parse().unwrap());
    request
}

fn from_peer(mut request: Request<Body>, peer: &str) -> Request<Body> {
    let peer: SocketAddr = peer.parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

fn predict() -> Request<Body> {
    post_json("/predict", &json!({ "instances": [vec![0; 784]] }))
}

fn empty_reload() -> Request<Body> {
    Request::post("/admin/reload").body(Body::empty()).unwrap()
}

fn assert_challenged(answer: &Answer, code: &str) {
    assert_eq!(answer.status, 401, "{}", answer.text());
    let challenge = answer.headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert_eq!(answer.json()["error"]["code"], code, "{}", answer.text());
}

#[tokio::test]
async fn keys_guard_the_routes_by_role() {
    let (tmp, dir) = mlp_artifact(61);
    let state = keyed_state(&dir, keys_config(&standard_keys(tmp.path())));

    // No key, an unknown key, an empty key: 401 with a Bearer challenge.
    assert_challenged(&call(&state, predict()).await, "missing_key");
    assert_challenged(&call(&state, bearer(predict(), "")).await, "missing_key");
    assert_challenged(
        &call(&state, bearer(predict(), "not-a-key")).await,
        "invalid_key",
    );
    assert_challenged(
        &call(&state, api_key_header(predict(), "alice-key-012345678")).await,
        "invalid_key",
    );
    // The v2 routes answer in the v2 shape, with the same status and challenge.
    let v2 = call(&state, get("/v2/models/mnist-mlp")).await;
    assert_eq!(v2.status, 401);
    assert!(v2.headers.contains_key("www-authenticate"));
    assert!(v2.json()["error"].is_string(), "{}", v2.text());
    // A route that does not exist needs a key too: no route table for strangers.
    assert_eq!(call(&state, get("/nowhere")).await.status, 401);

    // A predict key, by Bearer (any case) or by x-api-key: 200.
    for request in [
        bearer(predict(), "alice-key-0123456789"),
        api_key_header(predict(), "alice-key-0123456789"),
        {
            let mut r = predict();
            r.headers_mut().insert(
                "authorization",
                "bearer alice-key-0123456789".parse().unwrap(),
            );
            r
        },
    ] {
        let answer = call(&state, request).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.probabilities(0).len(), 10);
    }
    let v2 = call(
        &state,
        bearer(get("/v2/models/mnist-mlp"), "alice-key-0123456789"),
    )
    .await;
    assert_eq!(v2.status, 200, "{}", v2.text());
    assert_eq!(
        call(&state, bearer(get("/nowhere"), "alice-key-0123456789"))
            .await
            .status,
        404
    );

    // Known keys without the route's role: 403.
    let answer = call(&state, bearer(empty_reload(), "alice-key-0123456789")).await;
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert!(!answer.headers.contains_key("www-authenticate"));
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("admin"),
        "{}",
        answer.text()
    );
    let answer = call(&state, bearer(predict(), "ops-key-0123456789")).await;
    assert_eq!(answer.status, 403, "{}", answer.text());

    // The admin role reloads; the old admin key (KILN_ADMIN_KEY, "secret" here) no longer
    // does: with keys on, roles govern.
    for key in ["ops-key-0123456789", "root-key-0123456789"] {
        let answer = call(&state, bearer(empty_reload(), key)).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    assert_eq!(
        call(&state, bearer(predict(), "root-key-0123456789"))
            .await
            .status,
        200
    );
    assert_challenged(
        &call(&state, bearer(empty_reload(), "secret")).await,
        "invalid_key",
    );
    let mut old_style = empty_reload();
    old_style
        .headers_mut()
        .insert("x-admin-key", "secret".parse().unwrap());
    assert_challenged(&call(&state, old_style).await, "missing_key");

    // Health, readiness and metrics stay open.
    for open in [
        "/healthz",
        "/readyz",
        "/v2/health/live",
        "/v2/health/ready",
        "/metrics",
    ] {
        let answer = call(&state, get(open)).await;
        assert_eq!(answer.status, 200, "{open}: {}", answer.text());
    }
    // Refusals are counted like any answer.
    let metrics = call(&state, get("/metrics")).await.text_full();
    assert!(metrics.contains("status=\"401\""), "{metrics}");
    assert!(metrics.contains("status=\"403\""), "{metrics}");
}

#[tokio::test]
async fn with_keys_off_routes_are_open_and_the_admin_key_still_works() {
    let (_tmp, dir) = mlp_artifact(62);
    // Four admin requests from one client: more than the default admin burst.
    let config = ServeConfig {
        rate_limit: RateLimitConfig {
            admin_burst: 10,
            ..RateLimitConfig::default()
        },
        ..ServeConfig::default()
    };
    let state = state(&dir, config);
    assert_eq!(call(&state, predict()).await.status, 200);
    let mut reload = empty_reload();
    reload
        .headers_mut()
        .insert("x-admin-key", "secret".parse().unwrap());
    assert_eq!(call(&state, reload).await.status, 200);
    assert_eq!(
        call(&state, bearer(empty_reload(), "secret")).await.status,
        200
    );
    assert_eq!(
        call(&state, bearer(empty_reload(), "wrong")).await.status,
        403
    );
    // A 401 from the admin route carries the challenge too.
    assert_challenged(&call(&state, empty_reload()).await, "unauthorized");
}

#[tokio::test]
async fn keys_on_need_a_keys_file() {
    let (tmp, dir) = mlp_artifact(63);
    let config = ServeConfig {
        auth: AuthConfig {
            mode: AuthMode::Keys,
            keys_file: PathBuf::new(),
        },
        ..ServeConfig::default()
    };
    assert!(config.check().unwrap_err().contains("auth.keys_file"));
    // A keys file that does not exist: refused by name, and nothing is let through.
    let missing = tmp.path().join("missing.toml");
    let state = state(&dir, keys_config(&missing));
    let error = state.auth.reload().unwrap_err();
    assert!(error.is_user_input());
    assert!(error.to_string().contains("missing.toml"), "{error}");
    let answer = call(&state, bearer(predict(), "anything")).await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(call(&state, get("/healthz")).await.status, 200);
}

/// Polls `request()`'s status until it is `status`, for at most `within`.
async fn status_becomes(
    state: &Arc<kiln_serve::AppState>,
    request: impl Fn() -> Request<Body>,
    status: u16,
    within: Duration,
) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if call(state, request()).await.status == status {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_request_rereads_the_keys_file_and_a_bad_one_is_refused() {
    let (tmp, dir) = mlp_artifact(64);
    let keys = tmp.path().join("keys.toml");
    write_keys(&keys, &[("old", "old-key-0123456789", &["predict"])]);
    let state = keyed_state(&dir, keys_config(&keys));
    let (request_reload, reload_requests) = tokio::sync::mpsc::channel::<()>(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let reloader = tokio::spawn(kiln_serve::reload_until(
        Arc::clone(&state),
        reload_requests,
        async move {
            let _ = stopped.await;
        },
    ));
    assert_eq!(
        call(&state, bearer(predict(), "old-key-0123456789"))
            .await
            .status,
        200
    );

    // Rotate: a new file without the old key. Nothing changes until the reload request.
    write_keys(&keys, &[("new", "new-key-0123456789", &["predict"])]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        call(&state, bearer(predict(), "old-key-0123456789"))
            .await
            .status,
        200
    );
    request_reload.send(()).await.unwrap();
    assert!(
        status_becomes(
            &state,
            || bearer(predict(), "new-key-0123456789"),
            200,
            Duration::from_secs(10)
        )
        .await,
        "the new key was not taken"
    );
    assert_challenged(
        &call(&state, bearer(predict(), "old-key-0123456789")).await,
        "invalid_key",
    );

    // A broken file is refused, and the keys in force stay: directly, and through a request.
    std::fs::write(
        &keys,
        "[[keys]]\nid = \"x\"\nsha256 = \"not hex\"\nroles = []\n",
    )
    .unwrap();
    let error = state.auth.reload().unwrap_err();
    assert!(error.to_string().contains("keys.toml"), "{error}");
    request_reload.send(()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        call(&state, bearer(predict(), "new-key-0123456789"))
            .await
            .status,
        200
    );
    assert_eq!(state.auth.current().unwrap().len(), 1);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), reloader)
        .await
        .expect("the reloader stops when asked")
        .unwrap();
}

#[tokio::test]
async fn with_keys_on_the_rate_limit_client_is_the_key_id() {
    let (tmp, dir) = mlp_artifact(65);
    let keys = tmp.path().join("keys.toml");
    write_keys(
        &keys,
        &[
            ("alice", "alice-key-0123456789", &["predict"]),
            ("bob", "bob-key-0123456789", &["predict"]),
        ],
    );
    let config = ServeConfig {
        rate_limit: RateLimitConfig {
            rate_per_second: 0.001,
            burst: 2,
            ..RateLimitConfig::default()
        },
        ..keys_config(&keys)
    };
    let state = keyed_state(&dir, config);
    let alice = "alice-key-0123456789";

    // Alice from one peer by Bearer, then from another peer by x-api-key: one bucket.
    let first = call(&state, from_peer(bearer(predict(), alice), "10.0.0.1:1000")).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.headers["ratelimit-remaining"], "1");
    let second = call(
        &state,
        from_peer(api_key_header(predict(), alice), "10.0.0.2:2000"),
    )
    .await;
    assert_eq!(second.status, 200);
    assert_eq!(second.headers["ratelimit-remaining"], "0");
    let third = call(&state, from_peer(bearer(predict(), alice), "10.0.0.3:3000")).await;
    assert_eq!(third.status, 429, "{}", third.text());

    // Bob, from the same peer as Alice's first request: a bucket of his own.
    let bob = call(
        &state,
        from_peer(bearer(predict(), "bob-key-0123456789"), "10.0.0.1:1000"),
    )
    .await;
    assert_eq!(bob.status, 200, "{}", bob.text());
    assert_eq!(bob.headers["ratelimit-remaining"], "1");

    // Refused keys draw on no bucket: they are answered before the limiter is asked.
    for _ in 0..3 {
        let answer = call(
            &state,
            from_peer(bearer(predict(), "wrong"), "10.0.0.4:4000"),
        )
        .await;
        assert_eq!(answer.status, 401);
        assert!(!answer.headers.contains_key("ratelimit-remaining"));
    }
}
