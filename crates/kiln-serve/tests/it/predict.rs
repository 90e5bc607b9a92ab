//! `/predict` with each input form gives the model's own answer.

use base64::Engine as _;
use kiln_serve::ServeConfig;
use serde_json::json;

use crate::*;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn every_input_form_gives_the_models_probabilities() {
    let (_tmp, dir) = mlp_artifact(3);
    let state = state(&dir, ServeConfig::default());
    let digits = mnist_digits(2);
    let (pixels, _) = &digits[0];
    let expected = direct(&dir, pixels);

    let flat: Vec<u32> = pixels.iter().map(|&p| u32::from(p)).collect();
    let nested: Vec<Vec<u32>> = flat.chunks(28).map(<[u32]>::to_vec).collect();
    let unit: Vec<f32> = pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
    let three_deep = vec![nested.clone()];
    let png_bytes = png(28, 28, pixels);
    let forms = [
        ("flat u8", json!({ "instances": [flat] })),
        ("nested u8", json!({ "instances": [nested] })),
        ("[1][28][28]", json!({ "instances": [three_deep] })),
        ("unit floats", json!({ "instances": [unit] })),
        ("base64 string", json!({ "instances": [b64(&png_bytes)] })),
        (
            "b64 object",
            json!({ "instances": [{ "b64": b64(&png_bytes) }] }),
        ),
        (
            "data url",
            json!({ "instances": [format!("data:image/png;base64,{}", b64(&png_bytes))] }),
        ),
    ];
    for (form, body) in forms {
        let answer = call(&state, post_json("/predict", &body)).await;
        assert_eq!(answer.status, 200, "{form}: {}", answer.text());
        assert_close(&answer.probabilities(0), &expected);
        let v = answer.json();
        let class = v["predictions"][0]["class"].as_u64().unwrap() as usize;
        let best = expected
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(class, best, "{form}");
        assert_eq!(v["predictions"][0]["label"], format!("digit-{best}"));
        assert_eq!(v["model"]["name"], "mnist-mlp");
        assert!(
            v["model"]["version"]
                .as_str()
                .unwrap()
                .starts_with("seed3-")
        );
        assert!(!v["request_id"].as_str().unwrap().is_empty());
    }

    // A raw PNG body.
    let answer = call(&state, post("/predict", "image/png", png_bytes.clone())).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_close(&answer.probabilities(0), &expected);

    // The same digit dark-on-light is inverted by detection, or by ?invert=true.
    let inverted: Vec<u8> = pixels.iter().map(|&p| 255 - p).collect();
    let answer = call(
        &state,
        post("/predict", "image/png", png(28, 28, &inverted)),
    )
    .await;
    assert_close(&answer.probabilities(0), &expected);
    let answer = call(
        &state,
        post_json(
            "/predict",
            &json!({ "instances": [b64(&png(28, 28, &inverted))], "invert": "yes" }),
        ),
    )
    .await;
    assert_close(&answer.probabilities(0), &expected);

    // JPEG decodes (lossy, so only a well-formed answer is expected).
    let answer = call(&state, post("/predict", "image/jpeg", jpeg(28, 28, pixels))).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let p = answer.probabilities(0);
    assert_eq!(p.len(), 10);
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4);
}

#[tokio::test]
async fn a_batch_answers_each_instance_in_order() {
    let (_tmp, dir) = cnn_artifact(5);
    let state = state(&dir, ServeConfig::default());
    let digits = mnist_digits(5);
    let instances: Vec<Vec<u8>> = digits.iter().map(|(p, _)| p.clone()).collect();
    let answer = call(
        &state,
        post_json("/predict", &json!({ "instances": instances })),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    for (i, (pixels, _)) in digits.iter().enumerate() {
        assert_close(&answer.probabilities(i), &direct(&dir, pixels));
    }
}

#[tokio::test]
async fn a_large_image_is_fitted_like_an_mnist_digit() {
    let (_tmp, dir) = mlp_artifact(4);
    let state = state(&dir, ServeConfig::default());
    // A 28x28 digit drawn at 4x scale on a 160x140 light page.
    let (pixels, _) = &mnist_digits(1)[0];
    let page = image::GrayImage::from_fn(160, 140, |x, y| {
        let (dx, dy) = (x.wrapping_sub(20) / 4, y.wrapping_sub(10) / 4);
        let ink = if dx < 28 && dy < 28 {
            pixels[(dy * 28 + dx) as usize]
        } else {
            0
        };
        image::Luma([255 - ink])
    });
    let answer = call(
        &state,
        post("/predict", "image/png", png(160, 140, page.as_raw())),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let fitted = kiln_serve::fit::fit_digit(&page, kiln_serve::fit::Invert::Auto);
    assert_close(&answer.probabilities(0), &direct(&dir, &fitted));
    // The fitted digit's ink lies in the central 20x20 box, roughly where MNIST puts it.
    let ink_outside = fitted
        .iter()
        .enumerate()
        .filter(|(i, v)| {
            let (x, y) = (i % 28, i / 28);
            **v > 0 && !((2..26).contains(&x) && (2..26).contains(&y))
        })
        .count();
    assert_eq!(ink_outside, 0);
}

#[tokio::test]
async fn explain_answers_the_fitted_input_as_a_png() {
    let (_tmp, dir) = mlp_artifact(6);
    let state = state(&dir, ServeConfig::default());
    let (pixels, _) = &mnist_digits(1)[0];
    // A dark digit on a light 90x70 page, and the raw numbers.
    let page = image::GrayImage::from_fn(90, 70, |x, y| {
        let (dx, dy) = (x.wrapping_sub(10) / 2, y.wrapping_sub(5) / 2);
        let ink = if dx < 28 && dy < 28 {
            pixels[(dy * 28 + dx) as usize]
        } else {
            0
        };
        image::Luma([255 - ink])
    });
    let page_png = png(90, 70, page.as_raw());
    let body = json!({ "instances": [b64(&page_png), pixels], "explain": true });
    let answer = call(&state, post_json("/predict", &body)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let fitted = kiln_serve::fit::fit_digit(&page, kiln_serve::fit::Invert::Auto);
    for (i, expected) in [&fitted, pixels].into_iter().enumerate() {
        let png_b64 = answer.json()["predictions"][i]["fitted_png"]
            .as_str()
            .unwrap_or_else(|| panic!("no fitted_png in {}", answer.text()))
            .to_string();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(png_b64)
            .unwrap();
        let image = image::load_from_memory(&decoded).unwrap().to_luma8();
        assert_eq!(image.dimensions(), (28, 28));
        assert_eq!(image.as_raw(), expected, "instance {i}");
        assert_close(&answer.probabilities(i), &direct(&dir, expected));
    }
    // A raw body takes ?explain=true; without it there is no such field.
    let raw = call(
        &state,
        post("/predict?explain=true", "image/png", page_png.clone()),
    )
    .await;
    assert!(raw.json()["predictions"][0]["fitted_png"].is_string());
    let plain = call(&state, post("/predict", "image/png", page_png)).await;
    assert_eq!(plain.status, 200);
    assert!(plain.json()["predictions"][0].get("fitted_png").is_none());
    let bad = call(
        &state,
        post("/predict?explain=maybe", "image/png", vec![0u8]),
    )
    .await;
    assert_eq!(bad.status, 400);
}
