//! `dayshift config check` (and `dayshift serve` at start) refuses a pool whose model
//! does not fit the GPU of any of its server types, naming the figures: weights + KV
//! cache + headroom, the same calculation `dayshift-node` checks before loading
//! (`dayshift_config::memory`). Model directories are real files made here: a
//! `config.json` and a sparse `model.safetensors` of the model's size (only sizes and
//! `config.json` are read), and a GGUF header written by `gguf_header::write_header`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dayshift_config::gguf_header::{MetaValue, TensorInfo, write_header};
use dayshift_config::memory::{ModelMemory, Target};
use dayshift_config::node::EngineConfig;

fn dayshift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dayshift"))
        .args(args)
        .output()
        .expect("run dayshift")
}

fn check(config: &Path) -> (Option<i32>, String, String) {
    let out = dayshift(&["config", "check", &config.display().to_string()]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Mistral-Nemo-12B's shape (hidden 5120, 40 layers, 32 heads of 128, 8 KV heads,
/// vocab 131072, intermediate 14336, untied output): 12,247,782,400 parameters.
const NEMO_CONFIG: &str = r#"{
  "architectures": ["MistralForCausalLM"], "model_type": "mistral",
  "hidden_size": 5120, "intermediate_size": 14336, "num_hidden_layers": 40,
  "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
  "vocab_size": 131072, "max_position_embeddings": 1024000,
  "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "tie_word_embeddings": false,
  "torch_dtype": "bfloat16"
}"#;
const NEMO_PARAMS: u64 = 12_247_782_400;

/// A model directory: `config` and a sparse safetensors file of `bytes`.
fn model_dir(root: &Path, name: &str, config: &str, bytes: u64) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config).unwrap();
    let f = std::fs::File::create(dir.join("model.safetensors")).unwrap();
    f.set_len(bytes).unwrap();
    dir
}

/// A Scaleway dayshift.toml with the L4 and H100 types and one pool `chat`.
fn scaleway_config(root: &Path, pool: &str) -> PathBuf {
    let text = format!(
        r#"cluster = "fit"
state_dir = "{state}"
[provider]
kind = "scaleway"
ssh_key = "/etc/dayshift/id_ed25519"
[provider.server_types."L4-1-24G"]
hourly = "0.75"
gpu = "1x NVIDIA L4 24 GB"
[provider.server_types."H100-1-80G"]
hourly = "2.73"
gpu = "1x NVIDIA H100 80 GB"
[provider.server_types."GPU-CUSTOM"]
hourly = "1.00"
gpu = "1x some GPU"
[provider.server_types."DEV1-S"]
hourly = "0.01"
[pools.chat]
model = "nemo"
image = "ubuntu_noble_gpu_os_13_nvidia"
{pool}
"#,
        state = root.join("state").display()
    );
    let path = root.join("dayshift.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn pool(source: &Path, extra: &str) -> String {
    format!(
        "model_source = \"{}\"\nserver_types = [\"L4-1-24G\"]\n{extra}",
        source.display()
    )
}

/// The documented example: Mistral-Nemo-12B on an L4 (a "24 GB" card: 23,034 MiB =
/// 22.49 GiB as the driver reports it), 30 slots of 1,280 tokens.
/// - bf16: weights 2 × 12,247,782,400 bytes = 22.81 GiB; KV cache 2 (k, v) × 40 layers
///   × 8 KV heads × 128 × 2 bytes = 160 KiB per token, × 38,400 tokens = 5.86 GiB;
///   with 0.62 GiB of CUDA graphs, 0.80 GiB of prefill activations (256-token chunks
///   at (5,120 + 3 × 14,336) × 4 bytes a token, and 3 × 256 MiB of attention scores)
///   and 0.50 GiB headroom: 30.59 GiB > 22.49 GiB: refused.
/// - quantize = "q4_k": the matrices (all but the 671,088,640-weight embedding) at 4.5
///   bits = 6,511,892,160 bytes + the embedding in bf16 (1,342,177,280) = 7.31 GiB; the
///   node runs bf16 activations and KV cache on a GPU (5.86 GiB); total 15.09 GiB <=
///   22.49 GiB: fits. (86,891 tokens would fit: 2,896 per slot.)
/// - quantize = "q8_0" with 30 slots of 2,560 tokens: 12.70 (the matrices at 8.5 bits, the
///   embedding in bf16) + 11.72 + 0.62 + 0.80 + 0.50 = 26.35 GiB (rounded parts): refused.
#[test]
fn fit_mistral_nemo_on_an_l4_the_documented_example() {
    let root = tempfile::tempdir().unwrap();
    let nemo = model_dir(root.path(), "nemo", NEMO_CONFIG, 2 * NEMO_PARAMS);
    let slots = "slots = 30\ncontext_tokens = 1280\n";

    let cfg = scaleway_config(root.path(), &pool(&nemo, slots));
    let (code, _, err) = check(&cfg);
    assert_eq!(code, Some(2), "{err}");
    let want = format!(
        "{}: pools.chat: model \"nemo\" does not fit: it needs weights 22.81 GiB (bf16) + KV cache 5.86 GiB (38,400 tokens, bf16) + CUDA graphs 0.62 GiB + activations 0.80 GiB (256-token prefill chunk) + headroom 0.50 GiB = 30.59 GiB > server type L4-1-24G's 22.49 GiB (one NVIDIA L4). Use quantize = \"q4_k\"",
        cfg.display()
    );
    assert!(err.contains(&want), "{err}\nwanted: {want}");
    assert!(err.contains("a server type with more GPU memory"), "{err}");

    let cfg = scaleway_config(
        root.path(),
        &pool(&nemo, &format!("{slots}quantize = \"q4_k\"\n")),
    );
    let (code, out, err) = check(&cfg);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(
            "pools.chat: model \"nemo\" needs weights 7.31 GiB (q4_k at load, embeddings bf16) + KV cache 5.86 GiB (38,400 tokens, bf16) + CUDA graphs 0.62 GiB + activations 0.80 GiB (256-token prefill chunk) + headroom 0.50 GiB = 15.09 GiB: fits server type L4-1-24G (22.49 GiB: one NVIDIA L4)"
        ),
        "{out}"
    );

    let cfg = scaleway_config(
        root.path(),
        &pool(
            &nemo,
            "slots = 30\ncontext_tokens = 2560\nquantize = \"q8_0\"\n",
        ),
    );
    let (code, _, err) = check(&cfg);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("= 26.35 GiB > server type L4-1-24G's 22.49 GiB"),
        "{err}"
    );
    assert!(err.contains("a smaller quantize type"), "{err}");
}

/// Without `context_tokens` a node reserves one sequence of the model's whole context
/// (Nemo: 1,024,000 tokens): the check says so, and how many tokens would fit.
#[test]
fn fit_without_context_tokens_counts_the_full_context() {
    let root = tempfile::tempdir().unwrap();
    let nemo = model_dir(root.path(), "nemo", NEMO_CONFIG, 2 * NEMO_PARAMS);
    let cfg = scaleway_config(root.path(), &pool(&nemo, "quantize = \"q4_k\"\n"));
    let (code, _, err) = check(&cfg);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains(
            "KV cache 156.25 GiB (1,024,000 tokens: one sequence of the model's full context, bf16)"
        ),
        "{err}"
    );
    assert!(
        err.contains("+ CUDA graphs 0.62 GiB + activations 0.80 GiB (256-token prefill chunk) + headroom 0.50 GiB = 165.49 GiB"),
        "{err}"
    );
    assert!(err.contains("context_tokens is not set"), "{err}");
    assert!(
        err.contains("at most 86,891 tokens fit: e.g. slots = 32 with context_tokens = 2,715"),
        "{err}"
    );
}

/// A type that cannot hold the model beside one that can: a warning, exit 0.
#[test]
fn fit_a_type_too_small_beside_one_that_fits_is_a_warning() {
    let root = tempfile::tempdir().unwrap();
    let nemo = model_dir(root.path(), "nemo", NEMO_CONFIG, 2 * NEMO_PARAMS);
    let text = format!(
        "model_source = \"{}\"\nserver_types = [\"L4-1-24G\", \"H100-1-80G\"]\nslots = 30\ncontext_tokens = 1280\n",
        nemo.display()
    );
    let cfg = scaleway_config(root.path(), &text);
    let (code, out, err) = check(&cfg);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("pools.chat: warning: model \"nemo\" does not fit server type L4-1-24G (22.49 GiB: one NVIDIA L4)"),
        "{err}"
    );
    assert!(err.contains("Remove L4-1-24G from server_types"), "{err}");
    assert!(
        out.contains("= 30.59 GiB: fits server type H100-1-80G (79.65 GiB: one NVIDIA H100)"),
        "{out}"
    );
}

/// Where the ingress cannot know: an `hf:` source, a GPU type of unknown memory (until
/// `gpu_memory` says), a CPU type, the local provider: notes, never a refusal.
#[test]
fn fit_what_the_ingress_cannot_know_is_a_note() {
    let root = tempfile::tempdir().unwrap();
    let cfg = scaleway_config(
        root.path(),
        "model_source = \"hf:mistralai/Mistral-Nemo-Instruct-2407\"\nserver_types = [\"L4-1-24G\"]\n",
    );
    let (code, _, err) = check(&cfg);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("pools.chat: note: model \"nemo\": memory need not checked: model_source \"hf:mistralai/Mistral-Nemo-Instruct-2407\" is downloaded by each node"),
        "{err}"
    );
    // The mirror's copy is measured where it is (state_dir/models/<model>).
    let cfg = scaleway_config(root.path(), "server_types = [\"L4-1-24G\"]\n");
    let (code, _, err) = check(&cfg);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("models/nemo does not exist (yet)"), "{err}");
    model_dir(
        &root.path().join("state/models"),
        "nemo",
        NEMO_CONFIG,
        2 * NEMO_PARAMS,
    );
    assert_eq!(check(&cfg).0, Some(2));

    let nemo = model_dir(root.path(), "nemo", NEMO_CONFIG, 2 * NEMO_PARAMS);
    let text = format!(
        "model_source = \"{}\"\nserver_types = [\"GPU-CUSTOM\", \"DEV1-S\"]\n",
        nemo.display()
    );
    let cfg = scaleway_config(root.path(), &text);
    let (code, _, err) = check(&cfg);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("the GPU memory of server type \"GPU-CUSTOM\" is not known: set gpu_memory"),
        "{err}"
    );
    assert!(
        err.contains("server type \"DEV1-S\" has no gpu: its nodes run on the CPU"),
        "{err}"
    );
    // Declared: checked (and refused: 179.56 GiB with the full context in bf16).
    let declared = std::fs::read_to_string(&cfg).unwrap().replace(
        "gpu = \"1x some GPU\"",
        "gpu = \"1x some GPU\"\ngpu_memory = \"48 GiB\"",
    );
    std::fs::write(&cfg, declared).unwrap();
    let (code, _, err) = check(&cfg);
    assert_eq!(code, Some(0), "a CPU type is left, so not refused: {err}");
    assert!(
        err.contains("warning: model \"nemo\" does not fit server type GPU-CUSTOM (48.00 GiB: its gpu_memory)"),
        "{err}"
    );
    assert!(err.contains("= 180.98 GiB"), "{err}");

    // The local provider: the machine's GPU is not known to the config.
    let local = root.path().join("local.toml");
    std::fs::write(
        &local,
        format!(
            "cluster = \"fit\"\n[provider]\nkind = \"local\"\n[provider.server_types.local]\nhourly = \"0\"\n[pools.chat]\nmodel = \"nemo\"\nmodel_source = \"{}\"\nserver_types = [\"local\"]\n",
            nemo.display()
        ),
    )
    .unwrap();
    let (code, _, err) = check(&local);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("note: model \"nemo\" needs weights 22.81 GiB (bf16)")
            && err.contains("the local provider's GPU memory is not known here"),
        "{err}"
    );
}

/// A GGUF source: the figure comes from its header (tensor types and shapes): a
/// Nemo-shaped Q4_K_M-like file (Q4_K matrices, Q6_K for attn_v, ffn_down and output,
/// f32 norms) on an L4 with 30 × 1,280 tokens of KV cache, in bf16 (a GPU's default for
/// GGUF: embeddings, norms, activations and KV cache).
#[test]
fn fit_a_gguf_source_is_measured_from_its_header() {
    let root = tempfile::tempdir().unwrap();
    let (h, inter, vocab, layers) = (5120u64, 14336u64, 131072u64, 40);
    let t = |name: String, dims: Vec<u64>, ty: u32| TensorInfo {
        name,
        dims,
        ggml_type: ty,
    };
    let (q4k, q6k, f32_) = (12, 14, 0);
    let mut tensors = vec![
        t("token_embd.weight".into(), vec![h, vocab], q4k),
        t("output.weight".into(), vec![h, vocab], q6k),
        t("output_norm.weight".into(), vec![h], f32_),
    ];
    for i in 0..layers {
        let p = format!("blk.{i}");
        tensors.push(t(format!("{p}.attn_q.weight"), vec![h, 4096], q4k));
        tensors.push(t(format!("{p}.attn_k.weight"), vec![h, 1024], q4k));
        tensors.push(t(format!("{p}.attn_v.weight"), vec![h, 1024], q6k));
        tensors.push(t(format!("{p}.attn_output.weight"), vec![4096, h], q4k));
        tensors.push(t(format!("{p}.ffn_gate.weight"), vec![h, inter], q4k));
        tensors.push(t(format!("{p}.ffn_up.weight"), vec![h, inter], q4k));
        tensors.push(t(format!("{p}.ffn_down.weight"), vec![inter, h], q6k));
        tensors.push(t(format!("{p}.attn_norm.weight"), vec![h], f32_));
        tensors.push(t(format!("{p}.ffn_norm.weight"), vec![h], f32_));
    }
    let u = MetaValue::Uint;
    let meta = [
        ("general.architecture", MetaValue::Text("llama".into())),
        ("general.file_type", u(15)),
        ("llama.block_count", u(layers)),
        ("llama.embedding_length", u(h)),
        ("llama.feed_forward_length", u(inter)),
        ("llama.attention.head_count", u(32)),
        ("llama.attention.head_count_kv", u(8)),
        ("llama.attention.key_length", u(128)),
        ("llama.context_length", u(1_024_000)),
    ];
    let file = root.path().join("nemo.Q4_K_M.gguf");
    std::fs::write(&file, write_header(&meta, &tensors)).unwrap();
    // By hand, in f32 (`dtype = "f32"`): the embedding 671,088,640 weights × 4 =
    // 2,684,354,560 bytes; the
    // output matrix in Q6_K (× 210/256 = 550,502,400); per layer Q4_K for q, k, o, gate
    // and up (193,986,560 weights × 144/256 = 109,117,440 bytes), Q6_K for v and down
    // (78,643,200 × 210/256 = 64,512,000) and two f32 norms (40,960): 173,670,400 × 40
    // = 6,946,816,000; the output norm 20,480. Total 10,181,693,440 bytes = 9.48 GiB.
    let f32_run = ModelMemory::of(&file, Some("f32"), None, Target::Gpu).unwrap();
    assert_eq!(f32_run.weights, 10_181_693_440);
    // bf16, the default: the embedding and the 81 norms at 2 bytes: 10,181,693,440 −
    // 1,342,177,280 − 829,440 = 8,838,686,720 bytes (8.23 GiB).
    let m = ModelMemory::of(&file, None, None, Target::Gpu).unwrap();
    assert_eq!(m.weights, 8_838_686_720);
    let cfg = scaleway_config(
        root.path(),
        &pool(&file, "slots = 30\ncontext_tokens = 1280\n"),
    );
    let (code, out, err) = check(&cfg);
    assert_eq!(code, Some(0), "{err}");
    let engine = EngineConfig {
        max_running_sequences: 30,
        kv_cache_tokens: Some(30 * 1280),
        ..EngineConfig::default()
    };
    // The same figure the node computes for this file and these engine settings.
    let want = format!(
        "needs {}: fits server type L4-1-24G",
        m.need(&engine).figures()
    );
    assert!(out.contains(&want), "{out}\nwanted: {want}");
    assert!(
        out.contains("weights 8.23 GiB (GGUF Q4_K_M, embeddings bf16) + KV cache 5.86 GiB (38,400 tokens, bf16) + CUDA graphs 0.62 GiB + activations 0.80 GiB (256-token prefill chunk) + headroom 0.50 GiB = 16.01 GiB"),
        "{out}"
    );
    // quantize does not apply to a GGUF file: refused by the config reader already.
    let cfg = scaleway_config(root.path(), &pool(&file, "quantize = \"q4_k\"\n"));
    assert_eq!(check(&cfg).0, Some(2));
}

/// `dayshift serve` runs the same check at start and exits before renting anything.
#[test]
fn fit_serve_refuses_to_start_a_pool_that_fits_nowhere() {
    let root = tempfile::tempdir().unwrap();
    let nemo = model_dir(root.path(), "nemo", NEMO_CONFIG, 2 * NEMO_PARAMS);
    let cfg = scaleway_config(root.path(), &pool(&nemo, "context_tokens = 1280\n"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_dayshift"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("SCW_SECRET_KEY", "not-used")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dayshift serve");
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("dayshift serve did not refuse the config within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "{}: pools.chat: model \"nemo\" does not fit: it needs weights 22.81 GiB (bf16) + KV cache 6.25 GiB (40,960 tokens, bf16)",
            cfg.display()
        )),
        "{err}"
    );
    assert!(
        !root.path().join("state").exists(),
        "serve created its state"
    );
}
