use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::{Bool, Device, Int, Tensor};
use serde::de::Error as _;
use serde::ser::{Error as _, SerializeMap};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::cnn::{Cnn, CnnConfig};
use crate::mlp::{Mlp, MlpConfig};
use crate::registry;
use crate::sequential::Sequential;

/// Which network to build, with its hyperparameters: in TOML and JSON a table with a `kind`
/// (`mlp`, `cnn`, or a kind registered with [`registry::register`]) and that kind's fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Architecture {
    /// A multi-layer perceptron.
    Mlp(MlpConfig),
    /// The classic MNIST convolutional net.
    Cnn(CnnConfig),
    /// A network registered by the program that uses kiln (see [`registry`]).
    Registered(RegisteredArchitecture),
}

/// The kind and fields of a registered architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredArchitecture {
    /// The registered kind.
    pub kind: String,
    /// Its fields, as the config gave them (a JSON object).
    pub params: serde_json::Value,
}

impl Serialize for Architecture {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = match self {
            Self::Mlp(c) => serde_json::to_value(c).map_err(S::Error::custom)?,
            Self::Cnn(c) => serde_json::to_value(c).map_err(S::Error::custom)?,
            Self::Registered(r) => r.params.clone(),
        };
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("kind", self.kind())?;
        if let serde_json::Value::Object(fields) = fields {
            for (key, value) in &fields {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Architecture {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut value = serde_json::Value::deserialize(deserializer)?;
        let fields = value
            .as_object_mut()
            .ok_or_else(|| D::Error::custom("expected a table with a `kind`"))?;
        let kind = match fields.remove("kind") {
            Some(serde_json::Value::String(kind)) => kind,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "kind must be a string, not {other}"
                )));
            }
            None => return Err(D::Error::missing_field("kind")),
        };
        let fields = serde_json::Value::Object(std::mem::take(fields));
        match kind.as_str() {
            "mlp" => serde_json::from_value(fields).map(Self::Mlp),
            "cnn" => serde_json::from_value(fields).map(Self::Cnn),
            other if registry::is_known(other) => {
                let params = registry::resolve(other, fields);
                return Ok(Self::Registered(RegisteredArchitecture { kind, params }));
            }
            other => return Err(D::Error::custom(registry::unknown(other))),
        }
        .map_err(D::Error::custom)
    }
}

impl Default for Architecture {
    fn default() -> Self {
        Self::Mlp(MlpConfig::default())
    }
}

impl Architecture {
    /// Short name: `mlp`, `cnn` or the registered kind.
    #[must_use]
    pub fn kind(&self) -> &str {
        match self {
            Self::Mlp(_) => "mlp",
            Self::Cnn(_) => "cnn",
            Self::Registered(r) => &r.kind,
        }
    }

    /// Builds the network for `[channels, height, width]` inputs and `classes` outputs.
    ///
    /// Parameter ids are numbered in module order rather than drawn at random (burn's default),
    /// so equal weights serialise to equal bytes and a weights file's hash addresses its content.
    #[must_use]
    pub fn init(&self, input: [usize; 3], classes: usize, device: &Device) -> Model {
        let model = match self {
            Self::Mlp(c) => Model::Mlp(c.init(input.iter().product(), classes, device)),
            Self::Cnn(c) => Model::Cnn(c.init(input, classes, device)),
            Self::Registered(r) => Model::Net(
                registry::layers(&r.kind, &r.params, input)
                    .and_then(|specs| Sequential::build(&specs, input, classes, device))
                    .unwrap_or_else(|e| panic!("{e} (Architecture::problem reports this first)")),
            ),
        };
        model.map(&mut StableIds::default())
    }

    /// Checks the hyperparameters make a buildable network for this input; returns what is wrong.
    #[must_use]
    pub fn problem(&self, input: [usize; 3]) -> Option<String> {
        let dropout_ok = |p: f64| p.is_finite() && (0.0..1.0).contains(&p);
        match self {
            Self::Mlp(c) if c.hidden.contains(&0) => {
                Some("model.hidden: layer widths must be positive".into())
            }
            Self::Mlp(c) if !dropout_ok(c.dropout) => {
                Some("model.dropout must be in [0, 1)".into())
            }
            Self::Cnn(c) if input[1] < 6 || input[2] < 6 => {
                Some("the CNN needs images of at least 6x6".into())
            }
            Self::Cnn(c) if c.conv1 == 0 || c.conv2 == 0 || c.hidden == 0 => {
                Some("model.conv1, model.conv2 and model.hidden must be positive".into())
            }
            Self::Cnn(c) if !dropout_ok(c.dropout_conv) || !dropout_ok(c.dropout_fc) => {
                Some("model.dropout_conv and model.dropout_fc must be in [0, 1)".into())
            }
            Self::Registered(r) => registry::layers(&r.kind, &r.params, input)
                .and_then(|specs| Sequential::check(&specs, input))
                .err(),
            _ => None,
        }
    }
}

/// A kiln network: one of the supported architectures.
#[derive(Module, Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one model per process; burn's Module derive does not see through Box"
)]
pub enum Model {
    /// A multi-layer perceptron.
    Mlp(Mlp),
    /// The classic MNIST convolutional net.
    Cnn(Cnn),
    /// A registered architecture's stack of layers.
    Net(Sequential),
}

impl Model {
    /// Draws every parameter that is still to be initialised, now. burn initialises a
    /// parameter on its first use, from whatever state the device's generator is in then, and
    /// moving an uninitialised model to another device moves the draw there too. Calling this
    /// right after seeding fixes the weights to the seed, whatever runs next.
    #[must_use]
    pub fn initialized(self) -> Self {
        self.visit(&mut Draw);
        self
    }

    /// Class logits for a batch of images.
    ///
    /// # Shapes
    /// - images: `[batch, channels, height, width]`
    /// - output: `[batch, classes]`
    #[must_use]
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Self::Mlp(m) => m.forward(images),
            Self::Cnn(m) => m.forward(images),
            Self::Net(m) => m.forward(images),
        }
    }
}

/// Reads every float parameter, which initialises it (the value is kept in the parameter).
struct Draw;

impl ModuleVisitor for Draw {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// Renumbers parameters `BASE, BASE + 1, ...` in module order.
#[derive(Default)]
struct StableIds {
    next: u64,
}

impl StableIds {
    /// An arbitrary base ("kiln" in ASCII), far from small numbers a reader might confuse.
    const BASE: u64 = 0x6b69_6c6e_0000_0000;

    fn renumber<T: burn::module::ParameterValue>(&mut self, mut param: Param<T>) -> Param<T> {
        param.id = ParamId::from(Self::BASE + self.next);
        self.next += 1;
        param
    }
}

impl ModuleMapper for StableIds {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        self.renumber(param)
    }

    fn map_int<const D: usize>(&mut self, param: Param<Tensor<D, Int>>) -> Param<Tensor<D, Int>> {
        self.renumber(param)
    }

    fn map_bool<const D: usize>(
        &mut self,
        param: Param<Tensor<D, Bool>>,
    ) -> Param<Tensor<D, Bool>> {
        self.renumber(param)
    }
}
