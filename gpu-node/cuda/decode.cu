// Kernels of the CUDA decode step (gpu-node/src/model/decode_ops.rs): the write of a
// step's keys and values into the padded KV cache, and decode attention that reads each
// sequence only up to its own length. Both take the step's indices from device memory
// (`idx`: ids[b], pos[b], slot[b]), so one captured CUDA graph serves every step of a
// batch bucket whatever the sequences' lengths.
//
// Built by gpu-node/build.rs with nvcc into a fatbin (SASS for sm_80, sm_86, sm_89,
// sm_90 and compute_90 PTX), loaded without JIT on the GPUs providers rent.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

// The slot of a padding row: writes nothing, attends to nothing (output zeros).
#define DS_PAD_SLOT 0xffffffffu

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
    return __float2bfloat16(x);
}

// Programmatic dependent launch (sm_90; gpu-node/src/model/static_step.rs launches the
// decode step's kernels with it when DAYSHIFT_BENCH_STATIC_STEP=pdl): a kernel waits for
// the previous kernel to finish and its writes to be visible (pdl_wait) before it reads
// anything that kernel wrote or writes anything, and only then lets the next kernel be
// scheduled (pdl_launch_dependents: the next kernel's blocks start once every block of
// this one has passed it). So at most one kernel runs ahead: its blocks load their first
// weights while this one computes, then wait. (Letting the next start before waiting, as
// first tried, let every later kernel's blocks start and wait on the SMs at once:
// gemv_bench's `nodep+pdl` chain of Qwen2.5-0.5B's GEMVs took 700 us a step where the
// plain chain took 606, 2026-12-05.) A kernel launched without the attribute passes both
// at once; before sm_90 they are nothing.
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// cache[slot[r], h, pos[r], d] = src[r, h, d] for every row r of the step.
// cache: [slots, nkv, cap, hd]; src: [b, nkv, hd], contiguous.
template <typename T>
__device__ void kv_write(const T *__restrict__ src, T *__restrict__ cache,
                         const uint32_t *__restrict__ idx, int b, int nkv, int cap, int hd) {
    const int n = b * nkv * hd;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) {
        const int d = i % hd;
        const int h = (i / hd) % nkv;
        const int r = i / (hd * nkv);
        const uint32_t pos = idx[b + r];
        const uint32_t slot = idx[2 * b + r];
        if (pos < (uint32_t)cap && slot != DS_PAD_SLOT) {
            cache[(((size_t)slot * nkv + h) * cap + pos) * hd + d] = src[i];
        }
    }
}

// Up to 8 dimensions per lane: head_dim <= 256.
#define DS_MAX_PER_LANE 8

// out[r, h, :] = softmax(q[r, h] . K[slot, kvh, j] * scale) V[slot, kvh, j] over the
// keys j of row r: 0..=pos[r], or the last `window` of them. One block per (h, r); each
// warp takes every nw-th key with an online softmax, and the warps are merged at the end.
// q, out: [b, nh, hd]; kc, vc: [slots, nkv, cap, hd]; all contiguous.
template <typename T>
__device__ void decode_attn(const T *__restrict__ q, const T *__restrict__ kc,
                            const T *__restrict__ vc, T *__restrict__ out,
                            const uint32_t *__restrict__ idx, int b, int nh, int nkv, int cap,
                            int hd, int window, float scale) {
    extern __shared__ float sacc[]; // [nw * hd]
    __shared__ float sm[32];
    __shared__ float sl[32];
    const int h = blockIdx.x;
    const int r = blockIdx.y;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int nw = blockDim.x >> 5;
    const int kvh = h / (nh / nkv);
    const uint32_t slot = idx[2 * b + r];
    uint32_t len = slot == DS_PAD_SLOT ? 0 : idx[b + r] + 1;
    if (len > (uint32_t)cap) len = cap;
    const uint32_t start = (window > 0 && len > (uint32_t)window) ? len - window : 0;
    const T *qr = q + ((size_t)r * nh + h) * hd;
    const size_t base = ((size_t)slot * nkv + kvh) * (size_t)cap * hd;
    const T *kb = kc + base;
    const T *vb = vc + base;
    float qv[DS_MAX_PER_LANE];
    float acc[DS_MAX_PER_LANE];
#pragma unroll
    for (int i = 0; i < DS_MAX_PER_LANE; i++) {
        const int d = lane + 32 * i;
        qv[i] = d < hd ? to_f(qr[d]) * scale : 0.f;
        acc[i] = 0.f;
    }
    float m = -INFINITY;
    float l = 0.f;
    for (uint32_t j = start + warp; j < len; j += nw) {
        const T *kj = kb + (size_t)j * hd;
        float s = 0.f;
#pragma unroll
        for (int i = 0; i < DS_MAX_PER_LANE; i++) {
            const int d = lane + 32 * i;
            if (d < hd) s += qv[i] * to_f(kj[d]);
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        const float mn = fmaxf(m, s);
        const float c = __expf(m - mn);
        const float p = __expf(s - mn);
        l = l * c + p;
        const T *vj = vb + (size_t)j * hd;
#pragma unroll
        for (int i = 0; i < DS_MAX_PER_LANE; i++) {
            const int d = lane + 32 * i;
            if (d < hd) acc[i] = acc[i] * c + p * to_f(vj[d]);
        }
        m = mn;
    }
    if (lane == 0) {
        sm[warp] = m;
        sl[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < DS_MAX_PER_LANE; i++) {
        const int d = lane + 32 * i;
        if (d < hd) sacc[warp * hd + d] = acc[i];
    }
    __syncthreads();
    float mx = -INFINITY;
    for (int w = 0; w < nw; w++) mx = fmaxf(mx, sm[w]);
    float total = 0.f;
    for (int w = 0; w < nw; w++) total += sm[w] == -INFINITY ? 0.f : sl[w] * __expf(sm[w] - mx);
    T *o = out + ((size_t)r * nh + h) * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float v = 0.f;
        for (int w = 0; w < nw; w++) {
            if (sm[w] != -INFINITY) v += sacc[w * hd + d] * __expf(sm[w] - mx);
        }
        o[d] = from_f<T>(total > 0.f ? v / total : 0.f);
    }
}

#define DS_INSTANTIATE(T, SUFFIX)                                                              \
    extern "C" __global__ void kv_write_##SUFFIX(const T *src, T *cache, const uint32_t *idx, \
                                                 int b, int nkv, int cap, int hd) {           \
        kv_write<T>(src, cache, idx, b, nkv, cap, hd);                                         \
    }                                                                                          \
    extern "C" __global__ void decode_attn_##SUFFIX(                                           \
        const T *q, const T *kc, const T *vc, T *out, const uint32_t *idx, int b, int nh,     \
        int nkv, int cap, int hd, int window, float scale) {                                   \
        decode_attn<T>(q, kc, vc, out, idx, b, nh, nkv, cap, hd, window, scale);               \
    }

DS_INSTANTIATE(float, f32)
DS_INSTANTIATE(__half, f16)
DS_INSTANTIATE(__nv_bfloat16, bf16)

// Greedy picks: the index of each row's largest value (the first on ties, like
// torch.argmax; NaN never wins). Stage 1: grid (parts, rows), each block its chunk of a
// row; stage 2: one warp per row over the parts.
__device__ __forceinline__ void better(float &v, uint32_t &i, float ov, uint32_t oi) {
    if (ov > v || (ov == v && oi < i)) {
        v = ov;
        i = oi;
    }
}

template <typename T>
__device__ void argmax_part(const T *__restrict__ x, float *__restrict__ pv,
                            uint32_t *__restrict__ pi, int n, int parts) {
    __shared__ float sv[32];
    __shared__ uint32_t si[32];
    const int r = blockIdx.y, p = blockIdx.x;
    const int chunk = (n + parts - 1) / parts;
    const int start = p * chunk;
    const int end = min(n, start + chunk);
    float v = -INFINITY;
    uint32_t i = 0xffffffffu;
    for (int j = start + threadIdx.x; j < end; j += blockDim.x) {
        const float f = to_f(x[(size_t)r * n + j]);
        better(v, i, f, j);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, off);
        const uint32_t oi = __shfl_xor_sync(0xffffffffu, i, off);
        better(v, i, ov, oi);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        sv[warp] = v;
        si[warp] = i;
    }
    __syncthreads();
    if (warp == 0) {
        const int nw = blockDim.x >> 5;
        v = lane < nw ? sv[lane] : -INFINITY;
        i = lane < nw ? si[lane] : 0xffffffffu;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, v, off);
            const uint32_t oi = __shfl_xor_sync(0xffffffffu, i, off);
            better(v, i, ov, oi);
        }
        if (lane == 0) {
            pv[r * parts + p] = v;
            pi[r * parts + p] = i;
        }
    }
}

extern "C" __global__ void argmax_final(const float *pv, const uint32_t *pi, uint32_t *out,
                                        int parts) {
    const int r = blockIdx.x, lane = threadIdx.x;
    float v = -INFINITY;
    uint32_t i = 0xffffffffu;
    for (int p = lane; p < parts; p += 32) better(v, i, pv[r * parts + p], pi[r * parts + p]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, v, off);
        const uint32_t oi = __shfl_xor_sync(0xffffffffu, i, off);
        better(v, i, ov, oi);
    }
    if (lane == 0) out[r] = i == 0xffffffffu ? 0 : i;
}

#define DS_ARGMAX(T, SUFFIX)                                                                  \
    extern "C" __global__ void argmax_part_##SUFFIX(const T *x, float *pv, uint32_t *pi, int n, \
                                                    int parts) {                              \
        argmax_part<T>(x, pv, pi, n, parts);                                                  \
    }
DS_ARGMAX(float, f32)
DS_ARGMAX(__half, f16)
DS_ARGMAX(__nv_bfloat16, bf16)

// ---- Fused decode-step kernels (b <= 8 rows) ----------------------------------------
// y = x w^T for a decode step's few rows, weight-bandwidth bound: one warp per output
// column streaming the weight row with 16-byte loads, f32 accumulation.
// gemv_fused: y[r, n] = epilogue(sum_k a[r, k] w[n, k]) where the block first stages the
// activation a [B, K] in shared memory from x by its prologue:
//   PRO 0: a = x                                   (x: [B, K])
//   PRO 1: a = round(x * rsqrt(mean(x^2) + eps) * nw)   (RMSNorm; x: [B, K], nw: [K])
//   PRO 2: a = round(round(silu(x[:, :K])) * x[:, K:])  (SwiGLU; x: [B, 2K])
// epilogue: v = round(acc); v = round(v + bias[n]) if bias; v = round(v + res[r, n]) if res.
// Every rounding is where the unfused candle ops round, so results equal theirs.
// Each warp loads the first GEMV_PREFETCH 16-byte pieces per lane of its weight row
// before the prologue, so the weight stream does not wait for it (Llama-1B's GEMVs 1.42x
// faster than loading after it; H200, bench/gpu/kernels/gemv_bench.cu). Deeper prefetch,
// more or fewer warps per block, split-K, streaming loads, programmatic dependent launch
// and batching the prologue's loads (more registers, fewer blocks per SM) measured the
// same or slower there. x, nw: 16-byte aligned; K a multiple of 16 / sizeof(T).
#define GEMV_PREFETCH 4
// Weight bytes a fused GEMV asks the GPU to bring into L2 for the kernels after it: up to
// eight ranges (address, bytes; bytes 0 = none), 16-byte aligned, lengths multiples of 16.
// Planned per GEMV by the host (gpu-node/src/model/l2_prefetch.rs, the same layout as
// its `L2Ranges`); all zero unless DAYSHIFT_BENCH_L2_PREFETCH_MIB is set.
struct L2Ranges {
    unsigned long long p[8];
    unsigned long long n[8];
};

// This block's share of `bytes` at `p` brought into L2: warp 0's lanes each issue one bulk
// prefetch (cp.async.bulk.prefetch.L2, sm_90) of a 16-byte-aligned piece. Before sm_90
// nothing (a hint only).
__device__ __forceinline__ void l2_prefetch_share(unsigned long long p, unsigned long long bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (p == 0 || bytes == 0 || threadIdx.x >= 32) return;
    const unsigned long long per_block = ((bytes + gridDim.x - 1) / gridDim.x + 15) & ~15ull;
    const unsigned long long b0 = per_block * blockIdx.x;
    if (b0 >= bytes) return;
    const unsigned long long len = per_block < bytes - b0 ? per_block : bytes - b0;
    const unsigned long long per_lane = ((len + 31) / 32 + 15) & ~15ull;
    const unsigned long long l0 = per_lane * threadIdx.x;
    if (l0 >= len) return;
    const unsigned long long l = per_lane < len - l0 ? per_lane : len - l0;
    // No "memory" clobber: a hint orders nothing, and a clobber would stop the compiler
    // moving the GEMV's own loads across it (ptxas then gave the GEMVs other registers).
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p + b0 + l0), "r"((unsigned)l));
#endif
}

// This block's share of every range of `r` (the host fills ranges from the first, so an
// empty first range means none: one test when the prefetch is off).
__device__ __forceinline__ void l2_prefetch(const L2Ranges &r) {
    if (r.n[0] == 0) return;
#pragma unroll
    for (int i = 0; i < 8; i++) l2_prefetch_share(r.p[i], r.n[i]);
}

template <typename T> __device__ __forceinline__ T rnd(float x) { return from_f<T>(x); }

template <typename T>
__device__ __forceinline__ uint4 ld16(const T *p) {
    return *reinterpret_cast<const uint4 *>(p);
}

// The fused GEMVs' end for output column n: each row's sum over the warp, then the
// epilogue (rounded to T, + bias[n], + res[b, n], each rounded) into y[b, n]; y and res
// are [B, ld].
// Each of the B values summed over the warp, lane 0 writing the sums to part[warp].
template <int B>
__device__ __forceinline__ void warp_sums_to(const float *v, float (*part)[B], int warp, int lane) {
#pragma unroll
    for (int b = 0; b < B; b++) {
        float s = v[b];
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        if (lane == 0) part[warp][b] = s;
    }
}
template <typename T>
__device__ __forceinline__ void gemv_epilogue(float s, const T *__restrict__ bias,
                                              const T *__restrict__ res, T *__restrict__ y, int b,
                                              int n, int ld) {
    float r = to_f(rnd<T>(s));
    if (bias != nullptr) r = to_f(rnd<T>(r + to_f(bias[n])));
    if (res != nullptr) r = to_f(rnd<T>(r + to_f(res[(size_t)b * ld + n])));
    y[(size_t)b * ld + n] = rnd<T>(r);
}
template <typename T, int B>
__device__ __forceinline__ void gemv_finish(const float *acc, int lane, const T *__restrict__ bias,
                                            const T *__restrict__ res, T *__restrict__ y, int n,
                                            int ld) {
#pragma unroll
    for (int b = 0; b < B; b++) {
        float s = acc[b];
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        if (lane == 0) gemv_epilogue<T>(s, bias, res, y, b, n, ld);
    }
}

// PF: issue the L2 prefetch of `pf`, and take part in programmatic dependent launch (the
// `gemvfp_*` kernels, which the experiments of gpu-node/src/model/l2_prefetch.rs and
// static_step.rs launch). A separate instantiation so that the kernels without it compile
// exactly as before the prefetch existed (the call alone changed ptxas's register
// allocation of 11 of them).
//
// PAIR (the `gemvfs_*` kernels, PF's family with SwiGLU as the epilogue; static_step.rs):
// w holds 2 n_out rows, gate then up (a layer's gate|up), and the warp of output n takes
// rows n and n_out + n side by side, then writes silu(gate) * up, rounded where the
// SwiGLU prologue rounds (so the down projection after it stages its input as it is:
// the same products as PRO == 2, computed once instead of in every block of the down
// projection). No bias, no residual.
//
// U: the 16-byte pieces per lane each warp keeps in flight (GEMV_PREFETCH unless a kernel
// names another; bench/gpu/kernels/layer_bench.cu measures others).
// KS: warps per output row (not with PAIR): each takes a contiguous KS-th of the row's
// 16-byte pieces, and the first sums the KS partial sums in order before the epilogue. A
// long row (a narrow model's down projection: 4,864 long, 896 rows) is then in flight
// at once from KS warps instead of streamed by one in turns of U pieces a lane. The block
// takes blockDim / 32 / KS rows.
template <typename T, int B, int PRO, bool PF = false, bool PAIR = false, int U = GEMV_PREFETCH,
          int KS = 1>
__device__ void gemv_fused(const T *__restrict__ x, const T *__restrict__ nw, float eps,
                           const T *__restrict__ w, const T *__restrict__ bias,
                           const T *__restrict__ res, T *__restrict__ y, int n_out, int k_in,
                           const L2Ranges &pf = L2Ranges{}) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *a = reinterpret_cast<T *>(smem_raw); // [B, K]
    __shared__ float part[32][B];
    __shared__ float rinv[B];
    static_assert(!(PAIR && KS > 1), "PAIR takes one warp a row");
    constexpr int V = 16 / sizeof(T), CH = 32 * V * U;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const int n = blockIdx.x * (nwarps / KS) + warp / KS;
    const bool live = n < n_out;
    // This warp's part of the row: [kb, ke) (the whole row when KS == 1).
    int kb = 0, ke = k_in;
    if (KS > 1) {
        const int pieces = k_in / V, per = (pieces + KS - 1) / KS;
        kb = min(pieces, (warp % KS) * per) * V;
        ke = min(pieces, (warp % KS + 1) * per) * V;
    }
    const T *wr = w + (size_t)(live ? n : 0) * k_in;
    const T *wr2 = PAIR ? wr + (size_t)n_out * k_in : wr; // the up row (PAIR)
    uint4 wb[U], wb2[PAIR ? U : 1];
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int k = kb + (u * 32 + lane) * V;
        if (live && k < ke) wb[u] = __ldg(reinterpret_cast<const uint4 *>(wr + k));
        if (PAIR && live && k < ke) wb2[u] = __ldg(reinterpret_cast<const uint4 *>(wr2 + k));
    }
    if (PF) {
        l2_prefetch(pf);
        // The weights are the model's (never written by a kernel): their first loads above
        // may overlap the previous kernel's end; x, res and y only after it.
        pdl_wait();
        pdl_launch_dependents();
    }
    const int kv = k_in / V;
    if (PRO == 1) {
        float ss[B];
#pragma unroll
        for (int b = 0; b < B; b++) ss[b] = 0.f;
        for (int i = threadIdx.x; i < kv; i += blockDim.x) {
#pragma unroll
            for (int b = 0; b < B; b++) {
                const uint4 xv = ld16(x + (size_t)b * k_in + i * V);
                const T *xt = reinterpret_cast<const T *>(&xv);
#pragma unroll
                for (int v = 0; v < V; v++) ss[b] += to_f(xt[v]) * to_f(xt[v]);
            }
        }
        warp_sums_to<B>(ss, part, warp, lane);
        __syncthreads();
        if (threadIdx.x < B) {
            float s = 0.f;
            for (int i = 0; i < nwarps; i++) s += part[i][threadIdx.x];
            rinv[threadIdx.x] = rsqrtf(s / k_in + eps);
        }
        __syncthreads();
    }
    for (int i = threadIdx.x; i < B * kv; i += blockDim.x) {
        const int b = i / kv, c = i - b * kv;
        uint4 ov;
        T *ot = reinterpret_cast<T *>(&ov);
        if (PRO == 0) {
            ov = ld16(x + (size_t)b * k_in + c * V);
        } else if (PRO == 1) {
            const uint4 xv = ld16(x + (size_t)b * k_in + c * V), gv = ld16(nw + c * V);
            const T *xt = reinterpret_cast<const T *>(&xv);
            const T *gt = reinterpret_cast<const T *>(&gv);
#pragma unroll
            for (int v = 0; v < V; v++) ot[v] = rnd<T>(to_f(xt[v]) * rinv[b] * to_f(gt[v]));
        } else {
            const uint4 gv = ld16(x + (size_t)b * 2 * k_in + c * V);
            const uint4 uv = ld16(x + (size_t)b * 2 * k_in + k_in + c * V);
            const T *gt = reinterpret_cast<const T *>(&gv);
            const T *ut = reinterpret_cast<const T *>(&uv);
#pragma unroll
            for (int v = 0; v < V; v++) {
                const float g = to_f(gt[v]);
                const float s = to_f(rnd<T>(g / (1.f + __expf(-g))));
                ot[v] = rnd<T>(s * to_f(ut[v]));
            }
        }
        *reinterpret_cast<uint4 *>(a + (size_t)b * k_in + c * V) = ov;
    }
    __syncthreads();
    if (KS == 1 && !live) return; // (KS > 1: every warp reaches the barrier below)
    float acc[B], acc2[PAIR ? B : 1];
#pragma unroll
    for (int b = 0; b < B; b++) acc[b] = 0.f;
    if (PAIR) {
#pragma unroll
        for (int b = 0; b < B; b++) acc2[b] = 0.f;
    }
    for (int k0 = kb; k0 < ke; k0 += CH) {
        if (k0 > kb) {
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int k = k0 + (u * 32 + lane) * V;
                if (live && k < ke) wb[u] = __ldg(reinterpret_cast<const uint4 *>(wr + k));
                if (PAIR && k < ke) wb2[u] = __ldg(reinterpret_cast<const uint4 *>(wr2 + k));
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int k = k0 + (u * 32 + lane) * V;
            if (!live || k >= ke) continue;
            const T *wt = reinterpret_cast<const T *>(&wb[u]);
            float wf[V];
#pragma unroll
            for (int v = 0; v < V; v++) wf[v] = to_f(wt[v]);
#pragma unroll
            for (int b = 0; b < B; b++) {
                const uint4 xv = ld16(a + (size_t)b * k_in + k);
                const T *xt = reinterpret_cast<const T *>(&xv);
#pragma unroll
                for (int v = 0; v < V; v++) acc[b] += wf[v] * to_f(xt[v]);
            }
            if (PAIR) {
                const T *wt2 = reinterpret_cast<const T *>(&wb2[u]);
#pragma unroll
                for (int v = 0; v < V; v++) wf[v] = to_f(wt2[v]);
#pragma unroll
                for (int b = 0; b < B; b++) {
                    const uint4 xv = ld16(a + (size_t)b * k_in + k);
                    const T *xt = reinterpret_cast<const T *>(&xv);
#pragma unroll
                    for (int v = 0; v < V; v++) acc2[b] += wf[v] * to_f(xt[v]);
                }
            }
        }
    }
    if (PAIR) {
#pragma unroll
        for (int b = 0; b < B; b++) {
            float g = acc[b], u = acc2[b];
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) {
                g += __shfl_xor_sync(0xffffffffu, g, off);
                u += __shfl_xor_sync(0xffffffffu, u, off);
            }
            if (lane == 0) {
                // As gemv_finish rounds each output, then as the SwiGLU prologue.
                const float gr = to_f(rnd<T>(g)), ur = to_f(rnd<T>(u));
                const float sl = to_f(rnd<T>(gr / (1.f + __expf(-gr))));
                y[(size_t)b * n_out + n] = rnd<T>(sl * ur);
            }
        }
        return;
    }
    if (KS == 1) {
        gemv_finish<T, B>(acc, lane, bias, res, y, n, n_out);
        return;
    }
    // KS > 1: each warp's sums into part[warp], then the row's first warp adds its KS
    // warps' in order (part's prologue use ended at the barrier after the staging).
    warp_sums_to<B>(acc, part, warp, lane);
    __syncthreads();
    if (live && warp % KS == 0 && lane < B) {
        float s = 0.f;
#pragma unroll
        for (int j = 0; j < KS; j++) s += part[warp + j][lane];
        gemv_epilogue<T>(s, bias, res, y, lane, n, n_out);
    }
}

#define DS_GEMVF(T, SUFFIX, B, PRO)                                                            \
    extern "C" __global__ void gemvf_##SUFFIX##_##B##_##PRO(                                    \
        const T *x, const T *nw, float eps, const T *w, const T *bias, const T *res, T *y,      \
        int n_out, int k_in, L2Ranges pf) {                                                    \
        gemv_fused<T, B, PRO>(x, nw, eps, w, bias, res, y, n_out, k_in, pf);                   \
    }                                                                                          \
    extern "C" __global__ void gemvfp_##SUFFIX##_##B##_##PRO(                                   \
        const T *x, const T *nw, float eps, const T *w, const T *bias, const T *res, T *y,      \
        int n_out, int k_in, L2Ranges pf) {                                                    \
        gemv_fused<T, B, PRO, true>(x, nw, eps, w, bias, res, y, n_out, k_in, pf);             \
    }
#define DS_GEMVF_B(T, SUFFIX, PRO)                                                             \
    DS_GEMVF(T, SUFFIX, 1, PRO) DS_GEMVF(T, SUFFIX, 2, PRO) DS_GEMVF(T, SUFFIX, 3, PRO)        \
    DS_GEMVF(T, SUFFIX, 4, PRO) DS_GEMVF(T, SUFFIX, 5, PRO) DS_GEMVF(T, SUFFIX, 6, PRO)        \
    DS_GEMVF(T, SUFFIX, 7, PRO) DS_GEMVF(T, SUFFIX, 8, PRO)
#define DS_GEMVF_ALL(T, SUFFIX) DS_GEMVF_B(T, SUFFIX, 0) DS_GEMVF_B(T, SUFFIX, 1) DS_GEMVF_B(T, SUFFIX, 2)
DS_GEMVF_ALL(float, f32)
DS_GEMVF_ALL(__half, f16)
DS_GEMVF_ALL(__nv_bfloat16, bf16)
// gemvfs_*: a layer's RMSNorm + gate|up with SwiGLU as the epilogue (PAIR above); n_out is
// the intermediate size, w its 2 n_out rows.
#define DS_GEMVFS(T, SUFFIX, B)                                                                \
    extern "C" __global__ void gemvfs_##SUFFIX##_##B##_1(                                       \
        const T *x, const T *nw, float eps, const T *w, const T *bias, const T *res, T *y,      \
        int n_out, int k_in, L2Ranges pf) {                                                    \
        gemv_fused<T, B, 1, true, true>(x, nw, eps, w, bias, res, y, n_out, k_in, pf);         \
    }
#define DS_GEMVFS_ALL(T, SUFFIX)                                                               \
    DS_GEMVFS(T, SUFFIX, 1) DS_GEMVFS(T, SUFFIX, 2) DS_GEMVFS(T, SUFFIX, 3)                    \
    DS_GEMVFS(T, SUFFIX, 4) DS_GEMVFS(T, SUFFIX, 5) DS_GEMVFS(T, SUFFIX, 6)                    \
    DS_GEMVFS(T, SUFFIX, 7) DS_GEMVFS(T, SUFFIX, 8)
DS_GEMVFS_ALL(float, f32)
DS_GEMVFS_ALL(__half, f16)
DS_GEMVFS_ALL(__nv_bfloat16, bf16)
// gemvfs2_*: gemvfs_* keeping 2 pieces a lane in flight (U above) instead of
// GEMV_PREFETCH: fewer registers, more blocks an SM (StaticStepMode::pair_u2).
#define DS_GEMVFS2(T, SUFFIX, B)                                                               \
    extern "C" __global__ void gemvfs2_##SUFFIX##_##B##_1(                                      \
        const T *x, const T *nw, float eps, const T *w, const T *bias, const T *res, T *y,      \
        int n_out, int k_in, L2Ranges pf) {                                                    \
        gemv_fused<T, B, 1, true, true, 2>(x, nw, eps, w, bias, res, y, n_out, k_in, pf);      \
    }
#define DS_GEMVFS2_ALL(T, SUFFIX)                                                              \
    DS_GEMVFS2(T, SUFFIX, 1) DS_GEMVFS2(T, SUFFIX, 2) DS_GEMVFS2(T, SUFFIX, 3)                 \
    DS_GEMVFS2(T, SUFFIX, 4) DS_GEMVFS2(T, SUFFIX, 5) DS_GEMVFS2(T, SUFFIX, 6)                 \
    DS_GEMVFS2(T, SUFFIX, 7) DS_GEMVFS2(T, SUFFIX, 8)
DS_GEMVFS2_ALL(float, f32)
DS_GEMVFS2_ALL(__half, f16)
DS_GEMVFS2_ALL(__nv_bfloat16, bf16)
// gemvfk_*: gemvfp_* with 4 warps a row (KS above; StaticStepMode::split_rows), for the
// prologues a long row has (0: none, 2: SwiGLU).
#define DS_GEMVFK(T, SUFFIX, B, PRO)                                                           \
    extern "C" __global__ void gemvfk_##SUFFIX##_##B##_##PRO(                                   \
        const T *x, const T *nw, float eps, const T *w, const T *bias, const T *res, T *y,      \
        int n_out, int k_in, L2Ranges pf) {                                                    \
        gemv_fused<T, B, PRO, true, false, GEMV_PREFETCH, 4>(x, nw, eps, w, bias, res, y,       \
                                                             n_out, k_in, pf);                 \
    }
#define DS_GEMVFK_B(T, SUFFIX, PRO)                                                            \
    DS_GEMVFK(T, SUFFIX, 1, PRO) DS_GEMVFK(T, SUFFIX, 2, PRO) DS_GEMVFK(T, SUFFIX, 3, PRO)     \
    DS_GEMVFK(T, SUFFIX, 4, PRO) DS_GEMVFK(T, SUFFIX, 5, PRO) DS_GEMVFK(T, SUFFIX, 6, PRO)     \
    DS_GEMVFK(T, SUFFIX, 7, PRO) DS_GEMVFK(T, SUFFIX, 8, PRO)
DS_GEMVFK_B(float, f32, 0) DS_GEMVFK_B(float, f32, 2)
DS_GEMVFK_B(__half, f16, 0) DS_GEMVFK_B(__half, f16, 2)
DS_GEMVFK_B(__nv_bfloat16, bf16, 0) DS_GEMVFK_B(__nv_bfloat16, bf16, 2)

// rope_qkv: the step after a fused q|k|v projection qkv [b, (nh + 2 nkv) hd], in one
// launch (three launches, one per part, cost 1.16 us each on an H200; most of it the
// launch, bench/gpu/kernels/gemv_bench.cu `attn`): block (x, r) takes head x of the row's
// nh query, nkv key and nkv value heads:
//   query heads: q_out[r, h] = rope(qknorm(q[r, h]))            q_out: [b, nh, hd]
//   key heads:   kc[slot, h, pos] = rope(qknorm(k[r, h]))       (the key cache)
//   value heads: vc[slot, h, pos] = v[r, h]                     (the value cache)
// qknorm is the per-head RMSNorm with qn (queries) or kn (keys) where given (Qwen3,
// Gemma 3); RoPE is the non-interleaved (rotate-half) form; cos/sin: [positions, hd / 2];
// padding rows and positions past the cache write nothing to the caches.
// grid (nh + 2 nkv, b); block hd / 2 threads.
// PDL: takes part in programmatic dependent launch (rope_qkv_pdl_*).
template <typename T, bool PDL = false>
__device__ void rope_qkv(const T *__restrict__ qkv, const T *__restrict__ qn,
                         const T *__restrict__ kn, float eps, const T *__restrict__ cos,
                         const T *__restrict__ sin, T *__restrict__ q_out, T *__restrict__ kc,
                         T *__restrict__ vc, const uint32_t *__restrict__ idx, int b, int nh,
                         int nkv, int cap, int hd) {
    if (PDL) {
        pdl_wait();
        pdl_launch_dependents();
    }
    __shared__ float red[32];
    const int head = blockIdx.x, r = blockIdx.y, i = threadIdx.x, half = hd / 2;
    const int part = head < nh ? 0 : head < nh + nkv ? 1 : 2;
    const int h = part == 0 ? head : part == 1 ? head - nh : head - nh - nkv;
    const T *norm = part == 0 ? qn : part == 1 ? kn : nullptr;
    const uint32_t pos = idx[b + r];
    const uint32_t slot = idx[2 * b + r];
    const T *src = qkv + (size_t)r * (nh + 2 * nkv) * hd + (size_t)head * hd;
    float x1 = to_f(src[i]), x2 = to_f(src[i + half]);
    if (norm != nullptr) { // the same for the whole block
        float ss = x1 * x1 + x2 * x2;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
        const int lane = i & 31, warp = i >> 5, nwarps = (blockDim.x + 31) >> 5;
        if (lane == 0) red[warp] = ss;
        __syncthreads();
        float tot = 0.f;
        for (int w = 0; w < nwarps; w++) tot += red[w];
        const float rs = rsqrtf(tot / hd + eps);
        x1 = to_f(rnd<T>(x1 * rs * to_f(norm[i])));
        x2 = to_f(rnd<T>(x2 * rs * to_f(norm[i + half])));
    }
    T o1, o2;
    if (part < 2) {
        const float c = to_f(cos[(size_t)pos * half + i]), s = to_f(sin[(size_t)pos * half + i]);
        o1 = rnd<T>(x1 * c - x2 * s);
        o2 = rnd<T>(x1 * s + x2 * c);
    } else {
        o1 = rnd<T>(x1);
        o2 = rnd<T>(x2);
    }
    if (part == 0) {
        T *q = q_out + ((size_t)r * nh + h) * hd;
        q[i] = o1;
        q[i + half] = o2;
    } else if (slot != DS_PAD_SLOT && pos < (uint32_t)cap) {
        T *c = (part == 1 ? kc : vc) + (((size_t)slot * nkv + h) * cap + pos) * hd;
        c[i] = o1;
        c[i + half] = o2;
    }
}

#define DS_ROPE(T, SUFFIX)                                                                     \
    extern "C" __global__ void rope_qkv_##SUFFIX(                                               \
        const T *qkv, const T *qn, const T *kn, float eps, const T *cos, const T *sin,          \
        T *q_out, T *kc, T *vc, const uint32_t *idx, int b, int nh, int nkv, int cap, int hd) { \
        rope_qkv<T>(qkv, qn, kn, eps, cos, sin, q_out, kc, vc, idx, b, nh, nkv, cap, hd);      \
    }                                                                                          \
    extern "C" __global__ void rope_qkv_pdl_##SUFFIX(                                           \
        const T *qkv, const T *qn, const T *kn, float eps, const T *cos, const T *sin,          \
        T *q_out, T *kc, T *vc, const uint32_t *idx, int b, int nh, int nkv, int cap, int hd) { \
        rope_qkv<T, true>(qkv, qn, kn, eps, cos, sin, q_out, kc, vc, idx, b, nh, nkv, cap, hd); \
    }
DS_ROPE(float, f32)
DS_ROPE(__half, f16)
DS_ROPE(__nv_bfloat16, bf16)

// rope_qkv's work for one block of decode_attn64<ROPE> (blockDim 128 >= HD / 2), as
// floats of the values rope_qkv stores: head h's query into sq; with want_kv kv head
// kvh's key into sk and its value into sv. `row`: the row's q|k|v; red8: 8 floats of
// shared memory. Every thread of the block calls it (it synchronises).
template <typename T, int HD>
__device__ void rope_head_smem(const T *__restrict__ row, int h, int kvh, int nh, int nkv,
                               const T *__restrict__ qn, const T *__restrict__ kn, float eps,
                               const T *__restrict__ cos, const T *__restrict__ sin,
                               uint32_t pos, bool want_kv, float *sq, float *sk, float *sv,
                               float *red8) {
    constexpr int HALF = HD / 2;
    const int i = threadIdx.x, lane = i & 31, warp = i >> 5;
    float q1 = 0.f, q2 = 0.f, k1 = 0.f, k2 = 0.f;
    if (i < HALF) {
        const T *qs = row + (size_t)h * HD;
        q1 = to_f(qs[i]);
        q2 = to_f(qs[i + HALF]);
        if (want_kv) {
            const T *ks = row + (size_t)(nh + kvh) * HD;
            const T *vs = row + (size_t)(nh + nkv + kvh) * HD;
            k1 = to_f(ks[i]);
            k2 = to_f(ks[i + HALF]);
            sv[i] = to_f(vs[i]);
            sv[i + HALF] = to_f(vs[i + HALF]);
        }
    }
    if (qn != nullptr || kn != nullptr) { // the same for the whole block
        // As rope_qkv: a butterfly in each warp, then the warps' sums in order (the
        // warps past HALF / 32 add zeros at the end).
        float a = q1 * q1 + q2 * q2, c = k1 * k1 + k2 * k2;
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            a += __shfl_xor_sync(0xffffffffu, a, off);
            c += __shfl_xor_sync(0xffffffffu, c, off);
        }
        if (lane == 0) {
            red8[warp] = a;
            red8[4 + warp] = c;
        }
        __syncthreads();
        float ta = 0.f, tc = 0.f;
        for (int w = 0; w < (HALF + 31) / 32; w++) {
            ta += red8[w];
            tc += red8[4 + w];
        }
        if (i < HALF) {
            if (qn != nullptr) {
                const float rs = rsqrtf(ta / HD + eps);
                q1 = to_f(rnd<T>(q1 * rs * to_f(qn[i])));
                q2 = to_f(rnd<T>(q2 * rs * to_f(qn[i + HALF])));
            }
            if (kn != nullptr && want_kv) {
                const float rs = rsqrtf(tc / HD + eps);
                k1 = to_f(rnd<T>(k1 * rs * to_f(kn[i])));
                k2 = to_f(rnd<T>(k2 * rs * to_f(kn[i + HALF])));
            }
        }
    }
    if (i < HALF) {
        const float c = to_f(cos[(size_t)pos * HALF + i]), s = to_f(sin[(size_t)pos * HALF + i]);
        sq[i] = to_f(rnd<T>(q1 * c - q2 * s));
        sq[i + HALF] = to_f(rnd<T>(q1 * s + q2 * c));
        if (want_kv) {
            sk[i] = to_f(rnd<T>(k1 * c - k2 * s));
            sk[i + HALF] = to_f(rnd<T>(k1 * s + k2 * c));
        }
    }
    __syncthreads();
}

// Decode attention for head size 64 * G (G = 1, 2, 4), split over the keys
// (flash-decoding): block (h, r, sp) takes row r's keys in [sp * split_keys,
// (sp + 1) * split_keys) that lie in its window [start, len), so a long context spreads
// over many blocks instead of one per head (grid (nh, b, splits), block 128). In a
// block, G lanes share a key (64 dimensions each) and the 128 / G key groups each keep an
// online softmax; the groups are merged in shared memory (rows padded by one float: no
// bank conflicts), all threads taking part. Where only one split holds keys of the row
// (a context up to split_keys long), that block writes the output and the row's other
// blocks leave at once; where several do, each writes its max, sum and unnormalised
// accumulator, and the last of the row's split blocks to finish
// (counted in counters[r * nh + h] with atomicInc, which wraps back to 0 at the count of
// the row's splits that hold keys, so the counter is 0 again for the next launch)
// combines them:
//   out[r, h, d] = sum_s acc_s[d] e^(m_s - M) / sum_s l_s e^(m_s - M), M = max_s m_s
// (a separate merge kernel cost a launch per layer; the fence and count measured ~1.5 us
// slower than it on an H200, which only contexts over split_keys pay).
// Shapes as decode_attn; part_m, part_l: [b, nh, splits], part_acc: [b, nh, splits, HD];
// counters: [b * nh], zero before the first launch.
// PDL: takes part in programmatic dependent launch (decode_attn64_pdl_*).
// ROPE (decode_attn_rope_pdl_*, the static decode step): `q` is the step's q|k|v rows
// `[b, nh + 2 nkv, HD]` as the QKV projection wrote them, and the block does rope_qkv's
// work for what it needs, with rope_qkv's roundings: its head's query (q norm, RoPE) and,
// where its keys include the row's new position, the new key (k norm, RoPE) and value,
// kept in shared memory and used in place of the cache's entry at that position; the
// block of the kv head's first query head writes them into the caches (no block of the
// launch reads the cache there). One launch per layer less than rope_qkv + attention.
// It also waits later than the other kernels: each key group's first key and value (in
// 16-bit dtypes) are loaded before pdl_wait, while the projection still runs.
// (The caches are written only with ROPE; the other kernels pass them const_cast.)
template <typename T, int G, bool PDL = false, bool ROPE = false>
__device__ void decode_attn64(const T *__restrict__ q, T *__restrict__ kc,
                              T *__restrict__ vc, T *__restrict__ out,
                              float *__restrict__ part_m, float *__restrict__ part_l,
                              float *__restrict__ part_acc, uint32_t *__restrict__ counters,
                              const uint32_t *__restrict__ idx, int b, int nh, int nkv, int cap,
                              int window, float scale, int split_keys,
                              const T *__restrict__ qn = nullptr,
                              const T *__restrict__ kn = nullptr, float eps = 0.f,
                              const T *__restrict__ cos = nullptr,
                              const T *__restrict__ sin = nullptr) {
    // (ROPE waits later: what it reads before the wait, the step's indices and the cache
    // up to the previous step, no kernel of this step has written.)
    if (PDL && !ROPE) {
        pdl_wait();
        pdl_launch_dependents();
    }
    constexpr int HD = 64 * G;
    constexpr int HDP = HD + 1;
    constexpr int V = 16 / sizeof(T);
    constexpr int NG = 128 / G; // key groups per block (blockDim 128)
    __shared__ float sm[NG];
    __shared__ float sl[NG];
    __shared__ float sw[NG];
    __shared__ float sacc[NG * HDP];
    __shared__ float red[4];
    const int h = blockIdx.x, r = blockIdx.y, sp = blockIdx.z, splits = gridDim.z;
    const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
    const int g = t / G, part = t % G;
    const int kvh = h / (nh / nkv);
    const uint32_t slot = idx[2 * b + r];
    uint32_t len = slot == DS_PAD_SLOT ? 0 : idx[b + r] + 1;
    if (len > (uint32_t)cap) len = cap;
    uint32_t start = (window > 0 && len > (uint32_t)window) ? len - window : 0;
    // The row's splits that hold keys: [s_lo, s_lo + active). With at most one, that
    // block (or split 0, for a row with no keys) writes the output itself and the others
    // leave at once: no partials, no counting, no merge (a short context, the common
    // case of a chat's decode).
    const uint32_t s_lo = start / split_keys;
    const int active = len > start ? (int)((len - 1) / split_keys - s_lo + 1) : 0;
    const bool direct = splits == 1 || active <= 1;
    if (active == 0 ? sp != 0 : (sp < (int)s_lo || sp >= (int)s_lo + active)) return;
    const uint32_t lo = (uint32_t)sp * split_keys, hi = lo + split_keys;
    if (start < lo) start = lo;
    if (len > hi) len = hi;
    const size_t head_base = ((size_t)(slot == DS_PAD_SLOT ? 0 : slot) * nkv + kvh) * (size_t)cap * HD;
    const size_t base = head_base + part * 64;
    float qv[64], acc[64];
    // ROPE: the new position's key and value, where this block's keys include it.
    __shared__ float sq[ROPE ? HD : 1], sk[ROPE ? HD : 1], sv[ROPE ? HD : 1];
    __shared__ float red8[8];
    uint32_t cur = 0xffffffffu;
    // ROPE: the group's first key and value, loaded before waiting for the q|k|v
    // projection, so that their latency overlaps its end (the new position's entry is
    // taken from shared memory instead, whatever is loaded for it here). Not in f32,
    // whose 32 more registers a value spill (f32 is the checks' dtype, not the fast one).
    constexpr bool PRE = ROPE && sizeof(T) == 2;
    uint4 kpre[PRE ? 64 / V : 1], vpre[PRE ? 64 / V : 1];
    if (ROPE) {
        if (PRE && start + g < len) {
            const T *kj = kc + base + (size_t)(start + g) * HD;
            const T *vj = vc + base + (size_t)(start + g) * HD;
#pragma unroll
            for (int c = 0; c < 64 / V; c++) {
                kpre[c] = __ldg(reinterpret_cast<const uint4 *>(kj + c * V));
                vpre[c] = __ldg(reinterpret_cast<const uint4 *>(vj + c * V));
            }
        }
        if (PDL) {
            pdl_wait();
            pdl_launch_dependents();
        }
        const uint32_t pos = idx[b + r];
        const bool mine = slot != DS_PAD_SLOT && pos < (uint32_t)cap && pos >= start && pos < len;
        if (slot != DS_PAD_SLOT) // the same for the whole block; a padding row attends to nothing
            rope_head_smem<T, HD>(q + (size_t)r * (nh + 2 * nkv) * HD, h, kvh, nh, nkv, qn, kn, eps,
                                  cos, sin, pos, mine, sq, sk, sv, red8);
        if (mine) {
            cur = pos;
            if (h % (nh / nkv) == 0)
                for (int d = t; d < HD; d += 128) {
                    kc[head_base + (size_t)pos * HD + d] = from_f<T>(sk[d]);
                    vc[head_base + (size_t)pos * HD + d] = from_f<T>(sv[d]);
                }
        }
#pragma unroll
        for (int d = 0; d < 64; d++) {
            qv[d] = slot != DS_PAD_SLOT ? sq[part * 64 + d] * scale : 0.f;
            acc[d] = 0.f;
        }
    } else {
        const T *qr = q + ((size_t)r * nh + h) * HD + part * 64;
#pragma unroll
        for (int c = 0; c < 64 / V; c++) {
            const uint4 u = *reinterpret_cast<const uint4 *>(qr + c * V);
            const T *tv = reinterpret_cast<const T *>(&u);
#pragma unroll
            for (int v = 0; v < V; v++) {
                qv[c * V + v] = to_f(tv[v]) * scale;
                acc[c * V + v] = 0.f;
            }
        }
    }
    // Only this key group's G lanes take an iteration (the bound differs between
    // groups), so only they may take part in the shuffle: a full-warp mask here hung the
    // GPU at head size 128 (H200, 2026-12-04).
    const unsigned gmask = G == 1 ? 1u : ((1u << G) - 1) << (lane & ~(G - 1));
    float m = -INFINITY, l = 0.f;
    for (uint32_t j = start + g; j < len; j += NG) {
        const T *kj = kc + base + (size_t)j * HD;
        const bool pre = PRE && j == start + g; // loaded before the wait
        float sc = 0.f;
        if (ROPE && j == cur) {
#pragma unroll
            for (int d = 0; d < 64; d++) sc += qv[d] * sk[part * 64 + d];
        } else {
#pragma unroll
            for (int c = 0; c < 64 / V; c++) {
                const uint4 u =
                    pre ? kpre[c] : __ldg(reinterpret_cast<const uint4 *>(kj + c * V));
                const T *tv = reinterpret_cast<const T *>(&u);
#pragma unroll
                for (int v = 0; v < V; v++) sc += qv[c * V + v] * to_f(tv[v]);
            }
        }
#pragma unroll
        for (int off = 1; off < G; off <<= 1) sc += __shfl_xor_sync(gmask, sc, off);
        const float mn = fmaxf(m, sc);
        const float cr = __expf(m - mn);
        const float p = __expf(sc - mn);
        l = l * cr + p;
        const T *vj = vc + base + (size_t)j * HD;
        if (ROPE && j == cur) {
#pragma unroll
            for (int d = 0; d < 64; d++) acc[d] = acc[d] * cr + p * sv[part * 64 + d];
        } else {
#pragma unroll
            for (int c = 0; c < 64 / V; c++) {
                const uint4 u =
                    pre ? vpre[c] : __ldg(reinterpret_cast<const uint4 *>(vj + c * V));
                const T *tv = reinterpret_cast<const T *>(&u);
#pragma unroll
                for (int v = 0; v < V; v++)
                    acc[c * V + v] = acc[c * V + v] * cr + p * to_f(tv[v]);
            }
        }
        m = mn;
    }
    if (part == 0) {
        sm[g] = m;
        sl[g] = l;
    }
#pragma unroll
    for (int d = 0; d < 64; d++) sacc[g * HDP + part * 64 + d] = acc[d];
    __syncthreads();
    // The block's max over groups, then each group's weight exp(m_g - max).
    float mx = t < NG ? sm[t] : -INFINITY;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    if (lane == 0) red[warp] = mx;
    __syncthreads();
    mx = fmaxf(fmaxf(red[0], red[1]), fmaxf(red[2], red[3]));
    if (t < NG) sw[t] = sm[t] == -INFINITY ? 0.f : __expf(sm[t] - mx);
    __syncthreads(); // sw is written, and every thread has read red[] for the max
    float tl = t < NG ? sl[t] * sw[t] : 0.f;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) tl += __shfl_xor_sync(0xffffffffu, tl, off);
    if (lane == 0) red[warp] = tl;
    __syncthreads();
    const float total = red[0] + red[1] + red[2] + red[3];
    // Output dimension d: P = 128 / HD threads (HD = 64) share its groups, or each
    // thread takes HD / 128 dimensions (HD >= 128).
    constexpr int P = HD >= 128 ? 1 : 128 / HD;
    const size_t row = (size_t)r * nh + h;
    for (int d0 = 0; d0 < HD; d0 += 128 / P) {
        const int d = d0 + t / P, sub = t % P;
        float v = 0.f;
        if (d < HD)
            for (int w = sub; w < NG; w += P) v += sacc[w * HDP + d] * sw[w];
#pragma unroll
        for (int off = 1; off < P; off <<= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
        if (d >= HD || sub != 0) continue;
        if (direct) {
            out[row * HD + d] = from_f<T>(total > 0.f ? v / total : 0.f);
        } else {
            part_acc[(row * splits + sp) * HD + d] = v;
        }
    }
    if (direct) return; // the same for the whole block
    if (t == 0) {
        part_m[row * splits + sp] = mx;
        part_l[row * splits + sp] = total;
    }
    // Every thread's partial writes are visible device-wide before the block counts
    // itself; the block that counts last merges (the CUDA threadFenceReduction pattern).
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (t == 0) last = atomicInc(&counters[row], (unsigned)active - 1) == (unsigned)active - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    // (__ldcg: from L2, where the other blocks' writes are; never a stale L1 line)
    float gm = -INFINITY;
#pragma unroll 4
    for (int s = s_lo; s < (int)s_lo + active; s++) gm = fmaxf(gm, __ldcg(part_m + row * splits + s));
    for (int d = t; d < HD; d += 128) {
        float v = 0.f, tot = 0.f;
        if (gm != -INFINITY) {
#pragma unroll 4
            for (int s = s_lo; s < (int)s_lo + active; s++) {
                const float pm = __ldcg(part_m + row * splits + s);
                if (pm == -INFINITY) continue;
                const float w = __expf(pm - gm);
                tot += __ldcg(part_l + row * splits + s) * w;
                v += __ldcg(part_acc + (row * splits + s) * HD + d) * w;
            }
        }
        out[row * HD + d] = from_f<T>(tot > 0.f ? v / tot : 0.f);
    }
}

#define DS_ATTN64(T, SUFFIX, G)                                                                \
    extern "C" __global__ void decode_attn64_##SUFFIX##_##G(                                    \
        const T *q, const T *kc, const T *vc, T *out, float *pm, float *pl, float *pa,         \
        uint32_t *counters, const uint32_t *idx, int b, int nh, int nkv, int cap, int window,  \
        float scale, int split_keys) {                                                         \
        decode_attn64<T, G>(q, const_cast<T *>(kc), const_cast<T *>(vc), out, pm, pl, pa,      \
                            counters, idx, b, nh, nkv, cap, window, scale, split_keys);        \
    }                                                                                          \
    extern "C" __global__ void decode_attn64_pdl_##SUFFIX##_##G(                                \
        const T *q, const T *kc, const T *vc, T *out, float *pm, float *pl, float *pa,         \
        uint32_t *counters, const uint32_t *idx, int b, int nh, int nkv, int cap, int window,  \
        float scale, int split_keys) {                                                         \
        decode_attn64<T, G, true>(q, const_cast<T *>(kc), const_cast<T *>(vc), out, pm, pl, pa, \
                                  counters, idx, b, nh, nkv, cap, window, scale, split_keys);  \
    }                                                                                          \
    extern "C" __global__ void decode_attn_rope_pdl_##SUFFIX##_##G(                             \
        const T *qkv, const T *qn, const T *kn, float eps, const T *cos, const T *sin, T *kc,   \
        T *vc, T *out, float *pm, float *pl, float *pa, uint32_t *counters,                    \
        const uint32_t *idx, int b, int nh, int nkv, int cap, int window, float scale,         \
        int split_keys) {                                                                      \
        decode_attn64<T, G, true, true>(qkv, kc, vc, out, pm, pl, pa, counters, idx, b, nh, nkv, \
                                        cap, window, scale, split_keys, qn, kn, eps, cos, sin); \
    }
DS_ATTN64(float, f32, 1) DS_ATTN64(float, f32, 2) DS_ATTN64(float, f32, 4)
DS_ATTN64(__half, f16, 1) DS_ATTN64(__half, f16, 2) DS_ATTN64(__half, f16, 4)
DS_ATTN64(__nv_bfloat16, bf16, 1) DS_ATTN64(__nv_bfloat16, bf16, 2) DS_ATTN64(__nv_bfloat16, bf16, 4)

// embed_rows: out[r, :] = table[ids[r], :] for the b rows of a decode step (ids: the
// first b values of the step's index buffer), the embedding lookup of the decode step
// that static_step.rs launches (zeros for an id of vocab or more). Takes part in
// programmatic dependent launch. grid (b), block 256; table: [vocab, hidden].
template <typename T>
__device__ void embed_rows(const T *__restrict__ table, const uint32_t *__restrict__ idx,
                           T *__restrict__ out, int vocab, int hidden) {
    pdl_wait();
    pdl_launch_dependents();
    const int r = blockIdx.x;
    const uint32_t id = idx[r];
    T *o = out + (size_t)r * hidden;
    if (id >= (uint32_t)vocab) {
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) o[i] = from_f<T>(0.f);
        return;
    }
    const T *t = table + (size_t)id * hidden;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) o[i] = t[i];
}
#define DS_EMBED(T, SUFFIX)                                                                    \
    extern "C" __global__ void embed_rows_##SUFFIX(const T *table, const uint32_t *idx, T *out, \
                                                   int vocab, int hidden) {                    \
        embed_rows<T>(table, idx, out, vocab, hidden);                                         \
    }
DS_EMBED(float, f32)
DS_EMBED(__half, f16)
DS_EMBED(__nv_bfloat16, bf16)

#include "qgemv.cuh"
