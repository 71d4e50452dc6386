"""A Qwen3-0.6B-shaped GGUF with random weights, for CPU decode speed only.

    python3 bench/gguf-cpu/make_qwen3_shape.py SMOLLM2.gguf OUT.f16.gguf

Qwen3-0.6B's layers (28 layers, 1024 wide, 16 query / 8 KV heads of 128, q/k norms,
3072 MLP, RoPE base 1e6, tied embeddings) with SmolLM2's tokenizer and chat template
(copied from SMOLLM2.gguf: no model hub here, so its 49,152-token vocabulary stands in
for Qwen3's 151,936, and the head is a third of Qwen3's). Context cut to 4096. Weights
f16, normal with std 0.02 (norms 1), seeded: the text is noise, the speed is the model's.
Quantize it with `dayshift-node quantize OUT.f16.gguf --type q8_0` (or q4_k_m) and run
`MODEL=… bash bench/gguf-cpu/run.sh`; llama.cpp reads the same file.
"""
import sys

import numpy as np
import gguf

src, out = sys.argv[1], sys.argv[2]
reader = gguf.GGUFReader(src)
V = len(reader.fields["tokenizer.ggml.tokens"].data)
H, I, L, NH, NKV, HD = 1024, 3072, 28, 16, 8, 128
rng = np.random.default_rng(0)

w = gguf.GGUFWriter(out, "qwen3")
w.add_name("qwen3-0.6b-shape-random")
w.add_context_length(4096)
w.add_embedding_length(H)
w.add_block_count(L)
w.add_feed_forward_length(I)
w.add_head_count(NH)
w.add_head_count_kv(NKV)
w.add_key_length(HD)
w.add_value_length(HD)
w.add_rope_freq_base(1e6)
w.add_layer_norm_rms_eps(1e-6)
w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

# The tokenizer and chat template, as SmolLM2's file has them.
for key, field in reader.fields.items():
    if not key.startswith("tokenizer."):
        continue
    types = field.types
    if types[0] == gguf.GGUFValueType.ARRAY:
        vals = [field.contents(i) for i in range(len(field.data))]
        w.add_array(key, vals)
    elif types[0] == gguf.GGUFValueType.STRING:
        w.add_string(key, field.contents())
    elif types[0] == gguf.GGUFValueType.BOOL:
        w.add_bool(key, bool(field.contents()))
    elif types[0] == gguf.GGUFValueType.UINT32:
        w.add_uint32(key, int(field.contents()))
    else:
        raise SystemExit(f"{key}: unexpected type {types}")


def mat(rows, cols):
    return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)


def ones(n):
    return np.ones(n, dtype=np.float32)


w.add_tensor("token_embd.weight", mat(V, H))
w.add_tensor("output_norm.weight", ones(H))
for i in range(L):
    p = f"blk.{i}"
    w.add_tensor(f"{p}.attn_norm.weight", ones(H))
    w.add_tensor(f"{p}.attn_q.weight", mat(NH * HD, H))
    w.add_tensor(f"{p}.attn_k.weight", mat(NKV * HD, H))
    w.add_tensor(f"{p}.attn_v.weight", mat(NKV * HD, H))
    w.add_tensor(f"{p}.attn_output.weight", mat(H, NH * HD))
    w.add_tensor(f"{p}.attn_q_norm.weight", ones(HD))
    w.add_tensor(f"{p}.attn_k_norm.weight", ones(HD))
    w.add_tensor(f"{p}.ffn_norm.weight", ones(H))
    w.add_tensor(f"{p}.ffn_gate.weight", mat(I, H))
    w.add_tensor(f"{p}.ffn_up.weight", mat(I, H))
    w.add_tensor(f"{p}.ffn_down.weight", mat(H, I))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(out)
