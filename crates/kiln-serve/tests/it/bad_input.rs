//! Bad input gets a 4xx with a JSON error that says what is wrong; never a 5xx or a panic.

use base64::Engine as _;
use futures_util::StreamExt as _;
use kiln_serve::ServeConfig;
use serde_json::json;

use crate::*;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A decompression bomb: a well-formed PNG declaring `w`x`h` grey pixels, whose first IDAT
/// chunk is the start of a zlib stream of zeros (a real one compresses ~1000:1).
fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0xda, 0xed, 0xc1, 0x01, 0x0d, 0x00, 0x00, 0x00],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one table of bad inputs, each asserted alike"
)]
async fn each_bad_input_is_a_clear_4xx() {
    let (_tmp, dir) = mlp_artifact(7);
    let config = ServeConfig {
        limits: kiln_serve::config::LimitsConfig {
            max_instances: 8,
            ..Default::default()
        },
        ..Default::default()
    };
    let state = state(&dir, config);
    let good_png = png(28, 28, &mnist_digits(1)[0].0);
    let mut nan_body = serde_json::to_vec(&json!({ "instances": [vec![0; 783]] })).unwrap();
    // JSON has no NaN: splice the token in, as a careless client would.
    let at = nan_body.windows(3).position(|w| w == b"[0,").unwrap() + 1;
    nan_body.splice(at..at, b"NaN,".iter().copied());

    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "non-image bytes",
            "image/png",
            b"hello, not a picture".to_vec(),
            400,
            "bad_image",
        ),
        (
            "truncated png",
            "image/png",
            good_png[..good_png.len() / 2].to_vec(),
            400,
            "bad_image",
        ),
        (
            "png declaring 50000x50000",
            "image/png",
            png_declaring(50_000, 50_000),
            413,
            "image_too_large",
        ),
        (
            "wrong pixel count",
            "application/json",
            serde_json::to_vec(&json!({ "instances": [vec![0; 783]] })).unwrap(),
            400,
            "wrong_pixel_count",
        ),
        ("NaN", "application/json", nan_body, 400, "bad_json"),
        (
            "negative value",
            "application/json",
            serde_json::to_vec(&json!({ "instances": [vec![-1; 784]] })).unwrap(),
            400,
            "bad_pixels",
        ),
        (
            "value over 255",
            "application/json",
            serde_json::to_vec(&json!({ "instances": [vec![256; 784]] })).unwrap(),
            400,
            "bad_pixels",
        ),
        (
            "empty instances",
            "application/json",
            br#"{"instances": []}"#.to_vec(),
            400,
            "no_instances",
        ),
        (
            "too many instances",
            "application/json",
            serde_json::to_vec(&json!({ "instances": vec![vec![0; 784]; 9] })).unwrap(),
            400,
            "too_many_instances",
        ),
        (
            "bad base64",
            "application/json",
            br#"{"instances": ["!!!not base64!!!"]}"#.to_vec(),
            400,
            "bad_base64",
        ),
        (
            "base64 of text",
            "application/json",
            serde_json::to_vec(&json!({ "instances": [b64(b"plain text")] })).unwrap(),
            400,
            "bad_image",
        ),
        (
            "wrong content type",
            "text/plain",
            b"7".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "malformed json",
            "application/json",
            b"{\"instances\": [".to_vec(),
            400,
            "bad_json",
        ),
        (
            "unknown field",
            "application/json",
            br#"{"instances": [], "colour": 1}"#.to_vec(),
            400,
            "bad_json",
        ),
        (
            "instance of the wrong kind",
            "application/json",
            br#"{"instances": [true]}"#.to_vec(),
            400,
            "bad_instance",
        ),
        (
            "strings as pixels",
            "application/json",
            serde_json::to_vec(&json!({ "instances": [vec!["1"; 784]] })).unwrap(),
            400,
            "bad_pixels",
        ),
    ];
    for (name, content_type, body, status, code) in cases {
        let answer = call(&state, post("/predict", content_type, body)).await;
        assert_eq!(answer.status.as_u16(), status, "{name}: {}", answer.text());
        let v = answer.json();
        assert_eq!(v["error"]["code"], code, "{name}: {}", answer.text());
        assert!(
            v["error"]["message"].as_str().is_some_and(|m| m.len() > 10),
            "{name}: {}",
            answer.text()
        );
    }
}

#[tokio::test]
async fn a_50_mb_body_is_refused_with_413() {
    let (_tmp, dir) = mlp_artifact(7);
    let state = state(&dir, ServeConfig::default());
    let body = vec![b'7'; 50 * 1024 * 1024];
    let answer = call(&state, post("/predict", "application/json", body)).await;
    assert_eq!(answer.status, 413, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "body_too_large");

    // Without a Content-Length (chunked), the limit still holds while reading.
    let chunks =
        futures_util::stream::repeat_with(|| Ok::<_, std::io::Error>(vec![b' '; 64 * 1024]))
            .take(800);
    let request = axum::http::Request::post("/predict")
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(chunks))
        .unwrap();
    let answer = call(&state, request).await;
    assert_eq!(answer.status, 413, "{}", answer.text());
}

#[tokio::test]
async fn a_body_of_empty_instances_is_refused_while_parsing() {
    let (_tmp, dir) = mlp_artifact(8);
    let state = state(&dir, ServeConfig::default());
    // 1.5 million empty instances in 6 MB: parsing stops at 4096, so memory stays bounded.
    let mut body = b"{\"instances\": [".to_vec();
    for i in 0..1_500_000 {
        body.extend_from_slice(if i == 0 { b"[]" } else { b",[]" });
    }
    body.extend_from_slice(b"]}");
    let answer = call(&state, post("/predict", "application/json", body)).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than 4096")
    );
}

#[tokio::test]
async fn images_share_one_pixel_budget_per_request() {
    let (_tmp, dir) = mlp_artifact(9);
    let config = ServeConfig {
        limits: kiln_serve::config::LimitsConfig {
            max_image_pixels: 100 * 100 * 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let state = state(&dir, config);
    let page = png(100, 100, &[255; 100 * 100]);
    let two = json!({ "instances": [b64(&page), b64(&page)] });
    assert_eq!(call(&state, post_json("/predict", &two)).await.status, 200);
    let three = json!({ "instances": [b64(&page), b64(&page), b64(&page)] });
    let answer = call(&state, post_json("/predict", &three)).await;
    assert_eq!(answer.status, 413, "{}", answer.text());
    assert_eq!(answer.json()["error"]["code"], "image_too_large");
}
