#!/usr/bin/env python3
"""Reference token ids for the GGUF tokenizers `dayshift-node` reads and writes
(gpu-node/tests/it/tokenizers_reference.rs compares against them; no Python at test time).

It makes two small tokenizers from the built-in CORPUS:
- `spm/`: a SentencePiece BPE model with byte fallback (the kind Llama 2, Mistral 7B and
  Gemma ship), trained with `sentencepiece`; `spm/tokenizer.json` is its Hugging Face form
  in the layout of Llama 2's tokenizer.json (BPE with byte_fallback, merges from
  transformers' SentencePieceExtractor, normalizer Prepend("▁") + Replace(" ", "▁"));
  `spm/spm.gguf` is a vocab-only GGUF file written as llama.cpp's convert_hf_to_gguf.py
  writes a model that has a tokenizer.model (`_create_vocab_sentencepiece`: pieces,
  SentencePiece scores and types, `add_space_prefix` from the model's normalizer).
- `tekken/`: a byte-level BPE tokenizer with the Tekken pre-tokenizer regex of
  Mistral-Nemo / Mistral-Small 3.1 (trained with the `tokenizers` trainer);
  `tekken/tokenizer.json`, and `tekken/tekken.gguf` written as convert_hf_to_gguf.py's
  `_set_vocab_gpt2` writes it (tokens, merges, types, `tokenizer.ggml.pre = "tekken"`).

With `--node BIN` it also runs `BIN make-test-model DIR --tokenizer T` and
`BIN quantize DIR -t q8_0` for both tokenizer.json files, and records llama.cpp's ids for
the GGUF files dayshift-node wrote (and their sha256: the test writes them again and
checks the bytes).

For every GGUF file and every case of CASES: llama.cpp's ids (llama-cpp-python,
`tokenize(text, add_bos=False, special=True)`, plus one case with add_bos=True); for
every tokenizer.json: Hugging Face `tokenizers`' ids (`add_special_tokens=False`) and
its decoded text.

Run from the repository root (needs `pip install sentencepiece protobuf gguf
llama-cpp-python tokenizers transformers`):
    cargo build -p dayshift-node
    python3 gpu-node/reference/tokenizers/make_tokenizer_reference.py --node target/debug/dayshift-node
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import gguf
import llama_cpp
import sentencepiece as spm
import tokenizers
from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer

HERE = os.path.dirname(os.path.abspath(__file__))

# Mistral-Nemo's pre-tokenizer regex (its tokenizer.json; llama.cpp's `tekken`).
TEKKEN_REGEX = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|"
    r"\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CORPUS = """\
Die Straße in Köln ist schön, aber die Brücke über den Rhein ist größer.
Grüße aus München! Wir fahren morgen früh mit dem Zug nach Düsseldorf und Nürnberg.
Übermäßig viele Äpfel, Öl und Süßigkeiten: das ist für die Gesundheit nicht gut.
Der Bäcker öffnet um sieben Uhr; die Kinder gehen zur Schule, während die Eltern arbeiten.
Können Sie mir bitte sagen, wie spät es ist? Es ist halb neun, und der Kaffee ist heiß.
The quick brown fox jumps over the lazy dog. A server that is rented only while people
work costs far less than one that runs all day and all night. The scheduler starts the
nodes before the working day begins, and stops them when the evening comes.
What is the capital of France? The capital of France is Paris. Hello! How are you today?
It's a nice day, isn't it? We'll see; they're here, I'd say. You've done well, I'm sure.
fn main() {
    let xs: Vec<u32> = (0..10).collect();
    for x in &xs {
        println!("{x:?} {}", x * 2);
    }
    if xs.len() > 3 { return; }
}
impl Display for Node {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}
def fibonacci(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a

class Server:
\tdef __init__(self, port=8080):
\t\tself.port = port
\t\tself.clients = []
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 1000 2024 3.14159 1,000,000 0x1F 1e-5 -273.15
Prices: 19,99 € and $4.50; 50% off; 12:30 on 2025-06-01.
東京は日本の首都です。北京是中国的首都。我们明天见。今日はいい天気ですね。
中文和日本語的文字，漢字，ひらがな，カタカナ。
Emoji: 🙂 😀 🚀 🎉 ❤️ 👍 — “quotes”, ‘single’, «guillemets» and … ellipsis.
Spaces:  two,   three,    four; tabs:\tone\t\ttwo.
Line one

Line three after an empty line.
Decomposed accents (NFD): cafe\u0301, re\u0301sume\u0301, nai\u0308ve, e\u0301te\u0301, Zoe\u0308.
"""

# Texts the tokenizers are compared on: mixed text of a few thousand characters (German,
# English, code with indentation and tabs, numbers, emoji, CJK, runs of spaces and
# newlines, characters the SentencePiece model has no piece for, so byte fallback), and
# edge cases. Characters absent from CORPUS (Thai, Hebrew, Devanagari, Korean, fraktur,
# rare emoji, ẞ) need byte fallback.
MIXED = """\
Grüße aus Köln! Die Straße ist schön, Übermaß an Öl. Größenwahn? Nein: Maß halten.
Äußerst übel: ÄÖÜ äöü ß ẞ — "Anführungszeichen" und „deutsche“ ‚Zeichen‘.
The server starts before the working day begins; it's cheaper, isn't it? We'll see.
fn main() {
    let x: Vec<u32> = (0..10).collect();
    println!("{x:?}");
\tif x.is_empty() {\t\treturn; }
}
def f(a, b):
    return a ** 2 + b  # 12345 678
\tprint("tab-indented")
Emoji: 🙂🚀👩‍💻 🦩🪐 — “quotes”, 'apostrophes' and\ttabs.  Double  spaces.   Triple.
Numbers 3.14159, 1,000,000, 0x1F, 2025-06-01, 12:30, -273.15°C, 1e-5.
東京は日本の首都です。北京是中国的首都。안녕하세요 세계. สวัสดีครับ שלום עולם नमस्ते दुनिया
Fraktur 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and math ∑ ∫ √ ≤ ≥ ≠ ∞; arrows → ← ↔; box ╔═╗.


Two empty lines above, trailing spaces here   
camelCase macOSÜbersicht iPhoneÄrger straßeÜber aÜb HTTPServer XMLHttpRequest
naïve café résumé Zoë — decomposed: cafe\u0301 re\u0301sume\u0301
"""

CASES = [
    MIXED,
    MIXED * 2,
    "",
    " ",
    "  leading spaces and trailing  ",
    "\n\nstarts with newlines",
    "\t\ttabs first",
    "Hello world",
    " Hello world",
    "a",
    "ẞ𝔘🦩",
    "Grüße",
    "1234567890",
    "    return x  # four spaces",
    "</s>",
    "<s>Hello</s> world",
    "Hello <s> world </s>  again",
    "[INST] Wie geht's? [/INST] Gut, danke.</s>",
    "<unk> stays special",
    "<0x41> is not a byte token in text",
    "▁ already has the meta symbol ▁▁ twice",
]
# Cases compared with add_bos=True too.
BOS_CASES = ["Hello world", MIXED]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def rel(path):
    return os.path.relpath(path, HERE)


# ---------------------------------------------------------------- SentencePiece

def train_spm(out_prefix):
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        # every line several times, so that pieces of code and CJK get learned
        for _ in range(3):
            f.write(CORPUS)
        path = f.name
    spm.SentencePieceTrainer.train(
        input=path, model_prefix=out_prefix, model_type="bpe", vocab_size=1200,
        byte_fallback=True, character_coverage=0.995, split_digits=True,
        allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", add_dummy_prefix=True,
        user_defined_symbols=["<tool_call>"], control_symbols=["[INST]", "[/INST]"],
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, hard_vocab_limit=False,
        minloglevel=2,
    )
    os.unlink(path)
    return out_prefix + ".model"


def spm_tokenizer_json(model_path):
    """Llama 2's tokenizer.json layout, from the SentencePiece model (transformers'
    SentencePieceExtractor for vocab and merges)."""
    from transformers.convert_slow_tokenizer import SentencePieceExtractor
    from tokenizers import AddedToken
    kw = SentencePieceExtractor(model_path).extract(BPE)
    vocab, merges = kw["vocab"], kw["merges"]
    tok = tokenizers.Tokenizer(BPE(vocab=vocab, merges=merges, unk_token="<unk>",
                                   fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    specials = [AddedToken(t, normalized=False, special=True)
                for t in ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"]]
    tok.add_special_tokens(specials)
    tok.add_tokens([AddedToken("<tool_call>", normalized=False, special=False)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])])
    return tok


def spm_gguf(model_path, out):
    """convert_hf_to_gguf.py's `_create_vocab_sentencepiece` + `SpecialVocab`, vocab only."""
    sp = spm.SentencePieceProcessor()
    sp.LoadFromFile(model_path)
    from sentencepiece import sentencepiece_model_pb2 as pb
    proto = pb.ModelProto()
    with open(model_path, "rb") as f:
        proto.ParseFromString(f.read())
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        t = gguf.TokenType.NORMAL
        if sp.IsUnknown(i):
            t = gguf.TokenType.UNKNOWN
        elif sp.IsControl(i):
            t = gguf.TokenType.CONTROL
        elif sp.IsUnused(i):
            t = gguf.TokenType.UNUSED
        elif sp.IsByte(i):
            t = gguf.TokenType.BYTE
        elif proto.pieces[i].type == 4:
            # listed as a non-special added token in tokenizer_config.json's
            # added_tokens_decoder, which convert_hf_to_gguf.py turns into USER_DEFINED
            t = gguf.TokenType.USER_DEFINED
        tokens.append(sp.IdToPiece(i).encode("utf-8"))
        scores.append(sp.GetScore(i))
        types.append(t)
    w = gguf.GGUFWriter(out, "llama")
    hparams(w)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_add_space_prefix(proto.normalizer_spec.add_dummy_prefix)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    finish(w)


def hparams(w):
    w.add_context_length(512)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(16)


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---------------------------------------------------------------- Tekken

TEKKEN_SPECIALS = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]",
                   "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"]


def train_tekken():
    tok = tokenizers.Tokenizer(BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(TEKKEN_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(vocab_size=1200, special_tokens=TEKKEN_SPECIALS, show_progress=False,
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([CORPUS] * 3, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok


def tekken_gguf(tok_path, out):
    """convert_hf_to_gguf.py's `_set_vocab_gpt2` (`get_vocab_base`) for a Tekken
    tokenizer.json, vocab only."""
    tj = json.load(open(tok_path, encoding="utf-8"))
    tok = tokenizers.Tokenizer.from_file(tok_path)
    vocab = tok.get_vocab(with_added_tokens=True)
    rev = {i: t for t, i in vocab.items()}
    added = {a["id"]: a for a in tj["added_tokens"]}
    tokens, types = [], []
    for i in range(len(rev)):
        tokens.append(rev[i])
        if i in added:
            types.append(gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    w = gguf.GGUFWriter(out, "llama")
    hparams(w)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("tekken")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab["<s>"])
    w.add_eos_token_id(vocab["</s>"])
    w.add_unk_token_id(vocab["<unk>"])
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    finish(w)


# ---------------------------------------------------------------- references

def llama_cases(path):
    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    out = {"file": rel(path), "sha256": sha256(path), "ids": [], "bos_ids": []}
    for text in CASES:
        out["ids"].append(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))
    for text in BOS_CASES:
        out["bos_ids"].append(llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))
    return out


def hf_cases(path):
    tok = tokenizers.Tokenizer.from_file(path)
    out = {"file": rel(path), "sha256": sha256(path), "ids": [], "decoded": [], "bos_ids": []}
    for text in CASES:
        ids = tok.encode(text, add_special_tokens=False).ids
        out["ids"].append(ids)
        out["decoded"].append(tok.decode(ids, skip_special_tokens=False))
    for text in BOS_CASES:
        out["bos_ids"].append(tok.encode(text, add_special_tokens=True).ids)
    return out


def quantized(node, tok_json, name, work):
    d = os.path.join(work, name)
    subprocess.run([node, "make-test-model", d, "--tokenizer", tok_json], check=True)
    out = os.path.join(work, f"{name}.q8_0.gguf")
    subprocess.run([node, "quantize", d, "-t", "q8_0", "-o", out], check=True,
                   stdout=subprocess.DEVNULL)
    r = llama_cases(out)
    r["file"] = f"make-test-model --tokenizer {rel(tok_json)}; quantize -t q8_0"
    return r


def llamahfvocab_like(tok_path, out):
    """What convert_hf_to_gguf.py writes for a model with a SentencePiece-style
    tokenizer.json and no tokenizer.model (gguf-py's `LlamaHfVocab`): every score -1000."""
    tok = tokenizers.Tokenizer.from_file(tok_path)
    tj = json.load(open(tok_path, encoding="utf-8"))
    added = {a["id"]: a for a in tj["added_tokens"]}
    rev = {i: t for t, i in tok.get_vocab(with_added_tokens=True).items()}
    tokens, types = [], []
    for i in range(len(rev)):
        t = rev[i]
        tokens.append(t.encode("utf-8"))
        if i in added:
            types.append(gguf.TokenType.CONTROL if added[i]["special"] else gguf.TokenType.USER_DEFINED)
        elif len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    w = gguf.GGUFWriter(out, "llama")
    hparams(w)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores([-1000.0] * len(tokens))
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    finish(w)


def mismatches(a, b):
    return [i for i, (x, y) in enumerate(zip(a, b)) if x != y]


def main():
    node = None
    if "--node" in sys.argv:
        node = os.path.abspath(sys.argv[sys.argv.index("--node") + 1])
    os.makedirs(os.path.join(HERE, "spm"), exist_ok=True)
    os.makedirs(os.path.join(HERE, "tekken"), exist_ok=True)
    work = tempfile.mkdtemp()
    model = train_spm(os.path.join(work, "spm"))
    spm_json = os.path.join(HERE, "spm", "tokenizer.json")
    spm_tokenizer_json(model).save(spm_json)
    spm_file = os.path.join(HERE, "spm", "spm.gguf")
    spm_gguf(model, spm_file)
    tek_json = os.path.join(HERE, "tekken", "tokenizer.json")
    train_tekken().save(tek_json)
    tek_file = os.path.join(HERE, "tekken", "tekken.gguf")
    tekken_gguf(tek_json, tek_file)

    sp = spm.SentencePieceProcessor()
    sp.LoadFromFile(model)
    ref = {
        "llama_cpp_python": llama_cpp.__version__,
        "tokenizers": tokenizers.__version__,
        "sentencepiece": spm.__version__,
        "gguf": gguf.__version__ if hasattr(gguf, "__version__") else "?",
        "cases": CASES,
        "bos_cases": BOS_CASES,
        "spm": {"gguf": llama_cases(spm_file), "hf": hf_cases(spm_json),
                # the SentencePiece library itself on the texts without special tokens
                "sentencepiece_ids": [sp.EncodeAsIds(t) for t in CASES]},
        "tekken": {"gguf": llama_cases(tek_file), "hf": hf_cases(tek_json)},
    }
    if node:
        ref["spm"]["quantized"] = quantized(node, spm_json, "spm", work)
        ref["tekken"]["quantized"] = quantized(node, tek_json, "tekken", work)
    # Finding, recorded but not tested: llama.cpp's own converter, given only this
    # tokenizer.json, writes scores that make llama.cpp tokenize differently from it.
    hfv = os.path.join(work, "llamahfvocab.gguf")
    llamahfvocab_like(spm_json, hfv)
    hfv_ids = llama_cases(hfv)["ids"]
    bad = mismatches(hfv_ids, ref["spm"]["hf"]["ids"])
    ref["spm"]["convert_hf_to_gguf_without_tokenizer_model"] = {
        "scores": -1000.0,
        "cases_differing_from_hf": bad,
        "tokens": [len(x) for x in hfv_ids],
    }
    print(f"convert_hf_to_gguf's LlamaHfVocab scores: llama.cpp vs HF differ on cases {bad}",
          file=sys.stderr)
    for name in ["spm", "tekken"]:
        r = ref[name]
        bad = mismatches(r["gguf"]["ids"], r["hf"]["ids"])
        print(f"{name}: llama.cpp vs HF differ on cases {bad}", file=sys.stderr)
    with open(os.path.join(HERE, "tokenizer_reference.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False, indent=None, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
