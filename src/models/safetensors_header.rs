//! Reads and validates the header of a `.safetensors` file without reading its tensor data.
//!
//! Layout detection looks at tensor names, and a corrupt or truncated download must be a clear
//! error naming the file before anything maps gigabytes of it. The checks mirror the format's
//! rules: an 8-byte little-endian header length, a JSON object header, and for every tensor a
//! known dtype, offsets inside the data area, `dtype size × element count` = byte length, and
//! the tensors tiling the data area with no gap or overlap.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::ModelError;

/// The largest header the format allows (same limit as the `safetensors` crate).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorEntry {
    /// Dtype name as written (`F16`, `F32`, `BF16`…).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<u64>,
    /// Byte range `[start, end)` inside the data area.
    pub data_offsets: (u64, u64),
}

/// A validated header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafetensorsHeader {
    /// The file it came from.
    pub path: PathBuf,
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorEntry>,
    /// The optional `__metadata__` string map.
    pub metadata: BTreeMap<String, String>,
    /// Bytes of tensor data (file size − 8 − header length).
    pub data_bytes: u64,
}

/// Bits per element of a safetensors dtype name, `None` when unknown.
fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        _ => return None,
    })
}

fn invalid(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::InvalidSafetensors { reason: reason.into(), path: path.to_path_buf() }
}

/// Reads and validates the header of `path`, reading only the header bytes.
///
/// # Errors
/// [`ModelError::InvalidSafetensors`] naming the file and what is wrong; I/O errors.
pub fn read_header(path: &Path) -> Result<SafetensorsHeader, ModelError> {
    let mut file = fs_err::File::open(path)?;
    let file_bytes = file.metadata()?.len();
    if file_bytes < 8 {
        return Err(invalid(
            path,
            format!("file is {file_bytes} bytes, shorter than the 8-byte header length"),
        ));
    }
    let mut length_bytes = [0_u8; 8];
    file.read_exact(&mut length_bytes)?;
    let header_bytes = u64::from_le_bytes(length_bytes);
    if header_bytes > MAX_HEADER_BYTES {
        return Err(invalid(
            path,
            format!("header length {header_bytes} exceeds the {MAX_HEADER_BYTES}-byte limit"),
        ));
    }
    if header_bytes > file_bytes - 8 {
        return Err(invalid(
            path,
            format!(
                "header length {header_bytes} runs past the end of the {file_bytes}-byte file (truncated?)"
            ),
        ));
    }
    let mut header = vec![0_u8; usize::try_from(header_bytes).unwrap_or(0)];
    file.read_exact(&mut header)?;
    let data_bytes = file_bytes - 8 - header_bytes;
    parse_header(path, &header, data_bytes)
}

fn parse_header(
    path: &Path,
    header: &[u8],
    data_bytes: u64,
) -> Result<SafetensorsHeader, ModelError> {
    let json: serde_json::Value = serde_json::from_slice(header)
        .map_err(|err| invalid(path, format!("header is not JSON ({err})")))?;
    let serde_json::Value::Object(object) = json else {
        return Err(invalid(path, "header is not a JSON object"));
    };
    let mut tensors = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    for (name, value) in object {
        if name == "__metadata__" {
            let Some(map) = value.as_object() else {
                return Err(invalid(path, "__metadata__ is not an object"));
            };
            for (key, value) in map {
                let Some(text) = value.as_str() else {
                    return Err(invalid(
                        path,
                        format!("__metadata__ value {key:?} is not a string"),
                    ));
                };
                metadata.insert(key.clone(), text.to_owned());
            }
            continue;
        }
        let entry = parse_entry(path, &name, &value)?;
        tensors.insert(name, entry);
    }
    check_offsets(path, &tensors, data_bytes)?;
    Ok(SafetensorsHeader { path: path.to_path_buf(), tensors, metadata, data_bytes })
}

fn parse_entry(
    path: &Path,
    name: &str,
    value: &serde_json::Value,
) -> Result<TensorEntry, ModelError> {
    let field = |key: &str| {
        value.get(key).ok_or_else(|| invalid(path, format!("tensor {name:?} has no {key}")))
    };
    let dtype = field("dtype")?
        .as_str()
        .ok_or_else(|| invalid(path, format!("tensor {name:?}: dtype is not a string")))?
        .to_owned();
    let bits = dtype_bits(&dtype)
        .ok_or_else(|| invalid(path, format!("tensor {name:?}: unknown dtype {dtype:?}")))?;
    let as_numbers = |key: &str| -> Result<Vec<u64>, ModelError> {
        field(key)?
            .as_array()
            .and_then(|items| {
                items.iter().map(serde_json::Value::as_u64).collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| {
                invalid(path, format!("tensor {name:?}: {key} is not a list of unsigned integers"))
            })
    };
    let shape = as_numbers("shape")?;
    let offsets = as_numbers("data_offsets")?;
    let [start, end] = offsets[..] else {
        return Err(invalid(path, format!("tensor {name:?}: data_offsets needs 2 numbers")));
    };
    if end < start {
        return Err(invalid(
            path,
            format!("tensor {name:?}: data_offsets end {end} < start {start}"),
        ));
    }
    let elements = shape
        .iter()
        .try_fold(1_u64, |acc, &dim| acc.checked_mul(dim))
        .ok_or_else(|| invalid(path, format!("tensor {name:?}: shape {shape:?} overflows")))?;
    let expected_bits = elements
        .checked_mul(bits)
        .ok_or_else(|| invalid(path, format!("tensor {name:?}: shape {shape:?} overflows")))?;
    if expected_bits % 8 != 0 || expected_bits / 8 != end - start {
        return Err(invalid(
            path,
            format!(
                "tensor {name:?}: {dtype} × {shape:?} needs {} bytes but data_offsets span {}",
                expected_bits.div_ceil(8),
                end - start
            ),
        ));
    }
    Ok(TensorEntry { dtype, shape, data_offsets: (start, end) })
}

fn check_offsets(
    path: &Path,
    tensors: &BTreeMap<String, TensorEntry>,
    data_bytes: u64,
) -> Result<(), ModelError> {
    let mut spans: Vec<(u64, u64, &str)> = tensors
        .iter()
        .map(|(name, t)| (t.data_offsets.0, t.data_offsets.1, name.as_str()))
        .collect();
    spans.sort_unstable();
    let mut cursor = 0;
    for (start, end, name) in spans {
        if end > data_bytes {
            return Err(invalid(
                path,
                format!(
                    "tensor {name:?} ends at byte {end} of the data but the file holds only {data_bytes} (truncated?)"
                ),
            ));
        }
        if start != cursor {
            return Err(invalid(
                path,
                format!("tensor {name:?} starts at {start}, expected {cursor} (gap or overlap)"),
            ));
        }
        cursor = end;
    }
    if cursor != data_bytes {
        return Err(invalid(
            path,
            format!("{} trailing bytes after the last tensor", data_bytes - cursor),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn write_real_file(dir: &Path) -> PathBuf {
        let a =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 3], &[0_u8; 24])
                .expect("view");
        let b = safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![4], &[1_u8; 8])
            .expect("view");
        let tensors = HashMap::from([("a.weight".to_owned(), a), ("b.bias".to_owned(), b)]);
        let bytes = safetensors::serialize(&tensors, None).expect("serialize");
        let path = dir.join("ok.safetensors");
        fs_err::write(&path, bytes).expect("write");
        path
    }

    #[test]
    fn reads_a_file_written_by_the_safetensors_crate() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = write_real_file(dir.path());
        let header = read_header(&path).expect("valid");
        assert_eq!(header.tensors.len(), 2);
        assert_eq!(header.tensors["a.weight"].shape, vec![2, 3]);
        assert_eq!(header.data_bytes, 32);
    }

    #[test]
    fn truncated_file_names_the_file_and_the_tensor() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = write_real_file(dir.path());
        let bytes = fs_err::read(&path).expect("read");
        fs_err::write(&path, &bytes[..bytes.len() - 5]).expect("truncate");
        let message = read_header(&path).expect_err("truncated").to_string();
        assert!(message.contains("truncated"), "{message}");
        assert!(message.ends_with("ok.safetensors"), "{message}");
        fs_err::write(&path, &bytes[..4]).expect("truncate");
        assert!(read_header(&path).expect_err("tiny").to_string().contains("shorter than"));
    }

    #[test]
    fn rejects_bad_length_json_and_shape_mismatch() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("bad.safetensors");
        let write = |header: &str, data: usize| {
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend(std::iter::repeat_n(0_u8, data));
            fs_err::write(&path, bytes).expect("write");
        };
        fs_err::write(&path, u64::MAX.to_le_bytes()).expect("write");
        assert!(read_header(&path).expect_err("length").to_string().contains("limit"));
        write("{not json", 0);
        assert!(read_header(&path).expect_err("json").to_string().contains("not JSON"));
        write(r#"{"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8);
        assert!(read_header(&path).expect_err("shape").to_string().contains("needs 12 bytes"));
        write(r#"{"t":{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}}"#, 1);
        assert!(read_header(&path).expect_err("dtype").to_string().contains("unknown dtype"));
        write(r#"{"t":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#, 2);
        assert!(read_header(&path).expect_err("gap").to_string().contains("gap"));
        write(
            r#"{"__metadata__":{"format":"pt"},"t":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#,
            2,
        );
        assert_eq!(read_header(&path).expect("ok").metadata["format"], "pt");
    }
}
