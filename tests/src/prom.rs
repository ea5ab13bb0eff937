//! A strict reader of Prometheus' text exposition format (version 0.0.4), for tests of
//! `/metrics`: every line is a `# HELP`, a `# TYPE` or a sample `name{label="value",...}
//! value`; every sample belongs to a family announced by `# TYPE` (and `# HELP`) before it,
//! histogram samples by their `_bucket`, `_sum` and `_count` suffixes.

use std::collections::{BTreeMap, BTreeSet};

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// Whether every `(key, value)` of `want` is among the sample's labels.
    pub fn has(&self, want: &[(&str, &str)]) -> bool {
        want.iter()
            .all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }
}

/// Parsed exposition text.
#[derive(Clone, Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// Family name → type (`counter`, `gauge`, `histogram`, ...).
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    /// The sum of the samples named `name` whose labels include `want`; `None` if there are
    /// none.
    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        let mut found = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.has(want))
            .peekable();
        found.peek()?;
        Some(found.map(|s| s.value).sum())
    }

    /// The samples named `name` whose labels include `want`.
    pub fn all<'a>(&'a self, name: &'a str, want: &'a [(&str, &str)]) -> Vec<&'a Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name && s.has(want))
            .collect()
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// `key="value",...` up to the closing brace; returns the labels and the rest after `}`.
fn parse_labels(mut s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let (key, rest) = s.split_once("=\"").ok_or("label without =\"")?;
        if !is_name(key) || key.starts_with("__") {
            return Err(format!("bad label name {key:?}"));
        }
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(key.to_owned(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        s = &rest[end + 1..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let (labels, rest) = match line[name_end..].strip_prefix('{') {
        Some(inner) => parse_labels(inner)?,
        None => (BTreeMap::new(), &line[name_end..]),
    };
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut parts = rest.split(' ');
    let value = parts.next().and_then(parse_value).ok_or("bad value")?;
    if let Some(ts) = parts.next() {
        ts.parse::<i64>().map_err(|_| "bad timestamp")?;
    }
    if parts.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The family a sample belongs to, given the families typed so far.
fn family<'a>(name: &'a str, types: &BTreeMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            ) {
                return Some(base);
            }
        }
    }
    None
}

/// Parses `text`; the error names the first bad line.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut helped = BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let bad = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            if !is_name(name) {
                return Err(bad("bad HELP name"));
            }
            helped.insert(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| bad("TYPE without type"))?;
            let known = ["counter", "gauge", "histogram", "summary", "untyped"];
            if !is_name(name) || !known.contains(&kind) {
                return Err(bad("bad TYPE"));
            }
            if out.types.insert(name.to_owned(), kind.to_owned()).is_some() {
                return Err(bad("family typed twice"));
            }
        } else if line.starts_with('#') {
            continue; // a comment
        } else {
            let sample = parse_sample(line).map_err(|e| bad(&e))?;
            let fam = family(&sample.name, &out.types).ok_or_else(|| bad("no TYPE before"))?;
            if !helped.contains(fam) {
                return Err(bad("no HELP before"));
            }
            out.samples.push(sample);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "# HELP a_total Things.\n# TYPE a_total counter\na_total{topic=\"x\",p=\"q\\\"r\"} 3\n\
        # HELP h Latency.\n# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.7\nh_count 2\n";

    #[test]
    fn good_text_parses() {
        let e = parse(GOOD).unwrap();
        assert_eq!(e.sum("a_total", &[("topic", "x")]), Some(3.0));
        assert_eq!(e.all("a_total", &[])[0].labels["p"], "q\"r");
        assert_eq!(e.sum("h_count", &[]), Some(2.0));
        assert_eq!(e.types["h"], "histogram");
    }

    #[test]
    fn bad_text_is_refused() {
        let cases = [
            "a 1\n",                                                // no TYPE
            "# TYPE a counter\na 1\n",                              // no HELP
            "# HELP a x\n# TYPE a counter\na{b=1} 1\n",             // unquoted label
            "# HELP a x\n# TYPE a counter\na{b=\"1\" 1\n",          // unterminated
            "# HELP a x\n# TYPE a counter\na one\n",                // bad value
            "# HELP a x\n# TYPE a counter\n9a 1\n",                 // bad name
            "# HELP a x\n# TYPE a counter\na{b=\"1\",b=\"2\"} 1\n", // label twice
            "# HELP a x\n# TYPE a counter\na  1\n",                 // two spaces
            "# HELP a x\n# TYPE a gauge\na_count 1\n",              // suffix of a non-histogram
        ];
        for text in cases {
            assert!(parse(text).is_err(), "{text:?} parsed");
        }
    }
}
