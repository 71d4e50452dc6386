//! Whether each pool's model fits the GPUs of its server types: the model's memory need
//! ([`crate::memory`], the same figure `dayshift-node` checks before loading) with the
//! engine settings the pool's nodes get ([`PoolConfig::node_engine`]), against the
//! memory of one GPU of each server type (`gpu_memory` of the type, else
//! [`KNOWN_GPU_TYPES`]). Used by `dayshift config check` and `dayshift serve`.

use std::path::PathBuf;

use crate::Config;
use crate::memory::{KvBasis, ModelMemory, Need, Target, gib, thousands};
use crate::settings::{PoolConfig, ProviderKind};

/// A provider's GPU server type and the memory of one of its GPUs.
#[derive(Debug, Clone, Copy)]
pub struct KnownGpuType {
    /// Server type (commercial type) name.
    pub name: &'static str,
    /// The GPU.
    pub gpu: &'static str,
    /// Memory of one GPU in bytes, as NVIDIA's driver reports the card's total (a "24 GB"
    /// L4 has 23,034 MiB); a node uses one GPU of a multi-GPU type.
    pub memory: u64,
}

const MIB: u64 = 1 << 20;
const L4: u64 = 23_034 * MIB;
const L40S: u64 = 46_068 * MIB;
const H100: u64 = 81_559 * MIB;

/// Scaleway's GPU Instance types (Hetzner Cloud rents no GPUs). A type not listed
/// here needs `gpu_memory` in its `[provider.server_types.NAME]` table to be checked.
#[rustfmt::skip]
pub const KNOWN_GPU_TYPES: &[KnownGpuType] = &[
    KnownGpuType { name: "L4-1-24G", gpu: "NVIDIA L4", memory: L4 },
    KnownGpuType { name: "L4-2-24G", gpu: "NVIDIA L4", memory: L4 },
    KnownGpuType { name: "L4-4-24G", gpu: "NVIDIA L4", memory: L4 },
    KnownGpuType { name: "L4-8-24G", gpu: "NVIDIA L4", memory: L4 },
    KnownGpuType { name: "L40S-1-48G", gpu: "NVIDIA L40S", memory: L40S },
    KnownGpuType { name: "L40S-2-48G", gpu: "NVIDIA L40S", memory: L40S },
    KnownGpuType { name: "L40S-4-48G", gpu: "NVIDIA L40S", memory: L40S },
    KnownGpuType { name: "L40S-8-48G", gpu: "NVIDIA L40S", memory: L40S },
    KnownGpuType { name: "H100-1-80G", gpu: "NVIDIA H100", memory: H100 },
    KnownGpuType { name: "H100-2-80G", gpu: "NVIDIA H100", memory: H100 },
    KnownGpuType { name: "H100-SXM-2-80G", gpu: "NVIDIA H100 SXM", memory: H100 },
    KnownGpuType { name: "H100-SXM-4-80G", gpu: "NVIDIA H100 SXM", memory: H100 },
    KnownGpuType { name: "H100-SXM-8-80G", gpu: "NVIDIA H100 SXM", memory: H100 },
];

/// How sure a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// No server type of the pool can hold the model: the config is refused.
    Refused,
    /// A server type of the pool cannot hold it (another can).
    Warning,
    /// Not checked, and why.
    Note,
    /// The model fits.
    Fits,
}

/// One line of the check, about one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How sure.
    pub level: Level,
    /// The pool's name.
    pub pool: String,
    /// For people, without the file's name.
    pub message: String,
}

/// The memory of one GPU of `server_type` and where the figure comes from (`one NVIDIA
/// L4`, `its gpu_memory`): the type's `gpu_memory`, else the known table's; `None` when
/// neither says.
pub fn gpu_memory(config: &Config, server_type: &str) -> Option<(u64, String)> {
    let declared = config.provider.server_types.get(server_type);
    if let Some(b) = declared.and_then(|t| t.gpu_memory) {
        return Some((b, "its gpu_memory".into()));
    }
    KNOWN_GPU_TYPES
        .iter()
        .find(|k| k.name == server_type)
        .map(|k| (k.memory, format!("one {}", k.gpu)))
}

/// Where the ingress finds the pool's model files to measure: the pool's local path,
/// or the mirror's copy (`<state_dir>/models/<model>`); `Err` says why it cannot.
pub fn model_path(config: &Config, pool: &PoolConfig) -> Result<PathBuf, String> {
    let src = pool.model_source.as_str();
    if src.starts_with("hf:") {
        return Err(format!(
            "model_source \"{src}\" is downloaded by each node; the ingress has no copy to measure"
        ));
    }
    let path = if src == "mirror" {
        config.state_dir.join("models").join(&pool.model)
    } else {
        PathBuf::from(src)
    };
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{} does not exist (yet)", path.display()))
    }
}

/// The memory need of a pool's model on a GPU node, or why it is not known here.
pub fn pool_need(config: &Config, pool: &PoolConfig) -> Result<Need, String> {
    let path = model_path(config, pool)?;
    let m = ModelMemory::of(&path, None, pool.quantize.as_deref(), Target::Gpu)?;
    Ok(m.need(&pool.node_engine()))
}

/// What would make `need` fit `memory`, with figures where they follow.
fn advice(pool: &PoolConfig, need: &Need, memory: u64) -> String {
    let mut ways = Vec::new();
    if pool.quantize.is_none() && !need.weights_kind.starts_with("GGUF") {
        ways.push("quantize = \"q4_k\" (or another smaller type)".to_string());
    } else {
        ways.push("a smaller quantize type or GGUF file".to_string());
    }
    let left = memory
        .saturating_sub(need.weights)
        .saturating_sub(need.graphs)
        .saturating_sub(need.activations)
        .saturating_sub(need.headroom);
    if need.kv_tokens > 0 && left > 0 {
        let per_token = need.kv_bytes / need.kv_tokens.max(1);
        let fits = left / per_token.max(1);
        let slots = u64::from(pool.node_engine().max_running_sequences).max(1);
        ways.push(format!(
            "a smaller KV cache (at most {} tokens fit: e.g. slots = {slots} with context_tokens = {})",
            thousands(fits),
            thousands(fits / slots)
        ));
    } else if need.kv_tokens > 0 {
        ways.push("fewer slots or a shorter context_tokens".to_string());
    }
    ways.push("a server type with more GPU memory".to_string());
    ways.join(", ")
}

fn basis_hint(need: &Need) -> &'static str {
    if need.kv_basis == KvBasis::FullContext {
        " (context_tokens is not set, so a node reserves the model's whole context)"
    } else {
        ""
    }
}

/// Checks every pool: a [`Level::Refused`] finding for a pool none of whose GPU server
/// types can hold its model, warnings for single types that cannot, notes where the
/// model or a type's memory is not known here.
pub fn check(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    for (name, pool) in &config.pools {
        let mut push = |level, message: String| {
            out.push(Finding {
                level,
                pool: name.clone(),
                message,
            })
        };
        let need = match pool_need(config, pool) {
            Ok(n) => n,
            Err(why) => {
                push(
                    Level::Note,
                    format!("model \"{}\": memory need not checked: {why}", pool.model),
                );
                continue;
            }
        };
        if config.provider.kind == ProviderKind::Local {
            push(
                Level::Note,
                format!(
                    "model \"{}\" needs {}; the local provider's GPU memory is not known here: the node checks its device at start",
                    pool.model,
                    need.figures()
                ),
            );
            continue;
        }
        let mut fits = Vec::new();
        let mut short = Vec::new();
        let mut unknown = Vec::new();
        let mut unchecked = 0;
        for t in &pool.server_types {
            if !config.provider.is_gpu_type(t) {
                unchecked += 1;
                push(
                    Level::Note,
                    format!(
                        "server type \"{t}\" has no gpu: its nodes run on the CPU, whose memory is not checked here"
                    ),
                );
                continue;
            }
            match gpu_memory(config, t) {
                Some((mem, gpu)) if need.total() <= mem => fits.push((t, mem, gpu)),
                Some((mem, gpu)) => short.push((t, mem, gpu)),
                None => unknown.push(t),
            }
        }
        for t in &unknown {
            push(
                Level::Note,
                format!(
                    "model \"{}\" needs {}; the GPU memory of server type \"{t}\" is not known: \
                     set gpu_memory (e.g. \"24 GiB\") in [provider.server_types.\"{t}\"] to check it",
                    pool.model,
                    need.figures()
                ),
            );
        }
        if !short.is_empty() && fits.is_empty() && unknown.is_empty() && unchecked == 0 {
            let types: Vec<String> = short
                .iter()
                .map(|(t, mem, from)| format!("server type {t}'s {} ({from})", gib(*mem)))
                .collect();
            let largest = short.iter().map(|s| s.1).max().unwrap_or(0);
            push(
                Level::Refused,
                format!(
                    "model \"{}\" does not fit: it needs {}{} > {}. Use {}",
                    pool.model,
                    need.figures(),
                    basis_hint(&need),
                    types.join(", "),
                    advice(pool, &need, largest)
                ),
            );
            continue;
        }
        for (t, mem, gpu) in &short {
            push(
                Level::Warning,
                format!(
                    "model \"{}\" does not fit server type {t} ({}: {gpu}): it needs {}; \
                     a node placed there refuses to start. Remove {t} from server_types or use {}",
                    pool.model,
                    gib(*mem),
                    need.figures(),
                    advice(pool, &need, *mem)
                ),
            );
        }
        for (t, mem, gpu) in &fits {
            push(
                Level::Fits,
                format!(
                    "model \"{}\" needs {}: fits server type {t} ({}: {gpu})",
                    pool.model,
                    need.figures(),
                    gib(*mem)
                ),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::parse_bytes;

    const CFG: &str = r#"cluster = "c"
[provider]
kind = "scaleway"
ssh_key = "/k"
[provider.server_types."L4-1-24G"]
hourly = "0.75"
gpu = "L4"
[provider.server_types.big]
hourly = "3"
gpu = "B200"
gpu_memory = "180 GB"
[pools.chat]
model = "m"
model_source = "hf:org/m"
server_types = ["L4-1-24G", "big"]
slots = 30
context_tokens = 1280
"#;

    #[test]
    fn slots_and_context_tokens_become_the_nodes_engine_settings() {
        let c = Config::parse("d.toml", CFG, std::path::Path::new("/")).unwrap();
        let e = c.pools["chat"].node_engine();
        assert_eq!(e.max_running_sequences, 30);
        assert_eq!(e.kv_cache_tokens, Some(38_400));
        let plain = CFG.replace("slots = 30\ncontext_tokens = 1280\n", "");
        let c = Config::parse("d.toml", &plain, std::path::Path::new("/")).unwrap();
        assert_eq!(
            c.pools["chat"].node_engine(),
            crate::node::EngineConfig::default()
        );
    }

    #[test]
    fn gpu_memory_from_the_type_else_the_known_table() {
        let c = Config::parse("d.toml", CFG, std::path::Path::new("/")).unwrap();
        assert_eq!(
            gpu_memory(&c, "L4-1-24G"),
            Some((23_034 << 20, "one NVIDIA L4".into()))
        );
        assert_eq!(
            gpu_memory(&c, "big"),
            Some((180_000_000_000, "its gpu_memory".into()))
        );
        assert_eq!(gpu_memory(&c, "other"), None);
        assert_eq!(parse_bytes("24 GiB"), Ok(24 << 30));
        assert_eq!(parse_bytes("23034MiB"), Ok(23_034 << 20));
        assert!(parse_bytes("24").is_err() && parse_bytes("lots GB").is_err());
        let bad = CFG.replace("\"180 GB\"", "\"180 gigs\"");
        let e = Config::parse("d.toml", &bad, std::path::Path::new("/")).unwrap_err();
        assert!(
            e.0[0].to_string().contains("gpu_memory")
                && e.0[0].to_string().contains("not a memory size"),
            "{e}"
        );
        // hf: sources are not measured by the ingress: a note, no refusal.
        let f = check(&c);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].level, Level::Note);
    }
}
