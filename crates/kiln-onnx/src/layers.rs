//! kiln's two architectures as ONNX nodes, in the order their `forward` runs them. Shapes are
//! tracked without the batch dimension and every weight is checked against them.

use burn::nn::Linear;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use kiln_model::sequential::Layer;
use kiln_model::{Cnn, Mlp, Sequential};

use crate::LOGITS;
use crate::error::OnnxError;
use crate::graph::{GraphBuilder, int, ints, to_i64};

/// The CNN's pooling, as `CnnConfig::init` builds it: `MaxPool2dConfig::new([2, 2])`, whose
/// strides default to the kernel size, no padding, floor rounding.
const POOL: usize = 2;

/// `Flatten -> (Gemm -> Relu)* -> Gemm` from `input` (`[C, H, W]` per item) to [`LOGITS`].
///
/// # Shapes
/// - input: `[batch, C, H, W]`
/// - output: `[batch, classes]`
pub(crate) fn mlp(
    g: &mut GraphBuilder,
    mlp: &Mlp,
    input: &str,
    shape: [usize; 3],
    classes: usize,
) -> Result<String, OnnxError> {
    let mut x = g.node("Flatten", &[input], "flatten", vec![int("axis", 1)]);
    let mut width: usize = shape.iter().product();
    let layers = mlp.layers();
    let (output, hidden) = layers
        .split_last()
        .ok_or_else(|| unsupported("mlp", "no layers"))?;
    for (i, layer) in hidden.iter().enumerate() {
        let name = format!("hidden.{i}");
        let (y, out) = linear(g, &name, &name, layer, &x, width)?;
        x = g.node("Relu", &[&y], &format!("{name}.relu"), vec![]);
        width = out;
    }
    let (logits, out) = linear(g, "output", LOGITS, output, &x, width)?;
    check_classes("output", out, classes)?;
    Ok(logits)
}

/// `Conv -> Relu -> Conv -> Relu -> MaxPool -> Flatten -> Gemm -> Relu -> Gemm` from `input`
/// to [`LOGITS`].
///
/// # Shapes
/// - input: `[batch, C, H, W]`
/// - after conv1, conv2: `[batch, conv1, H - 2, W - 2]`, `[batch, conv2, H - 4, W - 4]`
/// - after the pool: `[batch, conv2, (H - 4) / 2, (W - 4) / 2]`, flattened for fc1
/// - output: `[batch, classes]`
pub(crate) fn cnn(
    g: &mut GraphBuilder,
    cnn: &Cnn,
    input: &str,
    shape: [usize; 3],
    classes: usize,
) -> Result<String, OnnxError> {
    let (conv1, conv2, fc1, fc2) = cnn.parts();
    let (x, shape) = conv(g, "conv1", conv1, input, shape)?;
    let x = g.node("Relu", &[&x], "conv1.relu", vec![]);
    let (x, [c, h, w]) = conv(g, "conv2", conv2, &x, shape)?;
    let x = g.node("Relu", &[&x], "conv2.relu", vec![]);
    let (x, [c, h, w]) = pool(g, "MaxPool", "pool", [POOL; 2], [POOL; 2], &x, [c, h, w])?;
    let x = g.node("Flatten", &[&x], "flatten", vec![int("axis", 1)]);
    let width = c * h * w;
    let (x, hidden) = linear(g, "fc1", "fc1", fc1, &x, width)?;
    let x = g.node("Relu", &[&x], "fc1.relu", vec![]);
    let (logits, out) = linear(g, "fc2", LOGITS, fc2, &x, hidden)?;
    check_classes("fc2", out, classes)?;
    Ok(logits)
}

/// A registered architecture's layer stack, layer by layer, from `input` to [`LOGITS`]
/// (dropout, the identity at inference, leaves no node).
pub(crate) fn sequential(
    g: &mut GraphBuilder,
    net: &Sequential,
    input: &str,
    shape: [usize; 3],
    classes: usize,
) -> Result<String, OnnxError> {
    enum Flow {
        Image([usize; 3]),
        Features(usize),
    }
    let mut x = input.to_string();
    let mut flow = Flow::Image(shape);
    let count = net.layers().len();
    for (i, layer) in net.layers().iter().enumerate() {
        let name = format!("layers.{i}");
        match (layer, &flow) {
            (Layer::Conv2d(c), Flow::Image(shape)) => {
                let (y, out) = conv(g, &name, c, &x, *shape)?;
                (x, flow) = (y, Flow::Image(out));
            }
            (Layer::MaxPool(p), Flow::Image([c, h, w])) => {
                let (y, out) = pool(
                    g,
                    "MaxPool",
                    &name,
                    p.kernel_size,
                    p.stride,
                    &x,
                    [*c, *h, *w],
                )?;
                (x, flow) = (y, Flow::Image(out));
            }
            (Layer::AvgPool(p), Flow::Image([c, h, w])) => {
                let (y, out) = pool(
                    g,
                    "AveragePool",
                    &name,
                    p.kernel_size,
                    p.stride,
                    &x,
                    [*c, *h, *w],
                )?;
                (x, flow) = (y, Flow::Image(out));
            }
            (Layer::Linear(l), _) => {
                let width = match flow {
                    Flow::Image(s) => {
                        x = g.node(
                            "Flatten",
                            &[&x],
                            &format!("{name}.flatten"),
                            vec![int("axis", 1)],
                        );
                        s.iter().product()
                    }
                    Flow::Features(n) => n,
                };
                let output = if i + 1 == count {
                    LOGITS.to_string()
                } else {
                    name.clone()
                };
                let (y, out) = linear(g, &name, &output, l, &x, width)?;
                (x, flow) = (y, Flow::Features(out));
            }
            (Layer::Relu(_), _) => x = g.node("Relu", &[&x], &format!("{name}.relu"), vec![]),
            (Layer::Tanh(_), _) => x = g.node("Tanh", &[&x], &format!("{name}.tanh"), vec![]),
            (Layer::Dropout(_), _) => {}
            (_, Flow::Features(_)) => {
                return Err(unsupported(&name, "an image layer after a linear layer"));
            }
        }
    }
    match flow {
        Flow::Features(out) if x == LOGITS => {
            check_classes("classifier", out, classes)?;
            Ok(x)
        }
        _ => Err(unsupported(
            "classifier",
            "the network does not end in a linear layer",
        )),
    }
}

/// Max or average pooling without padding; returns the output name and its `[C, H, W]`.
fn pool(
    g: &mut GraphBuilder,
    op: &str,
    layer: &str,
    kernel: [usize; 2],
    stride: [usize; 2],
    input: &str,
    [c, h, w]: [usize; 3],
) -> Result<(String, [usize; 3]), OnnxError> {
    let out = |n: usize, k: usize, s: usize| n.checked_sub(k).map(|room| room / s.max(1) + 1);
    let (Some(oh), Some(ow)) = (out(h, kernel[0], stride[0]), out(w, kernel[1], stride[1])) else {
        return Err(OnnxError::Shape {
            layer: layer.to_string(),
            what: "input [C, H, W], smaller than the window".into(),
            expected: vec![c, kernel[0], kernel[1]],
            found: vec![c, h, w],
        });
    };
    let y = g.node(
        op,
        &[input],
        layer,
        vec![
            ints("kernel_shape", &kernel),
            ints("strides", &stride),
            ints("pads", &[0, 0, 0, 0]),
        ],
    );
    Ok((y, [c, oh, ow]))
}

/// A burn `Linear` (`x W + b`, `W: [in, out]`) as `Gemm(x, W, b)` with `transB = 0`, output
/// named `output`; returns it and the output width.
fn linear(
    g: &mut GraphBuilder,
    layer: &str,
    output: &str,
    linear: &Linear,
    input: &str,
    width: usize,
) -> Result<(String, usize), OnnxError> {
    let [_, out] = linear.weight.val().dims();
    let weight = g.parameter(
        layer,
        &format!("{layer}.weight"),
        &linear.weight,
        [width, out],
    )?;
    let mut inputs = vec![input.to_string(), weight];
    if let Some(bias) = &linear.bias {
        inputs.push(g.parameter(layer, &format!("{layer}.bias"), bias, [out])?);
    }
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let y = g.node(
        "Gemm",
        &inputs,
        output,
        vec![int("transA", 0), int("transB", 0)],
    );
    Ok((y, out))
}

/// A burn `Conv2d` as ONNX `Conv` (both cross-correlate; weights `[out, in / groups, kh, kw]`);
/// returns the output name and its `[C, H, W]`.
fn conv(
    g: &mut GraphBuilder,
    layer: &str,
    conv: &Conv2d,
    input: &str,
    [channels, height, width]: [usize; 3],
) -> Result<(String, [usize; 3]), OnnxError> {
    let pads = match conv.padding {
        PaddingConfig2d::Valid => [0, 0, 0, 0],
        // burn's order is (top, left, bottom, right), ONNX's [h_begin, w_begin, h_end, w_end].
        PaddingConfig2d::Explicit(top, left, bottom, right) => [top, left, bottom, right],
        PaddingConfig2d::Same => return Err(unsupported(layer, "padding Same")),
    };
    let groups = conv.groups.max(1);
    if channels % groups != 0 {
        return Err(unsupported(
            layer,
            &format!("{channels} input channels in {groups} groups"),
        ));
    }
    let [out, ..] = conv.weight.val().dims();
    let [kh, kw] = conv.kernel_size;
    let weight = g.parameter(
        layer,
        &format!("{layer}.weight"),
        &conv.weight,
        [out, channels / groups, kh, kw],
    )?;
    let mut inputs = vec![input.to_string(), weight];
    if let Some(bias) = &conv.bias {
        inputs.push(g.parameter(layer, &format!("{layer}.bias"), bias, [out])?);
    }
    let size = |n: usize, begin: usize, end: usize, k: usize, stride: usize, dilation: usize| {
        let span = dilation * k.saturating_sub(1) + 1;
        (n + begin + end)
            .checked_sub(span)
            .map(|room| room / stride.max(1) + 1)
    };
    let [sh, sw] = conv.stride;
    let [dh, dw] = conv.dilation;
    let (Some(oh), Some(ow)) = (
        size(height, pads[0], pads[2], kh, sh, dh),
        size(width, pads[1], pads[3], kw, sw, dw),
    ) else {
        return Err(OnnxError::Shape {
            layer: layer.to_string(),
            what: "input [C, H, W], smaller than the kernel".into(),
            expected: vec![channels, kh, kw],
            found: vec![channels, height, width],
        });
    };
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let y = g.node(
        "Conv",
        &inputs,
        layer,
        vec![
            ints("kernel_shape", &[kh, kw]),
            ints("strides", &conv.stride),
            ints("dilations", &conv.dilation),
            ints("pads", &pads),
            int("group", to_i64(groups)),
        ],
    );
    Ok((y, [out, oh, ow]))
}

fn check_classes(layer: &str, found: usize, classes: usize) -> Result<(), OnnxError> {
    if found == classes {
        return Ok(());
    }
    Err(OnnxError::Shape {
        layer: layer.to_string(),
        what: "output width (the manifest's class count)".into(),
        expected: vec![classes],
        found: vec![found],
    })
}

fn unsupported(layer: &str, setting: &str) -> OnnxError {
    OnnxError::Unsupported {
        layer: layer.to_string(),
        setting: setting.to_string(),
    }
}
