//! `--set key.path=value` overrides on a YAML tree, and locating a key path in YAML text.

use serde_yaml::{Mapping, Value};

use crate::error::{Result, TrainError};

/// One parsed `--set key.path=value` argument.
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    /// The argument as given.
    pub arg: String,
    /// Dotted key path, split into components.
    pub path: Vec<String>,
    /// The value, parsed as YAML (so `0.05`, `true`, `[1000, 2000]`, `{type: constant}` and
    /// `null` all work; an empty value is `null`).
    pub value: Value,
}

impl Override {
    /// Parses `key.path=value`.
    pub fn parse(arg: &str) -> Result<Self> {
        let bad = |reason: &str| TrainError::Override {
            arg: arg.to_string(),
            reason: reason.to_string(),
        };
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| bad("expected key.path=value, e.g. training.max_iterations=400"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(bad("the key is empty"));
        }
        let path: Vec<String> = key.split('.').map(str::to_string).collect();
        if path.iter().any(String::is_empty) {
            return Err(bad("the key has an empty component"));
        }
        let value: Value = serde_yaml::from_str(value)
            .map_err(|e| bad(&format!("the value is not valid YAML: {e}")))?;
        Ok(Self {
            arg: arg.to_string(),
            path,
            value,
        })
    }

    /// The dotted key path.
    pub fn key(&self) -> String {
        self.path.join(".")
    }

    /// Sets the value in `root`, creating missing mappings on the way. A numeric component
    /// indexes into a sequence.
    pub fn apply(&self, root: &mut Value) -> Result<()> {
        let bad = |reason: String| TrainError::Override {
            arg: self.arg.clone(),
            reason,
        };
        let mut node = root;
        for (depth, comp) in self.path.iter().enumerate() {
            let last = depth + 1 == self.path.len();
            let here = self.path[..depth].join(".");
            if node.is_null() {
                *node = Value::Mapping(Mapping::new());
            }
            node = match node {
                Value::Mapping(map) => {
                    let k = Value::String(comp.clone());
                    if last {
                        map.insert(k, self.value.clone());
                        return Ok(());
                    }
                    map.entry(k).or_insert(Value::Null)
                }
                Value::Sequence(seq) => {
                    let i: usize = comp.parse().map_err(|_| {
                        bad(format!("`{here}` is a list; `{comp}` is not an index"))
                    })?;
                    let len = seq.len();
                    let slot = seq.get_mut(i).ok_or_else(|| {
                        bad(format!(
                            "`{here}` has {len} entries; index {i} is out of range"
                        ))
                    })?;
                    if last {
                        *slot = self.value.clone();
                        return Ok(());
                    }
                    slot
                }
                _ => {
                    return Err(bad(format!(
                        "`{here}` is a single value, it has no key `{comp}`"
                    )))
                }
            };
        }
        unreachable!("the path has at least one component")
    }
}

/// The 1-based line of `path` (e.g. `["model", "depth"]`) in block-style YAML `text`.
///
/// A line-oriented scan that tracks the chain of `key:` lines by indentation. When the full
/// path is not found as block keys (e.g. it sits inside a flow mapping `{depth: 21}`), the
/// line of the longest matching prefix is returned, which is where the value is.
pub fn locate_key(text: &str, path: &[&str]) -> Option<usize> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut best: Option<(usize, usize)> = None; // (matched components, line)
    for (lineno, raw) in text.lines().enumerate() {
        let line = strip_comment(raw);
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with("---") {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let Some(key) = block_key(trimmed) else {
            continue;
        };
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key));
        let matched = stack
            .iter()
            .zip(path)
            .take_while(|((_, k), p)| k == *p)
            .count();
        if matched == stack.len() && matched > best.map_or(0, |b| b.0) {
            best = Some((matched, lineno + 1));
            if matched == path.len() {
                break;
            }
        }
    }
    best.map(|(_, line)| line)
}

/// The key of a `key: ...` line (unquoted or quoted), if it is one.
fn block_key(trimmed: &str) -> Option<String> {
    if trimmed.starts_with('-') || trimmed.starts_with('{') || trimmed.starts_with('[') {
        return None;
    }
    let (key, rest) = if let Some(q) = trimmed.strip_prefix('"').or(trimmed.strip_prefix('\'')) {
        let quote = trimmed.as_bytes()[0] as char;
        let end = q.find(quote)?;
        (q[..end].to_string(), &q[end + 1..])
    } else {
        let colon = trimmed.find(':')?;
        (trimmed[..colon].trim_end().to_string(), &trimmed[colon..])
    };
    let rest = rest.trim_start();
    let after = rest.strip_prefix(':')?;
    if after.is_empty() || after.starts_with(' ') || after.starts_with('\t') {
        Some(key)
    } else {
        None
    }
}

/// `line` without a trailing `# comment` (a `#` preceded by whitespace, outside quotes).
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut quote: Option<u8> = None;
    for (i, &b) in bytes.iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) => {
                return &line[..i]
            }
            None => {}
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# a comment
name: demo
model:
  depth: 20   # ResNet-20
  shortcut: a
training:
  batch_size: 128
schedule:
  kind: {type: piecewise, milestones: [1, 2], gamma: 0.1}
  base_lr: 0.1
";

    #[test]
    fn locates_block_keys_and_flow_prefixes() {
        assert_eq!(locate_key(TEXT, &["name"]), Some(2));
        assert_eq!(locate_key(TEXT, &["model", "depth"]), Some(4));
        assert_eq!(locate_key(TEXT, &["model", "shortcut"]), Some(5));
        assert_eq!(locate_key(TEXT, &["training", "batch_size"]), Some(7));
        assert_eq!(locate_key(TEXT, &["schedule", "base_lr"]), Some(10));
        // Inside a flow mapping: the line of `kind`.
        assert_eq!(locate_key(TEXT, &["schedule", "kind", "gamma"]), Some(9));
        // Absent: the closest ancestor.
        assert_eq!(locate_key(TEXT, &["model", "num_classes"]), Some(3));
        assert_eq!(locate_key(TEXT, &["output", "runs_dir"]), None);
    }

    #[test]
    fn parses_and_applies_overrides() {
        let mut v: Value = serde_yaml::from_str(TEXT).unwrap();
        Override::parse("model.depth=32")
            .unwrap()
            .apply(&mut v)
            .unwrap();
        Override::parse("output.runs_dir=/tmp/x")
            .unwrap()
            .apply(&mut v)
            .unwrap();
        Override::parse("schedule.kind.milestones.1=5")
            .unwrap()
            .apply(&mut v)
            .unwrap();
        Override::parse("data.train_limit=")
            .unwrap()
            .apply(&mut v)
            .unwrap();
        assert_eq!(v["model"]["depth"], Value::from(32));
        assert_eq!(v["output"]["runs_dir"], Value::from("/tmp/x"));
        assert_eq!(v["schedule"]["kind"]["milestones"][1], Value::from(5));
        assert!(v["data"]["train_limit"].is_null());
        let o = Override::parse("schedule.kind.milestones=[10, 20]").unwrap();
        assert_eq!(o.key(), "schedule.kind.milestones");
        o.apply(&mut v).unwrap();
        assert_eq!(v["schedule"]["kind"]["milestones"][0], Value::from(10));
    }

    #[test]
    fn bad_overrides_are_named() {
        for (arg, needle) in [
            ("model.depth", "expected key.path=value"),
            ("=3", "key is empty"),
            ("a..b=3", "empty component"),
            ("x=[1, 2", "not valid YAML"),
        ] {
            let e = Override::parse(arg).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains(arg), "{e}");
        }
        let mut v: Value = serde_yaml::from_str(TEXT).unwrap();
        let e = Override::parse("name.first=3")
            .unwrap()
            .apply(&mut v)
            .unwrap_err();
        assert!(e.to_string().contains("`name` is a single value"), "{e}");
        let e = Override::parse("schedule.kind.milestones.7=3")
            .unwrap()
            .apply(&mut v)
            .unwrap_err();
        assert!(e.to_string().contains("index 7 is out of range"), "{e}");
    }
}
