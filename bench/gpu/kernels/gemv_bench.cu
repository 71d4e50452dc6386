// Microbenchmark of the decode GEMVs (issue 17) against the device's copy bandwidth,
// measured in the same run:
//   nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/gemv_bench bench/gpu/kernels/gemv_bench.cu -lcublas
//   /tmp/gemv_bench            (prints one line per shape and kernel, then a model sum,
//                               then the attention and RoPE kernels; `attn`: only those)
// Each timing is a CUDA graph of L launches, each on its own copy of the weights (L copies
// >= 512 MB, so no launch finds its weights in L2), replayed 20 times after 3 warm-ups.
// Shapes are the batch-1 decode GEMVs of Llama-3.2-1B, Llama-3.1-8B and Qwen2.5-0.5B
// (bf16, rows = output features, K = input features) with the prologue/epilogue the fused
// step uses. Kernels: the node's (gpu-node/cuda/decode.cu, included) against the kernel
// before the weight prefetch (gemv_v1.cuh); outputs are compared with gemv_v1's. `launch`
// can add programmatic dependent launch (Variant::pdl): with the kernel waiting on
// griddepcontrol after its prefetch (but not letting the next one start early) it
// measured no better (2026-12-04, `gemv3.txt`: ~0.3 us a launch); `nodep+pdl` is the
// kernel as the static step launches it: it loads its first weights, waits for the
// previous kernel, then lets the next one start (at most one kernel ahead; letting the
// next start before waiting measured 0.87x the plain chain, 2026-12-05).
#include "../../../gpu-node/cuda/decode.cu"
#include "bench_util.cuh"
#include "gemv_v1.cuh"
#include "attn_v1.cuh"
#include "step_v2.cuh"
#include <cublas_v2.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

template <int B, int PRO>
__global__ void k_node(const bf *x, const bf *nw, float eps, const bf *w, const bf *bias,
                       const bf *res, bf *y, int n, int k) {
    gemv_fused<bf, B, PRO>(x, nw, eps, w, bias, res, y, n, k);
}
// The node's prefetching family (gemvfp_*, no L2 ranges here): it also takes part in
// programmatic dependent launch: it waits for the previous kernel after its first weight
// loads, then lets the next one start (gpu-node/src/model/static_step.rs).
template <int B, int PRO>
__global__ void k_nodep(const bf *x, const bf *nw, float eps, const bf *w, const bf *bias,
                        const bf *res, bf *y, int n, int k) {
    gemv_fused<bf, B, PRO, true>(x, nw, eps, w, bias, res, y, n, k, L2Ranges{});
}
template <int B, int PRO>
__global__ void k_v1(const bf *x, const bf *nw, float eps, const bf *w, const bf *bias,
                     const bf *res, bf *y, int n, int k) {
    gemv_v1<bf, B, PRO>(x, nw, eps, w, bias, res, y, n, k);
}

typedef void (*kfn)(const bf *, const bf *, float, const bf *, const bf *, const bf *, bf *,
                    int, int);

// Warps per block (one output row each; the node's launcher uses 8).
#ifndef GEMV_WARPS
#define GEMV_WARPS 8
#endif

// One launch of `f` in blocks of `warps` warps (one output row each), with programmatic
// dependent launch when `pdl`.
static void launch_w(kfn f, bool pdl, int warps, int n, int b, int k, const bf *x, const bf *nw,
                     const bf *w, const bf *res, bf *y, cudaStream_t st) {
    cudaLaunchConfig_t c = {};
    c.gridDim = dim3((n + warps - 1) / warps);
    c.blockDim = dim3(32 * warps);
    c.dynamicSmemBytes = (size_t)b * k * sizeof(bf);
    c.stream = st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    c.attrs = at;
    c.numAttrs = pdl ? 1 : 0;
    const float eps = 1e-5f;
    const bf *bias = nullptr;
    CK(cudaLaunchKernelEx(&c, f, x, nw, eps, w, bias, res, y, n, k));
}

// One launch of `f` in GEMV_WARPS-warp blocks.
static void launch(kfn f, bool pdl, int n, int b, int k, const bf *x, const bf *nw,
                   const bf *w, const bf *res, bf *y, cudaStream_t st) {
    launch_w(f, pdl, GEMV_WARPS, n, b, k, x, nw, w, res, y, st);
}

struct Shape {
    const char *name;
    int n, k, pro;
    bool res;
};

struct Bufs {
    bf *x, *nw, *res, *y, *w;
    size_t wcopies;
};

// y[b, n] = x[b, k] w[n, k]^T by cuBLAS (bf16 in, f32 compute), as candle's matmul does
// for more rows than the GEMV takes; timed like the kernels (a graph of L calls).
static cublasHandle_t blas;
static void blas_gemm(const Shape &s, int b, const bf *x, const bf *w, bf *y, cudaStream_t st) {
    const float alpha = 1.f, beta = 0.f;
    if (cublasSetStream(blas, st) != CUBLAS_STATUS_SUCCESS) exit(2);
    if (cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, s.n, b, s.k, &alpha, w, CUDA_R_16BF, s.k, x,
                     CUDA_R_16BF, s.k, &beta, y, CUDA_R_16BF, s.n, CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS) {
        fprintf(stderr, "cublasGemmEx failed\n");
        exit(2);
    }
}

static float time_graph(kfn f, bool pdl, const Shape &s, int b, Bufs &m, int L) {
    const size_t wsz = (size_t)s.n * s.k;
    if (f) CK(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, 96 << 10));
    else blas_gemm(s, b, m.x, m.w, m.y, 0); // cuBLAS picks and loads its kernel outside the capture
    return graph_us(
        [&](cudaStream_t st) {
            for (int l = 0; l < L; l++) {
                const bf *w = m.w + (l % m.wcopies) * wsz;
                if (f) launch(f, pdl, s.n, b, s.k, m.x, m.nw, w, s.res ? m.res : nullptr, m.y, st);
                else blas_gemm(s, b, m.x, w, m.y, st);
            }
        },
        L);
}

static float max_diff(const bf *a, const bf *b, size_t n) {
    std::vector<bf> ha(n), hb(n);
    CK(cudaMemcpy(ha.data(), a, n * sizeof(bf), cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hb.data(), b, n * sizeof(bf), cudaMemcpyDeviceToHost));
    float d = 0.f;
    for (size_t i = 0; i < n; i++) {
        float x = fabsf(__bfloat162float(ha[i]) - __bfloat162float(hb[i]));
        if (!(x <= d)) d = x;
    }
    return d;
}

// The SwiGLU in the gate|up GEMV (`gemvfs_*`, the static step's `pair`): one layer's
// RMSNorm + gate|up and down projection as the fused step runs them (gate|up writes both
// halves; every 16-warp block of the down projection computes silu(gate) * up over the
// whole input first) against gate|up writing silu(gate) * up once and the down projection
// staging it as it is (8-warp blocks), each also with programmatic dependent launch (the
// PDL kernels: the next starts at once, waits after its first weight loads). A graph of L
// layers, each on its own weights; the down projection's outputs must be equal bit for bit.
template <int B>
__global__ void k_pair(const bf *x, const bf *nw, float eps, const bf *w, const bf *bias,
                       const bf *res, bf *y, int n, int k) {
    gemv_fused<bf, B, 1, true, true>(x, nw, eps, w, bias, res, y, n, k, L2Ranges{});
}

template <int B>
static void pair_case(const char *name, int hidden, int inter, bf *pool, size_t pool_elems,
                      const bf *x, const bf *nw, const bf *res) {
    const size_t per = (size_t)3 * inter * hidden; // gate|up, then down
    int L = (int)(pool_elems / per);
    if (L > 64) L = 64;
    if (L < 1) {
        printf("pair %s: weights too large\n", name);
        return;
    }
    bf *gu, *act, *y1, *y2, *y1b;
    CK(cudaMalloc(&gu, (size_t)B * 2 * inter * sizeof(bf)));
    CK(cudaMalloc(&y1b, (size_t)B * hidden * sizeof(bf)));
    CK(cudaMalloc(&act, (size_t)B * inter * sizeof(bf)));
    CK(cudaMalloc(&y1, (size_t)B * hidden * sizeof(bf)));
    CK(cudaMalloc(&y2, (size_t)B * hidden * sizeof(bf)));
    kfn gate_up = k_node<B, 1>, down_silu = k_node<B, 2>, down_plain = k_node<B, 0>;
    kfn gate_up_p = k_nodep<B, 1>, down_silu_p = k_nodep<B, 2>, down_plain_p = k_nodep<B, 0>;
    kfn pair = k_pair<B>;
    for (kfn f : {gate_up, down_silu, down_plain, gate_up_p, down_silu_p, down_plain_p, pair})
        CK(cudaFuncSetAttribute(f, cudaFuncAttributeMaxDynamicSharedMemorySize, 96 << 10));
    auto layer_w = [&](int l) { return pool + (size_t)(l % L) * per; };
    // fused step as now: gate|up [2 inter], down with the SwiGLU prologue (16 warps)
    auto now = [&](cudaStream_t st, bool pdl, int layers) {
        for (int l = 0; l < layers; l++) {
            const bf *w = layer_w(l);
            launch_w(pdl ? gate_up_p : gate_up, pdl, 8, 2 * inter, B, hidden, x, nw, w, nullptr, gu, st);
            launch_w(pdl ? down_silu_p : down_silu, pdl, 16, hidden, B, inter, gu, nw,
                     w + (size_t)2 * inter * hidden, res, y1, st);
        }
    };
    // SwiGLU in gate|up: act [inter], down staging it as it is (`down_warps` warps a
    // block: 8 as the node launches it; 4 gives a narrow model's down projection twice
    // the blocks, e.g. qwen05's 896 outputs 224 blocks instead of 112 on 132 SMs)
    auto paired_w = [&](cudaStream_t st, bool pdl, int layers, int down_warps, bf *y) {
        for (int l = 0; l < layers; l++) {
            const bf *w = layer_w(l);
            launch_w(pair, pdl, 8, inter, B, hidden, x, nw, w, nullptr, act, st);
            launch_w(pdl ? down_plain_p : down_plain, pdl, down_warps, hidden, B, inter, act, nw,
                     w + (size_t)2 * inter * hidden, res, y, st);
        }
    };
    auto paired = [&](cudaStream_t st, bool pdl, int layers) { paired_w(st, pdl, layers, 8, y2); };
    now(0, false, 1);
    paired(0, false, 1);
    paired_w(0, false, 1, 4, y1b);
    CK(cudaDeviceSynchronize());
    const float d = max_diff(y1, y2, (size_t)B * hidden);
    const float d4 = max_diff(y2, y1b, (size_t)B * hidden);
    const int layers = 2 * L;
    const float t_now = graph_us([&](cudaStream_t st) { now(st, false, layers); }, layers);
    const float t_now_pdl = graph_us([&](cudaStream_t st) { now(st, true, layers); }, layers);
    const float t_pair = graph_us([&](cudaStream_t st) { paired(st, false, layers); }, layers);
    const float t_pair_pdl = graph_us([&](cudaStream_t st) { paired(st, true, layers); }, layers);
    const float t_pair4_pdl =
        graph_us([&](cudaStream_t st) { paired_w(st, true, layers, 4, y1b); }, layers);
    printf("pair b=%d %-5s gate|up + down, us a layer: now %6.2f, now+pdl %6.2f, pair %6.2f, "
           "pair+pdl %6.2f (%.2fx now), pair+pdl down at 4 warps %6.2f (%.2fx pair+pdl)  "
           "maxdiff %.3g, 4 warps vs 8 %.3g\n",
           B, name, t_now, t_now_pdl, t_pair, t_pair_pdl, t_now / t_pair_pdl, t_pair4_pdl,
           t_pair_pdl / t_pair4_pdl, d, d4);
    CK(cudaFree(gu));
    CK(cudaFree(act));
    CK(cudaFree(y1));
    CK(cudaFree(y2));
    CK(cudaFree(y1b));
}

static const int BS[4] = {1, 2, 4, 8};
struct Variant {
    const char *name;
    kfn f[3][4]; // [pro][index of b in BS]; nullptr: cuBLAS
    bool pdl;
};
#define ALLB(K, PRO) {K<1, PRO>, K<2, PRO>, K<4, PRO>, K<8, PRO>}

// Per-launch time of the fused step's other kernels, each in a graph of 32 launches over
// 32 layers' own caches (so the keys and values come from memory, not L2): decode
// attention (the node's, split over the keys as the node splits it and merged by the last
// split block; against the kernel before the splits, attn_v1.cuh, and the split kernel
// with a merge launch, step_v2.cuh, whose outputs it must match) at several context
// lengths and rows, and RoPE of q, k and v (one launch, against step_v2's three).
template <int G>
__global__ void k_attn_v1(const bf *q, const bf *kc, const bf *vc, bf *o, const uint32_t *idx,
                          int b, int nh, int nkv, int cap, int window, float scale) {
    decode_attn64_v1<bf, G>(q, kc, vc, o, idx, b, nh, nkv, cap, window, scale);
}

// The node's rule (gpu-node/src/model/decode_ops/mod.rs, attention_splits).
static void splits_for(int heads, int rows, int cap, int &splits, int &keys) {
    int most = cap / 256;
    if (most < 1) most = 1;
    splits = (1024 + heads * rows - 1) / (heads * rows);
    if (splits > most) splits = most;
    if (splits < 1) splits = 1;
    keys = (cap + splits - 1) / splits;
}

template <int G>
static void attn_case(const char *name, int nh, int nkv, int rows, int ctx, int window) {
    const int hd = 64 * G, cap = 4096, layers = 32, slots = rows;
    const size_t per = (size_t)slots * nkv * cap * hd;
    bf *kc, *vc, *q, *o, *o1;
    uint32_t *idx;
    CK(cudaMalloc(&kc, per * layers * sizeof(bf)));
    CK(cudaMalloc(&vc, per * layers * sizeof(bf)));
    CK(cudaMalloc(&q, (size_t)rows * nh * hd * sizeof(bf)));
    CK(cudaMalloc(&o, (size_t)rows * nh * hd * sizeof(bf)));
    CK(cudaMalloc(&o1, (size_t)rows * nh * hd * sizeof(bf)));
    CK(cudaMalloc(&idx, 3 * rows * sizeof(uint32_t)));
    fill_rand<<<1024, 256>>>(kc, per * layers, 7, 1.f);
    fill_rand<<<1024, 256>>>(vc, per * layers, 8, 1.f);
    fill_rand<<<16, 256>>>(q, (size_t)rows * nh * hd, 9, 4.f);
    // Rows: the first at position ctx - 1, the others shorter; the last row of several
    // is padding.
    std::vector<uint32_t> h(3 * rows);
    for (int r = 0; r < rows; r++) {
        h[r] = 0;
        h[rows + r] = (uint32_t)(ctx - 1) / (r + 1);
        h[2 * rows + r] = (rows > 1 && r == rows - 1) ? DS_PAD_SLOT : (uint32_t)r;
    }
    CK(cudaMemcpy(idx, h.data(), h.size() * sizeof(uint32_t), cudaMemcpyHostToDevice));
    int splits, keys;
    splits_for(nh, rows, cap, splits, keys);
    float *pm, *pl, *pa;
    const size_t parts = (size_t)rows * nh * splits;
    CK(cudaMalloc(&pm, parts * sizeof(float)));
    CK(cudaMalloc(&pl, parts * sizeof(float)));
    CK(cudaMalloc(&pa, parts * hd * sizeof(float)));
    uint32_t *counters;
    CK(cudaMalloc(&counters, 1024 * sizeof(uint32_t)));
    CK(cudaMemset(counters, 0, 1024 * sizeof(uint32_t)));
    bf *o2;
    CK(cudaMalloc(&o2, (size_t)rows * nh * hd * sizeof(bf)));
    const float scale = 1.f / sqrtf((float)hd);
    const float v1 = graph_us(
        [&](cudaStream_t st) {
            for (int l = 0; l < layers; l++)
                k_attn_v1<G><<<dim3(nh, rows), 128, 0, st>>>(q, kc + l * per, vc + l * per, o1, idx,
                                                              rows, nh, nkv, cap, window, scale);
        },
        layers);
    const float v2 = graph_us(
        [&](cudaStream_t st) {
            for (int l = 0; l < layers; l++) {
                const bf *k = kc + l * per, *vv = vc + l * per;
                decode_attn64_v2_k<bf, G><<<dim3(nh, rows, splits), 128, 0, st>>>(
                    q, k, vv, o2, pm, pl, pa, idx, rows, nh, nkv, cap, window, scale, keys);
                if (splits > 1)
                    decode_attn_merge_v2_k<bf><<<dim3(nh, rows), hd, 0, st>>>(pm, pl, pa, o2, nh,
                                                                               splits, hd);
            }
        },
        layers);
    const float node = graph_us(
        [&](cudaStream_t st) {
            for (int l = 0; l < layers; l++) {
                const bf *k = kc + l * per, *vv = vc + l * per;
                if (G == 1)
                    decode_attn64_bf16_1<<<dim3(nh, rows, splits), 128, 0, st>>>(
                        q, k, vv, o, pm, pl, pa, counters, idx, rows, nh, nkv, cap, window, scale,
                        keys);
                else
                    decode_attn64_bf16_2<<<dim3(nh, rows, splits), 128, 0, st>>>(
                        q, k, vv, o, pm, pl, pa, counters, idx, rows, nh, nkv, cap, window, scale,
                        keys);
            }
        },
        layers);
    // The graphs ended on layer 31's cache: compare the outputs.
    const float d = max_diff(o, o1, (size_t)rows * nh * hd);
    const float d2 = max_diff(o, o2, (size_t)rows * nh * hd);
    // every counter back at 0 after all the replays
    std::vector<uint32_t> hc(1024);
    CK(cudaMemcpy(hc.data(), counters, 1024 * sizeof(uint32_t), cudaMemcpyDeviceToHost));
    int dirty = 0;
    for (uint32_t c : hc) dirty += c != 0;
    printf("attn %-8s rows %d ctx %5d window %4d splits %2d: v1 %7.2f us, v2 %7.2f us, node %7.2f us "
           "(%.2fx v2)  maxdiff v1 %.3g v2 %.3g%s\n",
           name, rows, ctx, window, splits, v1, v2, node, v2 / node, d, d2,
           dirty ? "  <-- COUNTERS NOT ZERO" : "");
    for (void *p : {(void *)kc, (void *)vc, (void *)q, (void *)o, (void *)o1, (void *)o2, (void *)idx,
                    (void *)pm, (void *)pl, (void *)pa, (void *)counters})
        CK(cudaFree(p));
}

static void rope_case(const char *name, int nh, int nkv, int hd) {
    const int cap = 4096, layers = 32;
    bf *qkv, *cs, *sn, *qo, *kc, *vc;
    uint32_t *idx;
    const size_t per = (size_t)nkv * cap * hd;
    CK(cudaMalloc(&qkv, (size_t)(nh + 2 * nkv) * hd * sizeof(bf)));
    CK(cudaMalloc(&cs, (size_t)cap * hd / 2 * sizeof(bf)));
    CK(cudaMalloc(&sn, (size_t)cap * hd / 2 * sizeof(bf)));
    CK(cudaMalloc(&qo, (size_t)nh * hd * sizeof(bf)));
    CK(cudaMalloc(&kc, per * layers * sizeof(bf)));
    CK(cudaMalloc(&vc, per * layers * sizeof(bf)));
    CK(cudaMalloc(&idx, 3 * sizeof(uint32_t)));
    const uint32_t h[3] = {0, 100, 0};
    CK(cudaMemcpy(idx, h, sizeof h, cudaMemcpyHostToDevice));
    const float us = graph_us(
        [&](cudaStream_t st) {
            for (int l = 0; l < layers; l++) {
                rope_rows_v2_k<bf><<<dim3(nh, 1), hd / 2, 0, st>>>(qkv, nullptr, 1e-6f, cs, sn, qo,
                                                                   idx, 0, 1, nh, nkv, cap, hd);
                rope_rows_v2_k<bf><<<dim3(nkv, 1), hd / 2, 0, st>>>(
                    qkv, nullptr, 1e-6f, cs, sn, kc + l * per, idx, 1, 1, nh, nkv, cap, hd);
                rope_rows_v2_k<bf><<<dim3(nkv, 1), hd / 2, 0, st>>>(
                    qkv, nullptr, 1e-6f, cs, sn, vc + l * per, idx, 2, 1, nh, nkv, cap, hd);
            }
        },
        layers);
    const float one = graph_us(
        [&](cudaStream_t st) {
            for (int l = 0; l < layers; l++)
                rope_qkv_bf16<<<dim3(nh + 2 * nkv, 1), hd / 2, 0, st>>>(
                    qkv, nullptr, nullptr, 1e-6f, cs, sn, qo, kc + l * per, vc + l * per, idx, 1, nh,
                    nkv, cap, hd);
        },
        layers);
    printf("rope %-8s per layer: 3 launches (v2) %6.2f us, one launch (node) %6.2f us\n", name, us,
           one);
    for (void *p : {(void *)qkv, (void *)cs, (void *)sn, (void *)qo, (void *)kc, (void *)vc, (void *)idx})
        CK(cudaFree(p));
}

static void small_kernels() {
    for (int ctx : {1, 17, 128, 256, 1024, 4096}) attn_case<1>("llama1b", 32, 8, 1, ctx, 0);
    for (int ctx : {128, 1024, 4096}) attn_case<1>("llama1b", 32, 8, 2, ctx, 0);
    for (int ctx : {256, 4096}) attn_case<1>("llama1b", 32, 8, 32, ctx, 0);
    attn_case<1>("llama1b", 32, 8, 1, 4096, 1000);
    for (int ctx : {128, 256, 1024, 4096}) attn_case<1>("qwen05", 14, 2, 1, ctx, 0);
    for (int ctx : {1, 128, 256, 1024, 4096}) attn_case<2>("llama8b", 32, 8, 1, ctx, 0);
    attn_case<2>("llama8b", 32, 8, 2, 1024, 0);
    rope_case("llama1b", 32, 8, 64);
    rope_case("qwen05", 14, 2, 64);
    rope_case("llama8b", 32, 8, 128);
}

int main(int argc, char **argv) {
    int dev = 0;
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, dev));
    printf("device %s, %d SMs, L2 %d MB\n", p.name, p.multiProcessorCount, p.l2CacheSize >> 20);
    const size_t WBYTES = (size_t)1 << 30; // weight pool: 1 GiB
    Bufs m;
    CK(cudaMalloc(&m.w, WBYTES));
    CK(cudaMalloc(&m.x, 8 * 2 * 32768 * sizeof(bf)));
    if (cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS) return 2;
    void *ws;
    CK(cudaMalloc(&ws, 64 << 20));
    if (cublasSetWorkspace(blas, ws, 64 << 20) != CUBLAS_STATUS_SUCCESS) return 2;
    CK(cudaMalloc(&m.nw, 32768 * sizeof(bf)));
    CK(cudaMalloc(&m.res, 8 * 160000 * sizeof(bf)));
    CK(cudaMalloc(&m.y, 8 * 160000 * sizeof(bf)));
    bf *y2;
    CK(cudaMalloc(&y2, 8 * 160000 * sizeof(bf)));
    fill_rand<<<1024, 256>>>(m.w, WBYTES / sizeof(bf), 1, 0.05f);
    fill_rand<<<64, 256>>>(m.x, 8 * 2 * 32768, 2, 2.f);
    fill_rand<<<64, 256>>>(m.nw, 32768, 3, 2.f);
    fill_rand<<<64, 256>>>(m.res, 8 * 160000, 4, 1.f);
    CK(cudaDeviceSynchronize());

    copy_bandwidth_gbs(); // the limit every figure is a ratio of

    Shape shapes[] = {
        {"1b.qkv", 3072, 2048, 1, false},   {"1b.o", 2048, 2048, 0, true},
        {"1b.gateup", 16384, 2048, 1, false}, {"1b.down", 2048, 8192, 2, true},
        {"1b.head", 128256, 2048, 1, false}, {"8b.qkv", 6144, 4096, 1, false},
        {"8b.o", 4096, 4096, 0, true},      {"8b.gateup", 28672, 4096, 1, false},
        {"8b.down", 4096, 14336, 2, true},  {"8b.head", 128256, 4096, 1, false},
        {"q05.qkv", 1152, 896, 1, false},   {"q05.o", 896, 896, 0, true},
        {"q05.gateup", 9728, 896, 1, false}, {"q05.down", 896, 4864, 2, true},
        {"q05.head", 151936, 896, 1, false},
    };
    Variant vs[] = {
        {"v1", {ALLB(k_v1, 0), ALLB(k_v1, 1), ALLB(k_v1, 2)}, false},
        {"node", {ALLB(k_node, 0), ALLB(k_node, 1), ALLB(k_node, 2)}, false},
        // the launch attribute alone (the kernel neither lets the next start nor waits)
        {"node+pdl", {ALLB(k_node, 0), ALLB(k_node, 1), ALLB(k_node, 2)}, true},
        // the static step's kernels as its PDL mode launches them
        {"nodep+pdl", {ALLB(k_nodep, 0), ALLB(k_nodep, 1), ALLB(k_nodep, 2)}, true},
        {"cublas", {{}, {}, {}}, false},
    };
    const int NV = sizeof(vs) / sizeof(vs[0]);
    // per-model sums of one step's GEMV time: layers x (qkv, o, gateup, down) + head
    const char *models[] = {"1b", "8b", "q05"};
    const int layers[] = {16, 32, 24};
    // `gemv_bench attn`: the attention and RoPE kernels only; `pair`: the SwiGLU pair only.
    const bool gemvs = !(argc > 1 && (strcmp(argv[1], "attn") == 0 || strcmp(argv[1], "pair") == 0));
    // GB_B=1 (2, 4, 8): only that batch.
    const char *only_b = getenv("GB_B");
    for (int bi = 0; gemvs && bi < 4; bi++) {
        const int b = BS[bi];
        if (only_b && atoi(only_b) != b) continue;
        std::vector<std::vector<double>> sum(3, std::vector<double>(NV, 0.0));
        std::vector<double> bytes(3, 0.0);
        for (const Shape &s : shapes) {
            const size_t wb = (size_t)s.n * s.k * sizeof(bf);
            size_t copies = WBYTES / wb;
            if (copies < 1) copies = 1;
            m.wcopies = copies;
            const int L = copies < 8 ? 8 : (int)copies; // >= 8 launches per graph
            int mi = s.name[0] == '1' ? 0 : s.name[0] == '8' ? 1 : 2;
            const bool head = strstr(s.name, "head") != nullptr;
            bytes[mi] += (double)wb * (head ? 1 : layers[mi]);
            // reference output: gemv_v1's
            // (the GEMV's shared memory holds b rows of K: more than 96 KiB is not taken)
            const bool fits = (size_t)b * s.k * sizeof(bf) <= (96 << 10);
            kfn ref = vs[0].f[s.pro][bi];
            if (fits) {
                CK(cudaFuncSetAttribute(ref, cudaFuncAttributeMaxDynamicSharedMemorySize, 96 << 10));
                launch(ref, false, s.n, b, s.k, m.x, m.nw, m.w, s.res ? m.res : nullptr, y2, 0);
                CK(cudaDeviceSynchronize());
            }
            for (int v = 0; v < NV; v++) {
                kfn f = vs[v].f[s.pro][bi];
                if (f && !fits) {
                    printf("b=%d %-11s %-9s (K too long for %d rows)\n", b, s.name, vs[v].name, b);
                    sum[mi][v] = 1e30;
                    continue;
                }
                const float us = time_graph(f, vs[v].pdl, s, b, m, L);
                CK(cudaMemset(m.y, 0, (size_t)b * s.n * sizeof(bf)));
                if (f) launch(f, vs[v].pdl, s.n, b, s.k, m.x, m.nw, m.w, s.res ? m.res : nullptr, m.y, 0);
                else blas_gemm(s, b, m.x, m.w, m.y, 0);
                CK(cudaDeviceSynchronize());
                // cuBLAS has no prologue/epilogue: its difference is not a check
                const float d = fits && f ? max_diff(m.y, y2, (size_t)b * s.n) : -1.f;
                printf("b=%d %-11s %-9s %8.2f us %7.1f GB/s  maxdiff %.3g\n", b, s.name,
                       vs[v].name, us, wb / (us * 1e-6) / 1e9, d);
                sum[mi][v] += us * (head ? 1 : layers[mi]);
            }
        }
        for (int mi = 0; mi < 3; mi++)
            for (int v = 0; v < NV; v++) {
                if (sum[mi][v] > 1e29) {
                    printf("SUM b=%d %-4s %-9s n/a (a shape too long for the GEMV)\n", b,
                           models[mi], vs[v].name);
                    continue;
                }
                printf("SUM b=%d %-4s %-9s GEMVs %8.1f us/step  %7.1f GB/s  -> %.0f tok/s if "
                       "nothing else ran\n",
                       b, models[mi], vs[v].name, sum[mi][v], bytes[mi] / (sum[mi][v] * 1e-6) / 1e9,
                       1e6 / sum[mi][v] * b);
            }
    }
    // `gemv_bench pair` (or after the GEMVs): the SwiGLU in the gate|up GEMV.
    if (!(argc > 1 && strcmp(argv[1], "attn") == 0)) {
        const size_t elems = WBYTES / sizeof(bf);
        pair_case<1>("q05", 896, 4864, m.w, elems, m.x, m.nw, m.res);
        pair_case<1>("1b", 2048, 8192, m.w, elems, m.x, m.nw, m.res);
        pair_case<1>("8b", 4096, 14336, m.w, elems, m.x, m.nw, m.res);
        pair_case<2>("q05", 896, 4864, m.w, elems, m.x, m.nw, m.res);
        pair_case<2>("1b", 2048, 8192, m.w, elems, m.x, m.nw, m.res);
        if (argc > 1 && strcmp(argv[1], "pair") == 0) return 0;
    }
    small_kernels();
    return 0;
}
