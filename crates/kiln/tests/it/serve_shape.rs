//! Serving a model whose input is not 28x28: `kiln train` on a folder dataset of 16x12 images
//! the test draws (bars and crosses), then `kiln serve` on a loopback port. Its answers must be
//! those of a direct forward pass on the pixels training saw, its v2 metadata must give its
//! shape, wrongly shaped inputs must be refused naming the shape, and a reload to a model of
//! another shape must switch the shape requests are checked against.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use burn::tensor::Device;
use kiln_data::{DatasetFormat, SplitMix64};
use kiln_serve::LoadedModel;
use serde_json::{Value, json};

use crate::{kiln, text};

/// Classes, in the order the folder dataset sorts them.
const CLASSES: [&str; 3] = ["cross", "horizontal", "vertical"];
/// Size the images are drawn at: twice the model's, so training and serving both resize.
const DRAWN: (u32, u32) = (24, 32);
/// The model's `[height, width]`.
const SIZE: [usize; 2] = [16, 12];

/// One image of `class`: a bright bar (or two) on a dark, noisy background.
fn draw(class: &str, rng: &mut SplitMix64) -> image::GrayImage {
    let (w, h) = DRAWN;
    let background = 10 + rng.below(30) as u8;
    let ink = 180 + rng.below(70) as u8;
    let thick = 3 + rng.below(3) as u32;
    let row = 6 + rng.below(u64::from(h - 12 - thick)) as u32;
    let col = 4 + rng.below(u64::from(w - 8 - thick)) as u32;
    let (x0, x1) = (rng.below(4) as u32, w - rng.below(4) as u32);
    let (y0, y1) = (rng.below(4) as u32, h - rng.below(4) as u32);
    let mut noise = SplitMix64::new(rng.next_u64());
    image::GrayImage::from_fn(w, h, |x, y| {
        let across = (row..row + thick).contains(&y) && (x0..x1).contains(&x);
        let down = (col..col + thick).contains(&x) && (y0..y1).contains(&y);
        let on = match class {
            "horizontal" => across,
            "vertical" => down,
            _ => across || down,
        };
        let level = if on { ink } else { background };
        image::Luma([level.saturating_add(noise.below(12) as u8)])
    })
}

/// `train/<class>/*.png` (60 each) and `test/<class>/*.png` (20 each) under `root`.
fn write_dataset(root: &Path) {
    let mut rng = SplitMix64::new(11);
    for (split, count) in [("train", 60), ("test", 20)] {
        for class in CLASSES {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..count {
                draw(class, &mut rng)
                    .save(dir.join(format!("{i:03}.png")))
                    .unwrap();
            }
        }
    }
}

/// Trains an MLP on the folder dataset at `data` resized to `size`; the run directory.
fn train(root: &Path, data: &Path, size: [usize; 2], name: &str) -> PathBuf {
    let sets = [
        format!("experiment.root={:?}", root.display().to_string()),
        format!("data.dir={:?}", data.display().to_string()),
        "data.format=\"folder\"".into(),
        format!("data.image_size=[{}, {}]", size[0], size[1]),
        "data.num_classes=3".into(),
        "data.limit_train=0".into(),
        "data.limit_test=0".into(),
        "training.epochs=30".into(),
        "training.batch_size=20".into(),
    ];
    let mut args = vec!["train", "--config", "configs/smoke.toml", "--plain"];
    for set in &sets {
        args.extend(["--set", set.as_str()]);
    }
    args.extend(["--name", name]);
    let out = kiln(&args);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    PathBuf::from(stdout.lines().last().unwrap())
}

/// A `kiln serve` child on a loopback port, stopped when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(model: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["serve", "--model"])
            .arg(model)
            .args(["--addr", "127.0.0.1:0", "--device", "cpu"])
            .env("KILN_ADMIN_KEY", "secret")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "kiln serve: <name> <version> on <device> at http://127.0.0.1:<port> (ready in ...)"
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_string();
        Self { child, base }
    }

    fn request(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let url = format!("{}{path}", self.base);
        let mut response = if method == "GET" {
            agent.get(&url).call().unwrap()
        } else {
            agent
                .post(&url)
                .header("content-type", content_type)
                .header("authorization", "Bearer secret")
                .send(body)
                .unwrap()
        };
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request(
            "POST",
            path,
            "application/json",
            &serde_json::to_vec(body).unwrap(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn probabilities(prediction: &Value) -> Vec<f32> {
    prediction["probabilities"]
        .as_array()
        .unwrap_or_else(|| panic!("no probabilities in {prediction}"))
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn assert_close(served: &[f32], direct: &[f32]) {
    assert_eq!(served.len(), direct.len());
    for (a, b) in served.iter().zip(direct) {
        assert!(
            (a - b).abs() < 1e-5,
            "served {served:?} vs direct {direct:?}"
        );
    }
}

fn argmax(values: &[f32]) -> usize {
    (0..values.len())
        .max_by(|&a, &b| values[a].total_cmp(&values[b]))
        .unwrap()
}

#[test]
fn a_16x12_folder_model_is_served_by_its_own_schema() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("bars");
    write_dataset(&data);
    let run = train(root.path(), &data, SIZE, "bars");

    // What training saw of the test split, in the order of the files.
    let dataset = kiln_data::load(&data, DatasetFormat::Folder, 3, SIZE).unwrap();
    let files: Vec<PathBuf> = CLASSES
        .iter()
        .flat_map(|class| {
            let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("test").join(class))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            files
        })
        .collect();
    assert_eq!(files.len(), dataset.test.len());

    let model = LoadedModel::load(&run, &Device::flex()).unwrap();
    assert_eq!(model.manifest.input_shape, [1, 16, 12]);
    assert_eq!(model.manifest.fit, Some(kiln_data::image::Fit::Resize));
    let direct = |pixels: &[u8]| {
        let mut inputs = Vec::new();
        kiln_data::preprocess(pixels, &model.table, &mut inputs);
        model.probabilities(inputs, 1)
    };

    let server = Server::start(&run);
    let (status, meta) = server.request("GET", "/v2/models/bars", "", b"");
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 16, 12]), "{meta}");
    assert_eq!(meta["parameters"]["input_shape"], json!([1, 16, 12]));
    assert_eq!(meta["parameters"]["fit"], "resize");
    assert_eq!(meta["parameters"]["class_names"], json!(CLASSES));

    let mut right = 0;
    for (i, file) in files.iter().enumerate().step_by(3) {
        let pixels = dataset.test.image(i);
        let class = served_alike(&server, file, pixels, &direct(pixels));
        if class == usize::from(dataset.test.labels[i]) {
            right += 1;
        }
    }
    // The model learnt the bars (20 of the 60 test images were sent).
    assert!(right >= 15, "{right} of 20 right");

    wrong_shapes_are_refused(&server);

    // A reload to a model of another shape: requests after it are checked against that one.
    let square = train(root.path(), &data, [20, 20], "bars");
    let (status, answer) = server.post_json(
        "/admin/reload",
        &json!({ "path": square.display().to_string() }),
    );
    assert_eq!(status, 200, "{answer}");
    let (_, meta) = server.request("GET", "/v2/models/bars", "", b"");
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 20, 20]), "{meta}");
    let pixels = dataset.test.image(0);
    let (status, answer) = server.post_json("/predict", &json!({ "instances": [pixels] }));
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[1, 20, 20]"),
        "{answer}"
    );
    let (status, answer) = server.request(
        "POST",
        "/predict",
        "image/png",
        &std::fs::read(&files[0]).unwrap(),
    );
    assert_eq!(status, 200, "{answer}");
    let square_model = LoadedModel::load(&square, &Device::flex()).unwrap();
    let square_data = kiln_data::load(&data, DatasetFormat::Folder, 3, [20, 20]).unwrap();
    let mut inputs = Vec::new();
    kiln_data::preprocess(square_data.test.image(0), &square_model.table, &mut inputs);
    assert_close(
        &probabilities(&answer["predictions"][0]),
        &square_model.probabilities(inputs, 1),
    );
}

/// Sends one test image every way (its PNG file, its pixels as flat and nested numbers, v2
/// in every accepted shape), checks each answer against `expected` (the direct forward pass)
/// and returns the class.
fn served_alike(server: &Server, file: &Path, pixels: &[u8], expected: &[f32]) -> usize {
    // The PNG file itself (24x32): served through the same decode-and-resize as training.
    let (status, answer) = server.request(
        "POST",
        "/predict?explain=true",
        "image/png",
        &std::fs::read(file).unwrap(),
    );
    assert_eq!(status, 200, "{answer}");
    let prediction = &answer["predictions"][0];
    assert_close(&probabilities(prediction), expected);
    assert_eq!(prediction["class"], argmax(expected), "{answer}");
    // The input the model saw comes back at the model's size.
    let fitted = base64_png(prediction["fitted_png"].as_str().unwrap());
    assert_eq!(fitted.dimensions(), (12, 16));
    assert_eq!(fitted.into_raw(), pixels);
    // The same pixels as C*H*W numbers, flat and nested [H][W].
    let nested: Vec<&[u8]> = pixels.chunks(12).collect();
    let (status, answer) = server.post_json(
        "/predict",
        &json!({ "instances": [pixels, nested], "scale": "u8" }),
    );
    assert_eq!(status, 200, "{answer}");
    for p in 0..2 {
        let prediction = &answer["predictions"][p];
        assert_close(&probabilities(prediction), expected);
        assert_eq!(prediction["class"], argmax(expected));
    }
    // And through v2, shaped [N,H,W], [N,C*H*W] and [N,C,H,W].
    for shape in [json!([1, 16, 12]), json!([1, 192]), json!([1, 1, 16, 12])] {
        let (status, answer) = server.post_json(
            "/v2/models/bars/infer",
            &json!({ "inputs": [{ "name": "input", "shape": shape, "datatype": "UINT8",
                                  "data": pixels }] }),
        );
        assert_eq!(status, 200, "{answer}");
        let served: Vec<f32> = answer["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "probabilities")
            .unwrap()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_close(&served, expected);
    }
    argmax(expected)
}

/// Wrongly shaped inputs get a 400 naming the model's shape.
fn wrong_shapes_are_refused(server: &Server) {
    let (status, answer) = server.post_json("/predict", &json!({ "instances": [vec![0; 784]] }));
    assert_eq!(status, 400, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("192") && message.contains("[1, 16, 12]"),
        "{message}"
    );
    let (status, answer) = server.post_json(
        "/v2/models/bars/infer",
        &json!({ "inputs": [{ "name": "input", "shape": [1, 28, 28], "datatype": "UINT8",
                              "data": vec![0; 784] }] }),
    );
    assert_eq!(status, 400, "{answer}");
    let message = answer["error"].as_str().unwrap();
    assert!(message.contains("[N,16,12]"), "{message}");
}

/// A base64 PNG, decoded.
fn base64_png(text: &str) -> image::GrayImage {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap();
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    image::load_from_memory(&bytes).unwrap().to_luma8()
}
