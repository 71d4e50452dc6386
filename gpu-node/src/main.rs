//! `dayshift-node`: the inference server that runs on a rented GPU server.

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

/// dayshift-node: OpenAI-compatible inference server that registers with the dayshift ingress.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the models of a node config file until SIGTERM.
    Serve {
        /// The node config (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Convert a Hugging Face safetensors model directory to one GGUF file (loads in
    /// this node and in llama.cpp), or a GGUF file to another type.
    Quantize {
        /// The model directory (config.json, *.safetensors, tokenizer.json), or a .gguf
        /// file to re-quantize.
        dir: PathBuf,
        /// Weight type: q4_k_m, q5_k_m, q4_k, q5_k, q6_k, q8_0, q4_0, q4_1, q5_0, q5_1,
        /// f16 or f32.
        #[arg(long = "type", short = 't', default_value = "q4_k_m")]
        scheme: String,
        /// Output file (default: DIR/../<dir name>.<TYPE>.gguf).
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the deterministic tiny test Llama (HF layout) into DIR.
    MakeTestModel {
        /// Target directory (created if needed).
        dir: PathBuf,
        /// Architecture: llama, qwen3, gemma3_text or mistral.
        #[arg(long, default_value = "llama")]
        arch: String,
        /// Ship a tool-capable chat template (Qwen2.5's Hermes format) instead of
        /// plain ChatML.
        #[arg(long)]
        tool_template: bool,
        /// Llama: 256-wide matrices (`Dims::WIDE`), so every matrix takes K-quant
        /// blocks (`quantize` tests and their llama.cpp reference); gemma3_text: the
        /// 256-wide 7-layer Gemma 3 whose config llama.cpp's `gemma3` can express
        /// (`testmodel::make_test_model_gemma3_llama_cpp`).
        #[arg(long)]
        wide: bool,
        /// Use this tokenizer.json instead of the built-in tokenizer (its vocabulary
        /// sets the embedding's rows; EOS `</s>`, `<|im_end|>` or `<|endoftext|>`).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    // SAFETY: first thing in main, before the runtime or any pool starts a thread.
    unsafe { dayshift_node::device::pin_cpu_threads() };
    dayshift_node::device::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::MakeTestModel {
            dir,
            arch,
            tool_template,
            wide,
            tokenizer,
        } => match dayshift_node::testmodel::Family::parse(&arch) {
            None => Err(anyhow::anyhow!(
                "--arch {arch:?} is not one of llama, qwen3, gemma3_text, mistral"
            )),
            Some(f)
                if wide
                    && !matches!(
                        f,
                        dayshift_node::testmodel::Family::Llama
                            | dayshift_node::testmodel::Family::Gemma3
                    ) =>
            {
                Err(anyhow::anyhow!(
                    "--wide is for --arch llama and gemma3_text only"
                ))
            }
            Some(_) if wide && tokenizer.is_some() => {
                Err(anyhow::anyhow!("--wide and --tokenizer cannot be combined"))
            }
            Some(family) => if let Some(t) = &tokenizer {
                dayshift_node::testmodel::make_test_model_with_tokenizer(&dir, family, t)
            } else if wide && family == dayshift_node::testmodel::Family::Gemma3 {
                dayshift_node::testmodel::make_test_model_gemma3_llama_cpp(&dir)
            } else if wide {
                dayshift_node::testmodel::make_test_model_dims(
                    &dir,
                    dayshift_node::testmodel::Dims::WIDE,
                )
            } else {
                dayshift_node::testmodel::make_test_model_family(&dir, family)
            }
            .and_then(|()| {
                if tool_template {
                    dayshift_node::testmodel::set_chat_template(
                        &dir,
                        dayshift_node::testmodel::TOOL_CHAT_TEMPLATE,
                    )
                } else {
                    Ok(())
                }
            }),
        },
        Cmd::Serve { config } => run_serve(config),
        Cmd::Quantize {
            dir,
            scheme,
            out,
            json,
        } => run_quantize(&dir, &scheme, out, json),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dayshift-node: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_serve(path: PathBuf) -> anyhow::Result<()> {
    let cfg = dayshift_config::node::NodeConfig::load(&path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(dayshift_node::server::serve(cfg))
}

fn run_quantize(dir: &Path, scheme: &str, out: Option<PathBuf>, json: bool) -> anyhow::Result<()> {
    use dayshift_node::model::quantize::{self, SCHEME_NAMES, Scheme};
    let Some(sch) = Scheme::parse(scheme) else {
        anyhow::bail!(
            "--type {scheme:?} is not a GGUF type this node writes; use one of {SCHEME_NAMES}"
        );
    };
    let out = match out {
        Some(o) => o,
        None => {
            let name = if dir.is_file() {
                dir.file_stem()
            } else {
                dir.file_name()
            }
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
            dir.with_file_name(format!("{name}.{}.gguf", scheme.to_ascii_uppercase()))
        }
    };
    let started = std::time::Instant::now();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut progress = |done: usize, total: usize, name: &str| {
        if tty {
            eprint!("\r\x1b[Kquantize: {done}/{total} {name}");
        } else if done == total || done.is_multiple_of(50) {
            eprintln!("quantize: {done}/{total} tensors");
        }
    };
    let report = if dir.is_file() {
        quantize::requantize_gguf(dir, &out, sch, &mut progress)?
    } else {
        quantize::write_gguf(dir, &out, sch, &mut progress)?
    };
    if tty {
        eprintln!();
    }
    if json {
        let fell: Vec<serde_json::Value> = report
            .fell_back
            .iter()
            .map(|(n, a, b)| serde_json::json!({"tensor": n, "wanted": format!("{a:?}"), "written": format!("{b:?}")}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "file": out,
                "architecture": report.architecture,
                "pre_tokenizer": report.pre_tokenizer,
                "tokenizer_model": report.tokenizer_model,
                "bytes": report.bytes,
                "parameters": report.params,
                "tensors_by_type": report.by_type,
                "fell_back": fell,
                "seconds": started.elapsed().as_secs_f64(),
            })
        );
    } else {
        println!("{}: {}", out.display(), quantize::summary(&report, started));
    }
    Ok(())
}
