//! Comparing runs: a resolved config flattened into dotted keys (`training.optimizer.lr`), the
//! keys that differ across a set of runs, the diff of two configs, and run times.

use std::collections::{BTreeMap, BTreeSet};

/// A config flattened into dotted keys, in key order.
pub type FlatConfig = BTreeMap<String, toml::Value>;

/// Flattens a TOML table into dotted keys: `[training.optimizer] lr = 1e-3` becomes
/// `training.optimizer.lr`. Tables (inline ones too) are descended into; arrays and every
/// other value are leaves.
#[must_use]
pub fn flatten(table: &toml::Table) -> FlatConfig {
    let mut out = FlatConfig::new();
    flatten_into(table, "", &mut out);
    out
}

fn flatten_into(table: &toml::Table, prefix: &str, out: &mut FlatConfig) {
    for (key, value) in table {
        let dotted = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => flatten_into(inner, &dotted, out),
            leaf => {
                out.insert(dotted, leaf.clone());
            }
        }
    }
}

/// The keys whose value is not the same in every config: a key missing from some configs
/// counts as differing. Empty for fewer than two configs.
#[must_use]
pub fn differing_keys(configs: &[FlatConfig]) -> BTreeSet<String> {
    let Some((first, rest)) = configs.split_first() else {
        return BTreeSet::new();
    };
    let all_keys: BTreeSet<&String> = configs.iter().flat_map(BTreeMap::keys).collect();
    all_keys
        .into_iter()
        .filter(|key| {
            let value = first.get(*key);
            rest.iter().any(|config| config.get(*key) != value)
        })
        .cloned()
        .collect()
}

/// One key that differs between two configs; `None` on the side that lacks the key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyChange {
    /// The dotted key.
    pub key: String,
    /// Its value in the first config.
    pub a: Option<toml::Value>,
    /// Its value in the second config.
    pub b: Option<toml::Value>,
}

/// The keys that differ between `a` and `b`, in key order.
#[must_use]
pub fn diff(a: &FlatConfig, b: &FlatConfig) -> Vec<KeyChange> {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|key| a.get(*key) != b.get(*key))
        .map(|key| KeyChange {
            key: key.clone(),
            a: a.get(key).cloned(),
            b: b.get(key).cloned(),
        })
        .collect()
}

/// A value as a person reads it: strings without quotes, everything else as TOML writes it.
#[must_use]
pub fn display_value(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Seconds since the Unix epoch of an RFC 3339 time (as `run.json` records them), or `None`
/// when it does not parse.
#[must_use]
pub fn unix_seconds(rfc3339: &str) -> Option<f64> {
    let time = chrono::DateTime::parse_from_rfc3339(rfc3339).ok()?;
    let seconds = time.timestamp() as f64;
    Some(seconds + f64::from(time.timestamp_subsec_nanos()) * 1e-9)
}

/// A duration as `42.1s`, `3m07s` or `2h05m`.
#[must_use]
pub fn format_duration(seconds: f64) -> String {
    if seconds < 60.0 {
        return format!("{seconds:.1}s");
    }
    let whole = seconds.round() as u64;
    if whole < 3600 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{}h{:02}m", whole / 3600, (whole % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(text: &str) -> FlatConfig {
        flatten(&text.parse::<toml::Table>().unwrap())
    }

    #[test]
    fn flatten_uses_dotted_keys_and_keeps_arrays_whole() {
        let c = flat(
            "[data]\nnormalization = { mean = 0.5, std = 0.5 }\n\
             [model]\nhidden = [32, 16]\n[training.optimizer]\nlr = 2e-3\nkind = \"adam\"\n",
        );
        let keys: Vec<&str> = c.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "data.normalization.mean",
                "data.normalization.std",
                "model.hidden",
                "training.optimizer.kind",
                "training.optimizer.lr",
            ]
        );
        assert_eq!(display_value(&c["model.hidden"]), "[32, 16]");
        assert_eq!(display_value(&c["training.optimizer.lr"]), "0.002");
        assert_eq!(display_value(&c["training.optimizer.kind"]), "adam");
    }

    #[test]
    fn differing_keys_drops_equal_ones_and_counts_missing_as_different() {
        let configs = [
            flat("a = 1\nb = 2\n[t]\nlr = 0.1\n"),
            flat("a = 1\nb = 3\n[t]\nlr = 0.1\n"),
            flat("a = 1\nb = 2\n[t]\nlr = 0.1\nextra = true\n"),
        ];
        let keys: Vec<String> = differing_keys(&configs).into_iter().collect();
        assert_eq!(keys, ["b", "t.extra"]);
        assert!(differing_keys(&configs[..1]).is_empty());
        assert!(differing_keys(&[]).is_empty());
    }

    #[test]
    fn diff_lists_changed_and_one_sided_keys_in_order() {
        let a = flat("same = 1\n[training]\nepochs = 2\nold = \"x\"\n");
        let b = flat("same = 1\n[training]\nepochs = 3\nnew = [1]\n");
        let changes = diff(&a, &b);
        let show = |v: &Option<toml::Value>| v.as_ref().map(display_value);
        let got: Vec<(&str, Option<String>, Option<String>)> = changes
            .iter()
            .map(|c| (c.key.as_str(), show(&c.a), show(&c.b)))
            .collect();
        assert_eq!(
            got,
            [
                ("training.epochs", Some("2".into()), Some("3".into())),
                ("training.new", None, Some("[1]".into())),
                ("training.old", Some("x".into()), None),
            ]
        );
        assert!(diff(&a, &a).is_empty());
    }

    #[test]
    fn times_parse_and_durations_read_well() {
        let start = unix_seconds("2026-11-28T07:52:12.250+01:00").unwrap();
        let end = unix_seconds("2026-11-28T06:53:20.750Z").unwrap();
        assert!((end - start - 68.5).abs() < 1e-6, "{}", end - start);
        assert_eq!(unix_seconds("yesterday"), None);
        assert_eq!(format_duration(12.0), "12.0s");
        assert_eq!(format_duration(68.5), "1m09s");
        assert_eq!(format_duration(7500.0), "2h05m");
    }
}
