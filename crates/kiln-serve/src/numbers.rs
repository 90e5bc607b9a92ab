//! Streaming deserialisation of request pixels: nested JSON arrays of numbers are flattened
//! straight into a `Vec<f64>` as they are parsed (no `serde_json::Value` tree, which costs an
//! allocation per number), and a wrong element is remembered rather than failing the whole
//! body, so the answer can say which instance is wrong and how.

use std::cell::Cell;
use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

thread_local! {
    /// Numbers kept per image while parsing on this thread (see [`with_pixel_cap`]).
    static PIXEL_CAP: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Runs `parse` keeping at most `pixels` numbers per image (the served model's
/// `channels * height * width`; a longer image is counted, not stored, and refused later), so
/// the bound follows the model that will run the request.
pub(crate) fn with_pixel_cap<T>(pixels: usize, parse: impl FnOnce() -> T) -> T {
    let before = PIXEL_CAP.with(|cap| cap.replace(pixels));
    let out = parse();
    PIXEL_CAP.with(|cap| cap.set(before));
    out
}

fn pixel_cap() -> usize {
    PIXEL_CAP.with(Cell::get)
}

/// Numbers from (nested) arrays, in order, and the first problem met, if any.
#[derive(Debug, Default)]
pub struct Flat {
    /// The numbers, up to the cap.
    pub values: Vec<f64>,
    /// Numbers seen, including any past the cap.
    pub count: usize,
    /// What was wrong: a non-number, or arrays nested too deep. Static, so a body full of bad
    /// elements costs no allocation per element.
    pub problem: Option<&'static str>,
}

impl Flat {
    fn note(&mut self, problem: &'static str) {
        self.problem.get_or_insert(problem);
    }

    fn push(&mut self, v: f64, cap: usize) {
        if self.values.len() < cap {
            self.values.push(v);
        }
        self.count += 1;
    }
}

/// Feeds one JSON value into a [`Flat`].
pub(crate) struct FlatSeed<'a> {
    /// Where numbers go.
    pub out: &'a mut Flat,
    /// Array depth of the value (the outermost array is 1).
    pub depth: usize,
    /// Deepest array allowed.
    pub max_depth: usize,
    /// Numbers kept at most.
    pub cap: usize,
}

impl<'de> DeserializeSeed<'de> for FlatSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FlatSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("numbers")
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.out.push(v as f64, self.cap);
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.out.push(v as f64, self.cap);
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.out.push(v, self.cap);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth > self.max_depth {
            self.out.note(
                "pixel arrays nest too deep ([channels][height][width] at most for an image)",
            );
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        }
        while seq
            .next_element_seed(FlatSeed {
                out: &mut *self.out,
                depth: self.depth + 1,
                ..self
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.out.note("pixels must be numbers, found a string");
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.out.note("pixels must be numbers, found a boolean");
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.out.note("pixels must be numbers, found null");
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.out.note("pixels must be numbers, found an object");
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// A v2 tensor's `data`: numbers nested up to five deep.
impl<'de> Deserialize<'de> for Flat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut flat = Flat::default();
        FlatSeed {
            out: &mut flat,
            depth: 0,
            max_depth: 5,
            cap: MAX_INSTANCES.saturating_mul(pixel_cap()).saturating_add(1),
        }
        .deserialize(d)?;
        Ok(flat)
    }
}

/// One `/predict` instance as sent.
#[derive(Debug)]
pub enum Instance {
    /// Numbers (flat, `[height][width]` or `[channels][height][width]`).
    Numbers(Flat),
    /// A base64 PNG or JPEG (bare, `data:` URL, or `{"b64": ...}`).
    Image(String),
    /// Something else; the message says what.
    Invalid(&'static str),
}

struct InstanceVisitor;

const INSTANCE_FORMS: &str =
    "an instance is pixel values (numbers), a base64 image or {\"b64\": ...}";

/// Most instances (images) any request may carry, whatever the config says: parsing stops
/// here, so a body of empty instances cannot make the server allocate without bound.
pub(crate) const MAX_INSTANCES: usize = 4096;

/// `instances`, refused past [`MAX_INSTANCES`] while parsing.
///
/// # Errors
/// The deserializer's error, or one naming the cap.
pub(crate) fn bounded_instances<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<Instance>, D::Error> {
    struct Bounded;
    impl<'de> Visitor<'de> for Bounded {
        type Value = Vec<Instance>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of instances")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Instance>, A::Error> {
            let mut out = Vec::new();
            while let Some(instance) = seq.next_element::<Instance>()? {
                if out.len() == MAX_INSTANCES {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_INSTANCES} instances"
                    )));
                }
                out.push(instance);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded)
}

impl<'de> Visitor<'de> for InstanceVisitor {
    type Value = Instance;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(INSTANCE_FORMS)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Instance, A::Error> {
        let mut flat = Flat::default();
        FlatSeed {
            out: &mut flat,
            depth: 1,
            max_depth: 3,
            cap: pixel_cap(),
        }
        .visit_seq(seq)?;
        Ok(Instance::Numbers(flat))
    }

    fn visit_str<E>(self, v: &str) -> Result<Instance, E> {
        Ok(Instance::Image(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Instance, E> {
        Ok(Instance::Image(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Instance, A::Error> {
        let mut image = None;
        let mut other = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "b64" && image.is_none() {
                match map.next_value::<serde_json::Value>()? {
                    serde_json::Value::String(s) => image = Some(s),
                    _ => other = true,
                }
            } else {
                map.next_value::<IgnoredAny>()?;
                other = true;
            }
        }
        Ok(match (image, other) {
            (Some(s), false) => Instance::Image(s),
            _ => {
                Instance::Invalid("an object instance must be {\"b64\": \"<base64 PNG or JPEG>\"}")
            }
        })
    }

    fn visit_bool<E>(self, _: bool) -> Result<Instance, E> {
        Ok(Instance::Invalid(
            "an instance is pixel values (numbers), a base64 image or {\"b64\": ...}, found a boolean",
        ))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Instance, E> {
        Ok(Instance::Invalid(
            "an instance is pixel values (numbers), a base64 image or {\"b64\": ...}, found a number",
        ))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Instance, E> {
        Ok(Instance::Invalid(
            "an instance is pixel values (numbers), a base64 image or {\"b64\": ...}, found a number",
        ))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Instance, E> {
        Ok(Instance::Invalid(
            "an instance is pixel values (numbers), a base64 image or {\"b64\": ...}, found a number",
        ))
    }

    fn visit_unit<E>(self) -> Result<Instance, E> {
        Ok(Instance::Invalid(
            "an instance is pixel values (numbers), a base64 image or {\"b64\": ...}, found null",
        ))
    }
}

impl<'de> Deserialize<'de> for Instance {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(InstanceVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_and_flat_numbers_flatten_alike() {
        let flat: Instance = serde_json::from_str("[1, 2, 3]").unwrap();
        let nested: Instance = serde_json::from_str("[[1], [2, [3]]]").unwrap();
        match (flat, nested) {
            (Instance::Numbers(a), Instance::Numbers(b)) => {
                assert_eq!(a.values, vec![1.0, 2.0, 3.0]);
                assert_eq!(b.values, a.values);
                assert!(a.problem.is_none() && b.problem.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn problems_are_remembered_not_fatal() {
        let Instance::Numbers(f) =
            serde_json::from_str::<Instance>(r#"[1, "x", [[[2]]], 3]"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(f.values, vec![1.0, 3.0]);
        assert!(f.problem.unwrap().contains("string"));
        assert!(matches!(
            serde_json::from_str::<Instance>(r#"{"b64": "aGk=", "x": 1}"#).unwrap(),
            Instance::Invalid(_)
        ));
        assert!(matches!(
            serde_json::from_str::<Instance>(r#"{"b64": "aGk="}"#).unwrap(),
            Instance::Image(s) if s == "aGk="
        ));
    }
}
