//! `cryo show --json`: the records as they are, bytes fields summarised (see show/).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use super::{vma_kind_name, Loaded};
use crate::error::Result;

/// Bytes fields of the schema, summarised in JSON.
const BYTES_FIELDS: &[&str] = &["xstate", "raw", "data", "sha256", "build_id"];

/// Bytes fields at most this long also get their contents, in hex, in JSON.
const HEX_LIMIT: usize = 64;

/// The image directory `dir` as one JSON object (see the module docs for its shape).
pub fn to_json(dir: &Path) -> Result<Value> {
    let img = Loaded::read(dir)?;
    let processes: Vec<Value> = img
        .processes
        .iter()
        .map(|p| {
            let mut mm = to_value(&p.mm);
            if let Some(vmas) = mm.get_mut("vmas").and_then(Value::as_array_mut) {
                for vma in vmas {
                    if let Some(kind) = vma.get_mut("kind") {
                        let name = kind.as_i64().map(|k| vma_kind_name(k as i32));
                        if let Some(name) = name {
                            *kind = Value::String(name);
                        }
                    }
                }
            }
            json!({
                "pstree": to_value(&p.entry),
                "core": to_value(&p.core),
                "mm": mm,
            })
        })
        .collect();
    let mut value = json!({
        "format_version": format!("{}.{}", img.major, img.minor),
        "dir": dir.display().to_string(),
        "inventory": to_value(&img.inventory),
        "processes": processes,
        "files": img.files.iter().map(to_value).collect::<Vec<_>>(),
    });
    if let Some(check) = &img.check {
        value["check"] = to_value(check);
    }
    summarise_bytes(&mut value);
    Ok(value)
}

/// A record as JSON. The schema types hold only numbers, strings, bools, vectors and
/// options, which always serialize.
fn to_value<T: serde::Serialize>(record: &T) -> Value {
    serde_json::to_value(record).unwrap_or_else(|e| json!({ "error": e.to_string() }))
}

/// Replaces every bytes field (an array of numbers under a key in [`BYTES_FIELDS`]) with
/// `{"len": N}`, plus `"hex"` when it is short.
pub(super) fn summarise_bytes(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let bytes = BYTES_FIELDS.contains(&key.as_str())
                    && v.as_array()
                        .is_some_and(|a| a.iter().all(|x| x.as_u64().is_some_and(|b| b < 256)));
                if bytes {
                    let data: Vec<u8> = v
                        .as_array()
                        .map(|a| a.iter().filter_map(|x| x.as_u64()).map(|b| b as u8))
                        .into_iter()
                        .flatten()
                        .collect();
                    let mut summary = json!({ "len": data.len() });
                    if data.len() <= HEX_LIMIT {
                        summary["hex"] =
                            Value::String(data.iter().fold(String::new(), |mut s, b| {
                                let _ = write!(s, "{b:02x}");
                                s
                            }));
                    }
                    *v = summary;
                } else {
                    summarise_bytes(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(summarise_bytes),
        _ => {}
    }
}
