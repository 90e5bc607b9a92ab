//! Rate limits (429) and who they count against, a full queue and the concurrency cap (503),
//! and admin protection.

use kiln_serve::ServeConfig;
use kiln_serve::config::{BatchingConfig, LimitsConfig, RateLimitConfig, Wait};
use serde_json::json;

use crate::*;

fn digit_request(key: Option<&str>) -> axum::http::Request<axum::body::Body> {
    let mut request = post_json("/predict", &json!({ "instances": [vec![0; 784]] }));
    if let Some(key) = key {
        request
            .headers_mut()
            .insert("x-api-key", key.parse().unwrap());
    }
    request
}

/// A `/predict` request that came through proxies adding `X-Forwarded-For: forwarded_for`.
fn forwarded_request(forwarded_for: &str) -> axum::http::Request<axum::body::Body> {
    let mut request = digit_request(None);
    request
        .headers_mut()
        .insert("x-forwarded-for", forwarded_for.parse().unwrap());
    request
}

/// One request per client, then none until a second has passed.
fn one_request_each(trust_forwarded_for: bool) -> ServeConfig {
    ServeConfig {
        rate_limit: RateLimitConfig {
            rate_per_second: 0.001,
            burst: 1,
            trust_forwarded_for,
            ..RateLimitConfig::default()
        },
        ..ServeConfig::default()
    }
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after() {
    let (_tmp, dir) = mlp_artifact(31);
    let config = ServeConfig {
        rate_limit: RateLimitConfig {
            rate_per_second: 0.5,
            burst: 3,
            ..RateLimitConfig::default()
        },
        ..ServeConfig::default()
    };
    let state = state(&dir, config);
    for i in 0..3 {
        let answer = call(&state, digit_request(Some("alice"))).await;
        assert_eq!(answer.status, 200, "request {i}");
        assert_eq!(answer.headers["ratelimit-limit"], "3");
        assert_eq!(
            answer.headers["ratelimit-remaining"],
            (2 - i).to_string().as_str()
        );
    }
    let refused = call(&state, digit_request(Some("alice"))).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(refused.headers["ratelimit-remaining"], "0");
    assert!(refused.headers.contains_key("ratelimit-reset"));
    assert_eq!(refused.json()["error"]["code"], "rate_limited");
    // Another key has its own bucket; health checks are never limited.
    assert_eq!(call(&state, digit_request(Some("bob"))).await.status, 200);
    assert_eq!(call(&state, get("/healthz")).await.status, 200);
    let metrics = call(&state, get("/metrics")).await.text_full();
    assert!(metrics.contains("kiln_rate_limited_total 1"), "{metrics}");
    assert!(metrics.contains("route=\"/predict\",method=\"POST\",status=\"429\"} 1"));
}

#[tokio::test]
async fn admin_routes_have_a_stricter_limit_and_need_the_key() {
    let (_tmp, dir) = mlp_artifact(32);
    let state = state(&dir, ServeConfig::default());
    let reload = |key: Option<&str>| {
        let mut r = post("/admin/reload", "application/json", "");
        if let Some(k) = key {
            r.headers_mut()
                .insert("authorization", format!("Bearer {k}").parse().unwrap());
        }
        r
    };
    assert_eq!(call(&state, reload(None)).await.status, 401);
    assert_eq!(call(&state, reload(Some("wrong"))).await.status, 403);
    // Default admin burst is 3: the two refusals above spent two tokens.
    assert_eq!(call(&state, reload(Some("secret"))).await.status, 200);
    let limited = call(&state, reload(Some("secret"))).await;
    assert_eq!(limited.status, 429);
    assert!(limited.headers.contains_key("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after() {
    let (_tmp, dir) = cnn_artifact(33);
    let config = ServeConfig {
        batching: BatchingConfig {
            max_batch_size: 1,
            queue_capacity: 1,
            workers: 1,
            ..BatchingConfig::default()
        },
        limits: LimitsConfig {
            request_timeout_ms: 60_000,
            ..LimitsConfig::default()
        },
        ..ServeConfig::default()
    };
    let state = state(&dir, config);
    // 24 concurrent requests of 64 CNN images each, one forward pass at a time, one waiting.
    let body = json!({ "instances": vec![vec![0; 784]; 64] });
    let requests = (0..24).map(|_| post_json("/predict", &body)).collect();
    let answers = concurrently(&state, requests).await;
    let (mut ok, mut overloaded) = (0, 0);
    for answer in answers {
        match answer.status.as_u16() {
            200 => ok += 1,
            503 => {
                overloaded += 1;
                assert_eq!(answer.headers["retry-after"], "1");
                assert_eq!(answer.json()["error"]["code"], "overloaded");
            }
            other => panic!("unexpected {other}: {}", answer.text()),
        }
    }
    assert!(
        ok >= 1 && overloaded >= 1,
        "ok {ok}, overloaded {overloaded}"
    );
}

#[tokio::test]
async fn a_trusted_forwarded_for_keys_clients_by_its_rightmost_address() {
    let (_tmp, dir) = mlp_artifact(34);
    let state = state(&dir, one_request_each(true));
    let first = call(&state, forwarded_request("203.0.113.7, 10.0.0.1")).await;
    assert_eq!(first.status, 200, "{}", first.text());
    // Same rightmost hop, another client claimed on the left: the same bucket.
    let again = call(&state, forwarded_request("198.51.100.9, 10.0.0.1")).await;
    assert_eq!(again.status, 429, "{}", again.text());
    // Another rightmost hop (the first request's one now on the left): its own bucket.
    let other = call(&state, forwarded_request("10.0.0.1, 10.0.0.2")).await;
    assert_eq!(other.status, 200, "{}", other.text());
    // Entries that are not addresses are skipped, not taken as the client.
    let garbage = call(&state, forwarded_request("10.0.0.2, not-an-ip")).await;
    assert_eq!(garbage.status, 429, "{}", garbage.text());
}

#[tokio::test]
async fn an_untrusted_forwarded_for_is_ignored() {
    let (_tmp, dir) = mlp_artifact(35);
    let state = state(&dir, one_request_each(false));
    let first = call(&state, forwarded_request("10.0.0.1")).await;
    assert_eq!(first.status, 200, "{}", first.text());
    // A different forwarded address does not buy a fresh bucket: the peer is the client.
    let other = call(&state, forwarded_request("10.0.0.2")).await;
    assert_eq!(other.status, 429, "{}", other.text());
    assert_eq!(other.json()["error"]["code"], "rate_limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_max_concurrency_get_503_with_retry_after() {
    let (_tmp, dir) = mlp_artifact(36);
    // One request at a time; a 1 s batching window (opted in: by default an idle worker does
    // not wait) holds the first inside the server.
    let config = ServeConfig {
        limits: LimitsConfig {
            max_concurrency: 1,
            ..LimitsConfig::default()
        },
        batching: BatchingConfig {
            wait: Wait::Always,
            max_delay_us: 1_000_000,
            max_batch_size: 64,
            ..BatchingConfig::default()
        },
        ..ServeConfig::default()
    };
    let state = state(&dir, config);
    let first = {
        let state = Arc::clone(&state);
        tokio::spawn(async move { call(&state, digit_request(Some("alice"))).await })
    };
    let inside = wait_until(std::time::Duration::from_secs(10), || {
        state.metrics.in_flight_now() == 1
    });
    assert!(inside.await, "the first request never got in");

    // Another client: not rate limited, but there is no room.
    let refused = call(&state, digit_request(Some("bob"))).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(refused.json()["error"]["code"], "overloaded");
    // The v2 route is refused too, in the v2 error shape.
    let input =
        json!({ "name": "input", "shape": [1, 784], "datatype": "UINT8", "data": vec![0; 784] });
    let v2 = call(
        &state,
        post_json("/v2/models/mnist-mlp/infer", &json!({ "inputs": [input] })),
    )
    .await;
    assert_eq!(v2.status, 503, "{}", v2.text());
    assert_eq!(v2.headers["retry-after"], "1");
    assert!(v2.json()["error"].is_string(), "{}", v2.text());
    // Health checks and metrics are not counted against the cap.
    assert_eq!(call(&state, get("/healthz")).await.status, 200);
    let metrics = call(&state, get("/metrics")).await.text_full();
    assert!(metrics.contains("kiln_overloaded_total 2"), "{metrics}");

    let first = first.await.unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    // Its permit is back: the next request is served.
    assert_eq!(call(&state, digit_request(Some("bob"))).await.status, 200);
}
