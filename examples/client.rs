//! A client of `kiln serve`: plain HTTP with `ureq`, no kiln code on the wire. Reads the
//! model's metadata over the `KServe` v2 protocol, then posts real MNIST test digits to
//! `/predict` as JSON (784 `u8` values each) and checks the answers.
//!
//! Run with a server up (see the README's Serving section):
//!
//! ```sh
//! cargo run -- serve --model experiments/smoke/<run> --addr 127.0.0.1:8080 &
//! cargo run --example client -- http://127.0.0.1:8080 [COUNT]
//! ```
//!
//! Exits 1 if fewer than half of COUNT (default 100) digits come back with their label.

use std::path::PathBuf;
use std::process::ExitCode;

use kiln_data::idx::{read_images, read_labels};
use serde_json::{Value, json};

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let base = base.trim_end_matches('/');
    let count: usize = args.next().map_or(Ok(100), |c| c.parse())?;

    let text = ureq::get(format!("{base}/v2"))
        .call()?
        .body_mut()
        .read_to_string()?;
    let models: Value = serde_json::from_str(&text)?;
    println!("server: {models}");
    let ready = ureq::get(format!("{base}/readyz")).call()?.status();
    println!("ready: {ready}");

    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../datasets/mnist");
    let images = read_images(&data.join("t10k-images-idx3-ubyte.gz"))?;
    let labels = read_labels(&data.join("t10k-labels-idx1-ubyte.gz"), 10)?;
    let size = images.rows * images.cols;
    let count = count.min(images.count);

    let mut correct = 0;
    // Up to 32 digits per request: dynamic batching on the server groups them further.
    for start in (0..count).step_by(32) {
        let end = (start + 32).min(count);
        let instances: Vec<&[u8]> = (start..end)
            .map(|i| &images.pixels[i * size..(i + 1) * size])
            .collect();
        let body = json!({ "instances": instances }).to_string();
        let text = ureq::post(format!("{base}/predict"))
            .header("content-type", "application/json")
            .send(&body)?
            .body_mut()
            .read_to_string()?;
        let answer: Value = serde_json::from_str(&text)?;
        let predictions = answer["predictions"]
            .as_array()
            .ok_or_else(|| format!("no predictions in {answer}"))?;
        for (i, prediction) in (start..end).zip(predictions) {
            let class = prediction["class"].as_u64().ok_or("no class")?;
            correct += usize::from(class == u64::from(labels[i]));
            if i < 3 {
                println!("digit {i}: {prediction}");
            }
        }
    }
    let accuracy = correct as f64 / count as f64;
    println!(
        "{correct} of {count} digits classified as labelled ({:.1} %)",
        accuracy * 100.0
    );
    Ok(accuracy >= 0.5)
}
