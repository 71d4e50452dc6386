//! The header of a GGUF file (metadata and tensor table) without its tensors: what the
//! memory calculation ([`crate::memory`]) needs from a `.gguf` model, readable by the
//! ingress, which does not link candle. Arrays (the tokenizer's tokens and merges) are
//! skipped, only their length is kept. Format: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::Path;

/// One metadata value (arrays only by their length).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// Any unsigned or non-negative integer.
    Uint(u64),
    /// A negative integer.
    Int(i64),
    /// `f32` or `f64`.
    Float(f64),
    /// `bool`.
    Bool(bool),
    /// A string.
    Text(String),
    /// An array: its length.
    Array(u64),
}

/// One tensor of the table: its name, dims (innermost first, as GGUF stores them) and
/// GGML type id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions.
    pub dims: Vec<u64>,
    /// GGML type id (see [`crate::memory::GGML_TYPES`]).
    pub ggml_type: u32,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// The header of a GGUF file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GgufHeader {
    /// Metadata by key.
    pub metadata: BTreeMap<String, MetaValue>,
    /// Tensors in file order.
    pub tensors: Vec<TensorInfo>,
}

/// Longest string or name accepted (a bound against corrupt lengths).
const MAX_STRING: u64 = 1 << 24;
/// Most metadata entries, tensors and dimensions accepted.
const MAX_COUNT: u64 = 1 << 24;

struct Reader<R> {
    r: R,
}

impl<R: Read> Reader<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut b = [0u8; N];
        self.r
            .read_exact(&mut b)
            .map_err(|e| format!("truncated header: {e}"))?;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn count(&mut self, what: &str) -> Result<u64, String> {
        let n = self.u64()?;
        if n > MAX_COUNT {
            return Err(format!("{what} count {n} is not plausible"));
        }
        Ok(n)
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.u64()?;
        if n > MAX_STRING {
            return Err(format!("a string of {n} bytes is not plausible"));
        }
        let mut b = vec![0u8; n as usize];
        self.r
            .read_exact(&mut b)
            .map_err(|e| format!("truncated header: {e}"))?;
        String::from_utf8(b).map_err(|_| "a string is not UTF-8".to_string())
    }
    /// Reads (or, for arrays, skips) one value of type `t`.
    fn value(&mut self, t: u32) -> Result<MetaValue, String> {
        Ok(match t {
            0 => MetaValue::Uint(u64::from(self.bytes::<1>()?[0])),
            1 => int(i64::from(i8::from_le_bytes(self.bytes()?))),
            2 => MetaValue::Uint(u64::from(u16::from_le_bytes(self.bytes()?))),
            3 => int(i64::from(i16::from_le_bytes(self.bytes()?))),
            4 => MetaValue::Uint(u64::from(self.u32()?)),
            5 => int(i64::from(i32::from_le_bytes(self.bytes()?))),
            6 => MetaValue::Float(f64::from(f32::from_le_bytes(self.bytes()?))),
            7 => MetaValue::Bool(self.bytes::<1>()?[0] != 0),
            8 => MetaValue::Text(self.string()?),
            9 => {
                let item = self.u32()?;
                let n = self.u64()?;
                if item == 9 {
                    return Err("nested arrays are not supported".into());
                }
                match fixed_size(item) {
                    Some(size) => {
                        let bytes = n
                            .checked_mul(size)
                            .ok_or_else(|| format!("an array of {n} items is not plausible"))?;
                        let skipped =
                            std::io::copy(&mut (&mut self.r).take(bytes), &mut std::io::sink())
                                .map_err(|e| format!("truncated header: {e}"))?;
                        if skipped != bytes {
                            return Err("truncated header in an array".into());
                        }
                    }
                    None => {
                        for _ in 0..n {
                            self.value(item)?;
                        }
                    }
                }
                MetaValue::Array(n)
            }
            10 => MetaValue::Uint(self.u64()?),
            11 => int(i64::from_le_bytes(self.bytes()?)),
            12 => MetaValue::Float(f64::from_le_bytes(self.bytes()?)),
            other => return Err(format!("unknown metadata value type {other}")),
        })
    }
}

fn int(v: i64) -> MetaValue {
    match u64::try_from(v) {
        Ok(u) => MetaValue::Uint(u),
        Err(_) => MetaValue::Int(v),
    }
}

/// Bytes of one value of a fixed-size metadata type.
fn fixed_size(t: u32) -> Option<u64> {
    match t {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

impl GgufHeader {
    /// Reads the header of the GGUF file at `path` (versions 2 and 3).
    pub fn read(path: &Path) -> Result<GgufHeader, String> {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        GgufHeader::from_reader(BufReader::new(file))
            .map_err(|e| format!("{}: not a readable GGUF file: {e}", path.display()))
    }

    /// Reads a header from `r`, positioned at the file's start.
    pub fn from_reader(r: impl Read) -> Result<GgufHeader, String> {
        let mut r = Reader { r };
        if &r.bytes::<4>()? != b"GGUF" {
            return Err("no GGUF magic".into());
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!("GGUF version {version} is not supported (2 or 3)"));
        }
        let tensors = r.count("tensor")?;
        let kvs = r.count("metadata")?;
        let mut out = GgufHeader::default();
        for _ in 0..kvs {
            let key = r.string()?;
            let t = r.u32()?;
            let v = r.value(t)?;
            out.metadata.insert(key, v);
        }
        for _ in 0..tensors {
            let name = r.string()?;
            let n_dims = r.u32()?;
            if n_dims > 8 {
                return Err(format!("tensor {name} has {n_dims} dimensions"));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64()?);
            }
            let ggml_type = r.u32()?;
            let _offset = r.u64()?;
            out.tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
            });
        }
        Ok(out)
    }

    /// An unsigned integer metadata value.
    pub fn uint(&self, key: &str) -> Option<u64> {
        match self.metadata.get(key)? {
            MetaValue::Uint(v) => Some(*v),
            _ => None,
        }
    }

    /// A string metadata value.
    pub fn text(&self, key: &str) -> Option<&str> {
        match self.metadata.get(key)? {
            MetaValue::Text(s) => Some(s),
            _ => None,
        }
    }

    /// An array's length.
    pub fn array_len(&self, key: &str) -> Option<u64> {
        match self.metadata.get(key)? {
            MetaValue::Array(n) => Some(*n),
            _ => None,
        }
    }

    /// The tensor named so.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Writes a GGUF header (no tensor data) of `metadata` and `tensors` — for tests of code
/// that reads headers, where a real file would be needlessly large.
pub fn write_header(metadata: &[(&str, MetaValue)], tensors: &[TensorInfo]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    for (k, v) in metadata {
        string(&mut out, k);
        match v {
            MetaValue::Uint(u) => {
                out.extend_from_slice(&10u32.to_le_bytes());
                out.extend_from_slice(&u.to_le_bytes());
            }
            MetaValue::Int(i) => {
                out.extend_from_slice(&11u32.to_le_bytes());
                out.extend_from_slice(&i.to_le_bytes());
            }
            MetaValue::Float(f) => {
                out.extend_from_slice(&12u32.to_le_bytes());
                out.extend_from_slice(&f.to_le_bytes());
            }
            MetaValue::Bool(b) => {
                out.extend_from_slice(&7u32.to_le_bytes());
                out.push(u8::from(*b));
            }
            MetaValue::Text(s) => {
                out.extend_from_slice(&8u32.to_le_bytes());
                string(&mut out, s);
            }
            MetaValue::Array(n) => {
                // An array of `n` strings "t".
                out.extend_from_slice(&9u32.to_le_bytes());
                out.extend_from_slice(&8u32.to_le_bytes());
                out.extend_from_slice(&n.to_le_bytes());
                for _ in 0..*n {
                    string(&mut out, "t");
                }
            }
        }
    }
    let mut offset = 0u64;
    for t in tensors {
        string(&mut out, &t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ggml_type.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset += 32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_header_reads_back() {
        let meta = [
            ("general.architecture", MetaValue::Text("llama".into())),
            ("llama.block_count", MetaValue::Uint(2)),
            ("llama.rope.freq_base", MetaValue::Float(10000.0)),
            ("tokenizer.ggml.tokens", MetaValue::Array(3)),
            ("x.neg", MetaValue::Int(-4)),
            ("x.flag", MetaValue::Bool(true)),
        ];
        let tensors = [TensorInfo {
            name: "token_embd.weight".into(),
            dims: vec![64, 10],
            ggml_type: 8,
        }];
        let bytes = write_header(&meta, &tensors);
        let h = GgufHeader::from_reader(&bytes[..]).unwrap();
        assert_eq!(h.text("general.architecture"), Some("llama"));
        assert_eq!(h.uint("llama.block_count"), Some(2));
        assert_eq!(h.array_len("tokenizer.ggml.tokens"), Some(3));
        assert_eq!(h.metadata.get("x.neg"), Some(&MetaValue::Int(-4)));
        assert_eq!(h.tensor("token_embd.weight").unwrap().elements(), 640);
        // Cut anywhere: an error, never a panic.
        for cut in [3, 10, 40, bytes.len() - 1] {
            assert!(GgufHeader::from_reader(&bytes[..cut]).is_err(), "{cut}");
        }
        assert!(GgufHeader::from_reader(&b"GGML\x03\0\0\0"[..]).is_err());
    }
}
