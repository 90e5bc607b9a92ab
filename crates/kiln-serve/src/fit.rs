//! Fitting client images to the served model's input: the pipeline training's folder dataset
//! uses too, [`kiln_data::image`] (decode, grayscale, then the artifact's [`Fit`] rule: a plain
//! resize, or the MNIST fit for photos of digits). Re-exported here for clients of the server
//! crate.

pub use kiln_data::image::{Fit, Invert, fit_digit, fit_gray};
