//! Turning what clients send (numbers, PNG or JPEG bytes, base64) into `u8` pixels of the
//! served model's input shape ([`InputSchema`], from its artifact). Every path ends in `u8`
//! levels, which then go through the same `preprocess()` as training.

use std::io::Cursor;

use base64::Engine as _;
use image::{ImageFormat, ImageReader, Limits};
use serde::Deserialize;

use crate::config::LimitsConfig;
use crate::error::ApiError;
use crate::fit::{Invert, fit_gray};
use crate::model::InputSchema;
use crate::numbers::{Flat, Instance};

/// How numeric pixels are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// `u8` levels when any value is above 1, else `[0, 1]` floats.
    #[default]
    Auto,
    /// Levels 0-255 (integers).
    U8,
    /// Floats in `[0, 1]`.
    Unit,
}

/// Limits on encoded images, from the server's config.
#[derive(Debug, Clone, Copy)]
pub struct ImageLimits {
    /// Largest side, in pixels.
    pub max_side: u32,
    /// Most pixels decoded for one request, all its images together.
    pub max_pixels: u64,
}

impl From<&LimitsConfig> for ImageLimits {
    fn from(l: &LimitsConfig) -> Self {
        Self {
            max_side: l.max_image_side,
            max_pixels: l.max_image_pixels,
        }
    }
}

fn count_error(schema: InputSchema, found: usize) -> ApiError {
    ApiError::bad_request(
        "wrong_pixel_count",
        format!(
            "an image needs {} pixel values (shape {:?}, {}), found {found}",
            schema.pixels(),
            schema.shape,
            schema.describe()
        ),
    )
}

/// Pixels of one image given as numbers (flattened while parsing; see [`crate::numbers`]).
///
/// # Errors
/// 400 for a non-number, arrays nested too deep, a wrong count, or a value out of range.
pub fn pixels_from_flat(
    flat: &Flat,
    scale: Scale,
    schema: InputSchema,
) -> Result<Vec<u8>, ApiError> {
    if let Some(problem) = &flat.problem {
        return Err(ApiError::bad_request("bad_pixels", *problem));
    }
    if flat.count != schema.pixels() {
        return Err(count_error(schema, flat.count));
    }
    pixels_from_numbers(&flat.values, scale, schema)
}

/// Checks and scales one image's numbers (`channels * height * width` of them) to `u8` levels.
///
/// # Errors
/// 400 for a wrong count, NaN or infinity, a negative value, or one out of range for `scale`.
pub fn pixels_from_numbers(
    values: &[f64],
    scale: Scale,
    schema: InputSchema,
) -> Result<Vec<u8>, ApiError> {
    if values.len() != schema.pixels() {
        return Err(count_error(schema, values.len()));
    }
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        return Err(ApiError::bad_request(
            "bad_pixels",
            format!("pixel values must be finite numbers, found {v}"),
        ));
    }
    if let Some(v) = values.iter().find(|&&v| v < 0.0) {
        return Err(ApiError::bad_request(
            "bad_pixels",
            format!("pixel values must not be negative, found {v}"),
        ));
    }
    let max = values.iter().copied().fold(0.0, f64::max);
    let scale = match scale {
        Scale::Auto if max > 1.0 => Scale::U8,
        Scale::Auto => Scale::Unit,
        s => s,
    };
    if scale == Scale::U8 {
        if max > 255.0 {
            return Err(ApiError::bad_request(
                "bad_pixels",
                format!("u8 pixel values must be 0-255, found {max}"),
            ));
        }
        Ok(values.iter().map(|&v| v.round() as u8).collect())
    } else {
        if max > 1.0 {
            return Err(ApiError::bad_request(
                "bad_pixels",
                format!("unit pixel values must be in [0, 1], found {max}"),
            ));
        }
        Ok(values
            .iter()
            .map(|&v| kiln_data::preprocess::unit_to_u8(v as f32))
            .collect())
    }
}

/// One image's `u8` levels (the model's `height x width`, one channel) as a grey PNG,
/// base64-encoded (standard alphabet, padded): what `"explain": true` answers for each instance.
#[must_use]
pub fn png_base64(pixels: &[u8], schema: InputSchema) -> String {
    let [height, width] = schema.size().map(|s| u32::try_from(s).unwrap_or(u32::MAX));
    debug_assert_eq!(pixels.len(), schema.pixels());
    let mut png = Vec::new();
    // Encoding a well-formed grey image into memory cannot fail; should it, the field is
    // empty rather than the answer lost.
    let encoded = image::GrayImage::from_raw(width, height, pixels.to_vec())
        .map(|image| image.write_to(&mut Cursor::new(&mut png), ImageFormat::Png));
    if !matches!(encoded, Some(Ok(()))) {
        return String::new();
    }
    base64::engine::general_purpose::STANDARD.encode(png)
}

/// Decodes base64 (standard alphabet, padding optional, a `data:` URL prefix allowed).
///
/// # Errors
/// 400 `bad_base64`.
pub fn decode_base64(text: &str) -> Result<Vec<u8>, ApiError> {
    let text = text.trim();
    let text = match text.strip_prefix("data:") {
        Some(rest) => rest.split_once(',').map_or(rest, |(_, data)| data),
        None => text,
    };
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine
        .decode(text)
        .map_err(|e| ApiError::bad_request("bad_base64", format!("invalid base64: {e}")))
}

/// Decodes a PNG or JPEG and fits it to the model's input by its artifact's rule (see
/// [`crate::fit`]). The dimensions are read
/// from the header and checked before any pixel is decoded, against the longest side allowed
/// and against `budget`, the pixels this request may still decode (reduced here).
///
/// # Errors
/// 400 `bad_image` for bytes that are not a PNG or JPEG or do not decode; 413 `image_too_large`
/// for an image over the limits.
pub fn pixels_from_image(
    bytes: &[u8],
    limits: ImageLimits,
    invert: Invert,
    budget: &mut u64,
    schema: InputSchema,
) -> Result<Vec<u8>, ApiError> {
    let bad = |m: String| ApiError::bad_request("bad_image", m);
    let format = image::guess_format(bytes)
        .ok()
        .filter(|f| matches!(f, ImageFormat::Png | ImageFormat::Jpeg))
        .ok_or_else(|| bad("not a PNG or JPEG image".into()))?;
    let reader = || {
        let mut r = ImageReader::new(Cursor::new(bytes));
        r.set_format(format);
        r
    };
    let (w, h) = reader()
        .into_dimensions()
        .map_err(|e| bad(format!("cannot read the image header: {e}")))?;
    if w == 0 || h == 0 {
        return Err(bad(format!("image is {w}x{h}")));
    }
    let area = u64::from(w) * u64::from(h);
    if w > limits.max_side || h > limits.max_side || area > *budget {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "image_too_large",
            format!(
                "image is {w}x{h}; the limits are {} pixels a side and {} pixels for all the images of one request",
                limits.max_side, limits.max_pixels
            ),
        ));
    }
    *budget -= area;
    let mut decoder_limits = Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side);
    decoder_limits.max_image_height = Some(limits.max_side);
    decoder_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8));
    let mut r = reader();
    r.limits(decoder_limits);
    let image = r
        .decode()
        .map_err(|e| bad(format!("cannot decode the image: {e}")))?;
    Ok(fit_gray(
        &image.to_luma8(),
        schema.size(),
        schema.fit,
        invert,
    ))
}

/// One `/predict` instance: numbers, a base64 string, or `{"b64": "..."}`.
///
/// # Errors
/// 400 naming what is wrong with the instance.
pub fn pixels_from_instance(
    instance: &Instance,
    scale: Scale,
    limits: ImageLimits,
    invert: Invert,
    budget: &mut u64,
    schema: InputSchema,
) -> Result<Vec<u8>, ApiError> {
    match instance {
        Instance::Numbers(flat) => pixels_from_flat(flat, scale, schema),
        Instance::Image(text) => {
            pixels_from_image(&decode_base64(text)?, limits, invert, budget, schema)
        }
        Instance::Invalid(message) => Err(ApiError::bad_request("bad_instance", *message)),
    }
}
