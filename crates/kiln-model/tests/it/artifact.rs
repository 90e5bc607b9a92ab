use burn::module::Module;
use burn::tensor::Device;
use kiln_data::Normalization;
use kiln_data::image::Fit;
use kiln_model::artifact::{self, MANIFEST};
use kiln_model::{Architecture, CnnConfig, Lineage, Manifest, MlpConfig, ModelError};

use crate::{mnist_batch, values};

fn manifest(architecture: Architecture) -> Manifest {
    Manifest {
        format: artifact::FORMAT.into(),
        format_version: artifact::FORMAT_VERSION,
        name: "test".into(),
        version: "v1".into(),
        architecture,
        input_shape: [1, 28, 28],
        normalization: Normalization {
            mean: 0.1307,
            std: 0.3081,
        },
        fit: None,
        class_names: (0..10).map(|c| c.to_string()).collect(),
        weights_file: String::new(),
        weights_sha256: String::new(),
        lineage: Lineage {
            dataset: "mnist".into(),
            ..Default::default()
        },
    }
}

/// Saves `arch` (initialised from `seed`) as an artifact, loads it back, and checks the
/// manifest, the weights and the logits of real digits are all bit-identical.
fn assert_round_trip(arch: &Architecture, seed: u64) {
    let device = Device::flex();
    device.seed(seed);
    let model = arch.init([1, 28, 28], 10, &device).valid();
    let dir = tempfile::tempdir().unwrap();
    let written = artifact::save(dir.path(), &model, manifest(arch.clone())).unwrap();
    let loaded = artifact::load(dir.path(), &device).unwrap();
    assert_eq!(loaded.manifest, written);
    assert_eq!(
        artifact::weights_bytes(&loaded.model).unwrap(),
        artifact::weights_bytes(&model).unwrap()
    );
    let (images, _) = mnist_batch(4, &device);
    let bits = |logits| -> Vec<u32> { values(logits).iter().map(|v| v.to_bits()).collect() };
    assert_eq!(
        bits(model.forward(images.clone())),
        bits(loaded.model.forward(images)),
        "{} logits differ after a round trip",
        arch.kind()
    );
    assert_eq!(loaded.model.num_params(), model.num_params());
}

#[test]
fn save_and_load_round_trip_bit_for_bit() {
    let _guard = crate::exclusive();
    for arch in [
        Architecture::Mlp(MlpConfig::default()),
        Architecture::Cnn(CnnConfig::default()),
    ] {
        assert_round_trip(&arch, 11);
    }
}

#[test]
fn resaving_replaces_weights_and_leaves_one_file() {
    let _guard = crate::exclusive();
    let device = Device::flex();
    let arch = Architecture::Mlp(MlpConfig {
        hidden: vec![8],
        dropout: 0.0,
    });
    let dir = tempfile::tempdir().unwrap();
    device.seed(1);
    artifact::save(
        dir.path(),
        &arch.init([1, 28, 28], 10, &device),
        manifest(arch.clone()),
    )
    .unwrap();
    device.seed(2);
    let second = artifact::save(
        dir.path(),
        &arch.init([1, 28, 28], 10, &device),
        manifest(arch.clone()),
    )
    .unwrap();
    let weights: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(std::result::Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".bpk"))
        .collect();
    assert_eq!(weights.len(), 1);
    assert_eq!(
        weights[0].file_name().to_string_lossy(),
        second.weights_file
    );
}

#[test]
fn corrupt_weights_are_refused() {
    let _guard = crate::exclusive();
    let device = Device::flex();
    let arch = Architecture::Mlp(MlpConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let m = artifact::save(
        dir.path(),
        &arch.init([1, 28, 28], 10, &device),
        manifest(arch),
    )
    .unwrap();
    let path = dir.path().join(&m.weights_file);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let err = artifact::load(dir.path(), &device).unwrap_err();
    assert!(matches!(err, ModelError::Corrupt { .. }), "{err}");
}

#[test]
fn weights_that_do_not_fit_the_manifest_are_refused() {
    let _guard = crate::exclusive();
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    let small = Architecture::Mlp(MlpConfig {
        hidden: vec![16],
        dropout: 0.0,
    });
    artifact::save(
        dir.path(),
        &small.init([1, 28, 28], 10, &device),
        manifest(small),
    )
    .unwrap();
    // Claim a wider network than the weights hold.
    let path = dir.path().join(MANIFEST);
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    json["architecture"]["hidden"] = serde_json::json!([32]);
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let err = artifact::load(dir.path(), &device).unwrap_err();
    assert!(matches!(err, ModelError::Mismatch { .. }), "{err}");
}

#[test]
fn invalid_manifests_are_refused_with_the_reason() {
    let _guard = crate::exclusive();
    let device = Device::flex();
    let arch = Architecture::Mlp(MlpConfig::default());
    let dir = tempfile::tempdir().unwrap();
    artifact::save(
        dir.path(),
        &arch.init([1, 28, 28], 10, &device),
        manifest(arch),
    )
    .unwrap();
    let path = dir.path().join(MANIFEST);
    let good = std::fs::read_to_string(&path).unwrap();
    for (from, to, expect) in [
        (
            "\"format_version\": 1",
            "\"format_version\": 9",
            "format_version 9",
        ),
        ("\"std\": 0.3081", "\"std\": 0.0", "normalization"),
        (
            "\"name\": \"test\"",
            "\"name\": \"test\", \"surprise\": 1",
            "surprise",
        ),
    ] {
        std::fs::write(&path, good.replace(from, to)).unwrap();
        let err = artifact::load(dir.path(), &device).unwrap_err();
        assert!(
            matches!(err, ModelError::Invalid { .. }) && err.to_string().contains(expect),
            "{err}"
        );
    }
    let err = artifact::load(&dir.path().join("nothing-here"), &device).unwrap_err();
    assert!(matches!(err, ModelError::NotFound { .. }), "{err}");
}

#[test]
fn the_weights_file_addresses_its_content() {
    let _guard = crate::exclusive();
    let device = Device::flex();
    let arch = Architecture::Cnn(CnnConfig::default());
    let save = |seed: u64| {
        device.seed(seed);
        let model = arch.init([1, 28, 28], 10, &device).valid();
        let dir = tempfile::tempdir().unwrap();
        artifact::save(dir.path(), &model, manifest(arch.clone())).unwrap()
    };
    let (a, b, other) = (save(5), save(5), save(6));
    assert_eq!(
        a.weights_sha256, b.weights_sha256,
        "equal weights, equal bytes (no random parameter ids in the file)"
    );
    assert_eq!(a.weights_file, b.weights_file);
    assert_ne!(
        a.weights_sha256, other.weights_sha256,
        "other weights, other hash"
    );
}

/// A small registered architecture, as a program outside kiln would define it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TinyNet {
    channels: usize,
}

impl kiln_model::Network for TinyNet {
    const KIND: &'static str = "tiny-test-net";

    fn layers(&self, _input: [usize; 3]) -> Vec<kiln_model::LayerSpec> {
        use kiln_model::LayerSpec::{Conv2d, Linear, MaxPool, Relu};
        vec![
            Conv2d {
                channels: self.channels,
                kernel: 3,
                stride: 1,
                padding: 1,
            },
            Relu,
            MaxPool { size: 2 },
            Linear { features: 16 },
            Relu,
        ]
    }
}

#[test]
fn a_registered_architecture_round_trips_through_an_artifact() {
    let _guard = crate::exclusive();
    kiln_model::registry::register::<TinyNet>();
    let arch: Architecture =
        serde_json::from_value(serde_json::json!({"kind": "tiny-test-net", "channels": 4}))
            .unwrap();
    assert_eq!(arch.kind(), "tiny-test-net");
    assert_eq!(arch.problem([1, 28, 28]), None);
    assert_round_trip(&arch, 3);

    // Its fields are checked like a built-in's, and unknown kinds name the known ones.
    let bad = serde_json::json!({"kind": "tiny-test-net", "channels": 4, "chanels": 5});
    let arch: Architecture = serde_json::from_value(bad).unwrap();
    let problem = arch.problem([1, 28, 28]).unwrap();
    assert!(problem.contains("chanels"), "{problem}");
    let err = serde_json::from_value::<Architecture>(serde_json::json!({"kind": "lenet9"}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("lenet9") && err.contains("mlp, cnn"), "{err}");
}

#[test]
fn the_fit_rule_is_recorded_and_old_manifests_read_with_a_default() {
    let _guard = crate::exclusive();
    // Manifests only (no weights: `read_manifest` does not open them, and initialising a model
    // here would draw on the process's one random generator under the seeded tests).
    let arch = Architecture::Mlp(MlpConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let write = |manifest: &Manifest| {
        let text = serde_json::to_string_pretty(manifest).unwrap();
        std::fs::write(dir.path().join(MANIFEST), &text).unwrap();
        text
    };
    // A manifest written before the rule was recorded has no `fit` key at all.
    let text = write(&manifest(arch.clone()));
    assert!(!text.contains("\"fit\""), "{text}");
    let (_, read) = artifact::read_manifest(dir.path()).unwrap();
    assert_eq!(read.fit, None);
    assert_eq!(read.fit_rule(), Fit::MnistFit);
    // Any other shape defaults to a plain resize.
    let mut other = manifest(arch.clone());
    other.input_shape = [1, 16, 12];
    assert_eq!(other.fit_rule(), Fit::Resize);
    // A recorded rule is written, read back and wins over the default.
    let mut recorded = manifest(arch);
    recorded.fit = Some(Fit::Resize);
    let text = write(&recorded);
    assert!(text.contains("\"fit\": \"resize\""), "{text}");
    let (_, read) = artifact::read_manifest(dir.path()).unwrap();
    assert_eq!(read.format_version, 1);
    assert_eq!(read.fit_rule(), Fit::Resize);
}

/// A registered architecture with a defaulted field.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaulted {
    #[serde(default = "eight")]
    width: usize,
}

fn eight() -> usize {
    8
}

impl kiln_model::Network for Defaulted {
    const KIND: &'static str = "defaulted-test-net";

    fn layers(&self, _input: [usize; 3]) -> Vec<kiln_model::LayerSpec> {
        vec![kiln_model::LayerSpec::Linear {
            features: self.width,
        }]
    }
}

#[test]
fn a_registered_architecture_shows_its_defaults_like_a_built_in_one() {
    kiln_model::registry::register::<Defaulted>();
    let arch: Architecture =
        serde_json::from_value(serde_json::json!({"kind": "defaulted-test-net"})).unwrap();
    assert_eq!(
        serde_json::to_value(&arch).unwrap(),
        serde_json::json!({"kind": "defaulted-test-net", "width": 8})
    );
}
