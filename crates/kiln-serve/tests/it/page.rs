//! `GET /`: the page to try the model, its script and style, their headers, and that they are
//! not rate limited (the page's own `/predict` calls are).

use axum::http::StatusCode;
use kiln_serve::ServeConfig;
use kiln_serve::config::RateLimitConfig;

use crate::{call, get, mlp_artifact, state};

fn header<'a>(answer: &'a crate::Answer, name: &str) -> &'a str {
    answer
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn the_page_has_a_canvas_a_script_and_a_strict_policy() {
    let (_tmp, dir) = mlp_artifact(1);
    let state = state(&dir, ServeConfig::default());
    let page = call(&state, get("/")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(header(&page, "content-type").starts_with("text/html"));
    let html = page.text_full();
    assert!(html.contains("<canvas id=\"pad\""), "{html}");
    assert!(html.contains("<script src=\"/page.js\""), "{html}");
    assert!(html.contains("<link rel=\"stylesheet\" href=\"/page.css\">"));
    assert!(html.contains("type=\"file\""), "a file picker");

    let policy = header(&page, "content-security-policy");
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(part), "{part} missing from {policy}");
    }
    assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"));
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");

    let script = call(&state, get("/page.js")).await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(header(&script, "content-type").starts_with("text/javascript"));
    let js = script.text_full();
    assert!(
        js.contains("\"/predict?invert=no&explain=true\""),
        "posts the drawing"
    );
    assert!(js.contains("pointerdown") && js.contains("/readyz"));

    let style = call(&state, get("/page.css")).await;
    assert_eq!(style.status, StatusCode::OK);
    assert!(header(&style, "content-type").starts_with("text/css"));
}

#[tokio::test]
async fn the_page_is_not_rate_limited_and_other_routes_are_unchanged() {
    let (_tmp, dir) = mlp_artifact(1);
    let config = ServeConfig {
        rate_limit: RateLimitConfig {
            rate_per_second: 0.001,
            burst: 1,
            ..RateLimitConfig::default()
        },
        ..ServeConfig::default()
    };
    let state = state(&dir, config);
    for _ in 0..5 {
        for uri in [
            "/",
            "/page.js",
            "/page.css",
            "/readyz",
            "/v2/models/mnist-mlp",
        ] {
            let answer = call(&state, get(uri)).await;
            assert_eq!(answer.status, StatusCode::OK, "{uri}: {}", answer.text());
            assert!(answer.headers.get("ratelimit-limit").is_none(), "{uri}");
        }
    }
    // What the page posts is limited as any client's is.
    let digit = crate::png(28, 28, &crate::mnist_digits(1)[0].0);
    let first = call(&state, crate::post("/predict", "image/png", digit.clone())).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let second = call(&state, crate::post("/predict", "image/png", digit)).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(call(&state, get("/healthz")).await.status, StatusCode::OK);
    let metrics = call(&state, get("/metrics")).await;
    assert!(metrics.text_full().contains("route=\"/\""));
    // A route the page does not have is still the JSON 404.
    let missing = call(&state, get("/page.html")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["error"]["code"], "not_found");
}
