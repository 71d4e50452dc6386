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
