// Microbenchmark and check of the quantized decode GEMV (gpu-node/cuda/qgemv.cuh, issue 18)
// against the device's copy bandwidth, measured in the same run:
//   nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/qb bench/gpu/kernels/qgemv_bench.cu && /tmp/qb
// Weights are random GGML blocks (Q4_K, Q6_K, Q8_0; scales d/dmin set to small f16
// values). Each output is compared with a plain reference: the weights dequantized by
// the GGML formulas (written here independently of the kernel) and multiplied in f32
// with the same prologue's activation; the error is the largest difference relative to
// the largest reference output (the kernel rounds the activation to 8 bits per 32
// values, as llama.cpp and candle do: about 1 %).
// Each timing is a CUDA graph of L launches, each on its own copy of the weights
// (>= 1 GiB in all, so no launch finds its weights in L2), replayed 20 times after 3
// warm-ups. Shapes: Qwen3-8B's batch-1 decode GEMVs as a Q4_K_M file has them, and the
// same in Q8_0.
#include "../../../gpu-node/cuda/decode.cu"
#include "bench_util.cuh"
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

__device__ uint32_t hash(size_t i, uint32_t seed) {
    uint32_t h = (uint32_t)i * 2654435761u ^ seed ^ (uint32_t)(i >> 32) * 0x9e3779b9u;
    h ^= h >> 13;
    h *= 0x5bd1e995u;
    h ^= h >> 15;
    return h;
}

__global__ void fill_bytes(uint8_t *p, size_t n, uint32_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        p[i] = hash(i, seed) & 0xff;
}

__global__ void fill_bf(bf *p, size_t n, uint32_t seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        p[i] = __float2bfloat16(((hash(i, seed) & 0xffff) / 65535.f - 0.5f) * scale);
}

// Sets every block's f16 scale fields to small positive values.
__global__ void fix_scales(uint8_t *p, size_t nblocks, int type, uint32_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < nblocks;
         i += (size_t)gridDim.x * blockDim.x) {
        const float u = 0.5f + (hash(i, seed) & 0xff) / 255.f;
        if (type == QG_Q4_K) {
            uint8_t *b = p + i * 144;
            *reinterpret_cast<__half *>(b) = __float2half(0.002f * u);
            *reinterpret_cast<__half *>(b + 2) = __float2half(0.004f * u);
        } else if (type == QG_Q6_K) {
            *reinterpret_cast<__half *>(p + i * 210 + 208) = __float2half(0.0005f * u);
        } else {
            *reinterpret_cast<__half *>(p + i * 34) = __float2half(0.001f * u);
        }
    }
}

static size_t block_bytes(int t) { return t == QG_Q4_K ? 144 : t == QG_Q6_K ? 210 : 34; }
static int block_vals(int t) { return t == QG_Q8_0 ? 32 : 256; }
static size_t matrix_bytes(int t, int n, int k) { return (size_t)n * (k / block_vals(t)) * block_bytes(t); }

// Reference dequantization, one thread per value: wd[n, k] (f32).
__global__ void dequant(const uint8_t *w, int type, int n, int k, float *wd) {
    const size_t total = (size_t)n * k;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t row = i / k;
        const int col = i % k;
        const int bv = type == QG_Q8_0 ? 32 : 256;
        const size_t bb = type == QG_Q4_K ? 144 : type == QG_Q6_K ? 210 : 34;
        const uint8_t *b = w + (row * (k / bv) + col / bv) * bb;
        const int e = col % bv;
        float v;
        if (type == QG_Q4_K) {
            const float d = __half2float(*reinterpret_cast<const __half *>(b));
            const float dm = __half2float(*reinterpret_cast<const __half *>(b + 2));
            const uint8_t *sc = b + 4, *qs = b + 16;
            const int j64 = e / 64, hi = (e % 64) >= 32, l = e % 32, is = 2 * j64 + hi;
            int s, m;
            if (is < 4) {
                s = sc[is] & 63;
                m = sc[is + 4] & 63;
            } else {
                s = (sc[is + 4] & 0xF) | ((sc[is - 4] >> 6) << 4);
                m = (sc[is + 4] >> 4) | ((sc[is] >> 6) << 4);
            }
            const int q = (qs[32 * j64 + l] >> (hi ? 4 : 0)) & 0xF;
            v = d * s * q - dm * m;
        } else if (type == QG_Q6_K) {
            const uint8_t *ql = b, *qh = b + 128;
            const int8_t *sc = reinterpret_cast<const int8_t *>(b + 192);
            const float d = __half2float(*reinterpret_cast<const __half *>(b + 208));
            const int hn = e / 128, r = e % 128, kk = r / 32, l = r % 32;
            const int lo = (ql[64 * hn + l + (kk & 1) * 32] >> (kk >= 2 ? 4 : 0)) & 0xF;
            const int h2 = (qh[32 * hn + l] >> (2 * kk)) & 3;
            v = d * sc[8 * hn + l / 16 + 2 * kk] * ((lo | (h2 << 4)) - 32);
        } else {
            v = __half2float(*reinterpret_cast<const __half *>(b)) *
                reinterpret_cast<const int8_t *>(b + 2)[e];
        }
        wd[i] = v;
    }
}

// Reference activation a[b, k] (f32) of the prologue, rounded to bf16 as the kernel does.
__global__ void ref_act(const bf *x, const bf *nw, float eps, int pro, int b, int k, float *a) {
    const int r = blockIdx.x;
    __shared__ float rinv;
    if (threadIdx.x == 0) {
        float ss = 0.f;
        for (int i = 0; i < k; i++) {
            const float v = __bfloat162float(x[(size_t)r * k + i]);
            ss += v * v;
        }
        rinv = rsqrtf(ss / k + eps);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < k; i += blockDim.x) {
        float v;
        if (pro == 0) {
            v = __bfloat162float(x[(size_t)r * k + i]);
        } else if (pro == 1) {
            v = __bfloat162float(__float2bfloat16(__bfloat162float(x[(size_t)r * k + i]) * rinv *
                                                  __bfloat162float(nw[i])));
        } else {
            const float g = __bfloat162float(x[(size_t)r * 2 * k + i]);
            const float u = __bfloat162float(x[(size_t)r * 2 * k + k + i]);
            v = __bfloat162float(__float2bfloat16(
                __bfloat162float(__float2bfloat16(g / (1.f + __expf(-g)))) * u));
        }
        a[(size_t)r * k + i] = v;
    }
}

// y[b, n] = sum_k a[b, k] wd[n, k] (+ residual), f32.
__global__ void ref_gemv(const float *a, const float *wd, const bf *res, int b, int n, int k,
                         float *y) {
    const int row = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= n) return;
    for (int r = 0; r < b; r++) {
        float s = 0.f;
        for (int i = lane; i < k; i += 32) s += a[(size_t)r * k + i] * wd[(size_t)row * k + i];
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        if (lane == 0) y[(size_t)r * n + row] = s + (res ? __bfloat162float(res[(size_t)r * n + row]) : 0.f);
    }
}

typedef void (*qfn)(const bf *, const bf *, float, const uint8_t *, int, int, const uint8_t *,
                    int, int, const uint8_t *, int, int, const bf *, const bf *, bf *, int, int);
template <int B, int PRO>
__global__ void QG_BOUNDS(B) k_q(const bf *x, const bf *nw, float eps, const uint8_t *w0, int t0, int n0,
                    const uint8_t *w1, int t1, int n1, const uint8_t *w2, int t2, int n2,
                    const bf *bias, const bf *res, bf *y, int ld, int k) {
    qgemv_fused<bf, B, PRO>(x, nw, eps, w0, t0, n0, w1, t1, n1, w2, t2, n2, bias, res, y, ld, k);
}
static qfn kern(int b, int pro) {
    static qfn t[2][3] = {{k_q<1, 0>, k_q<1, 1>, k_q<1, 2>}, {k_q<2, 0>, k_q<2, 1>, k_q<2, 2>}};
    return t[b - 1][pro];
}

// A GEMV of up to three segments (a layer's q, k, v), each its own type and rows.
struct Shape {
    const char *name;
    int k, pro;
    bool res;
    int t[3], n[3];
    int per_step; // times in one decode step (layers; 1 for the head)
};

static void launch(const Shape &s, int b, const bf *x, const bf *nw, const uint8_t *const *w,
                   const bf *res, bf *y, cudaStream_t st) {
    const int warps = b == 1 ? QG_WARPS1 : 8;
    int blocks = 0, ld = 0;
    for (int i = 0; i < 3; i++) {
        blocks += (s.n[i] + warps - 1) / warps;
        ld += s.n[i];
    }
    const size_t smem = (size_t)b * s.k + 2 * sizeof(float) * b * (s.k / 32) + warps * QG_STAGE_BYTES;
    qfn f = kern(b, s.pro);
    // as many blocks as run at once (the node's rule), or fewer
    static int sms = 0;
    if (!sms) CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    int occ = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, f, warps * 32, smem));
    if (occ < 1) occ = 1;
    if (blocks > sms * occ) blocks = sms * occ;
    f<<<blocks, warps * 32, smem, st>>>(x, nw, 1e-6f, w[0], s.t[0], s.n[0], w[1], s.t[1], s.n[1],
                                        w[2], s.t[2], s.n[2], nullptr, s.res ? res : nullptr, y,
                                        ld, s.k);
}

int main() {
    cudaDeviceProp p;
    CK(cudaGetDeviceProperties(&p, 0));
    printf("device %s, %d SMs, L2 %d MB\n", p.name, p.multiProcessorCount, p.l2CacheSize >> 20);
    const double copy_gbs = copy_bandwidth_gbs();
    const size_t POOL = (size_t)3 << 29; // 1.5 GiB of weights
    uint8_t *pool;
    CK(cudaMalloc(&pool, POOL));
    fill_bytes<<<4096, 256>>>(pool, POOL, 7);
    bf *x, *nw, *res, *y;
    float *a, *wd, *yr;
    CK(cudaMalloc(&x, 2 * 2 * 16384 * sizeof(bf)));
    CK(cudaMalloc(&nw, 16384 * sizeof(bf)));
    CK(cudaMalloc(&res, 2 * 160000 * sizeof(bf)));
    CK(cudaMalloc(&y, 2 * 160000 * sizeof(bf)));
    CK(cudaMalloc(&a, 2 * 16384 * sizeof(float)));
    CK(cudaMalloc(&yr, 2 * 160000 * sizeof(float)));
    CK(cudaMalloc(&wd, (size_t)160000 * 4096 * sizeof(float)));
    fill_bf<<<64, 256>>>(x, 2 * 2 * 16384, 2, 4.f);
    fill_bf<<<64, 256>>>(nw, 16384, 3, 2.f);
    fill_bf<<<64, 256>>>(res, 2 * 160000, 4, 1.f);
    CK(cudaDeviceSynchronize());
    const int Q4 = QG_Q4_K, Q6 = QG_Q6_K, Q8 = QG_Q8_0;
    // Qwen3-8B: hidden 4096, 32 q heads and 8 kv heads of 128, intermediate 12288, vocab
    // 151936, 36 layers. Q4_K_M keeps v and down in Q6_K in some layers (both variants
    // here), the head in Q6_K.
    Shape shapes[] = {
        {"q4km.qkv", 4096, 1, false, {Q4, Q4, Q6}, {4096, 1024, 1024}, 18},
        {"q4km.qkv4", 4096, 1, false, {Q4, Q4, Q4}, {4096, 1024, 1024}, 18},
        {"q4km.o", 4096, 0, true, {Q4, 0, 0}, {4096, 0, 0}, 36},
        {"q4km.gateup", 4096, 1, false, {Q4, 0, 0}, {24576, 0, 0}, 36},
        {"q4km.down4", 12288, 2, true, {Q4, 0, 0}, {4096, 0, 0}, 18},
        {"q4km.down6", 12288, 2, true, {Q6, 0, 0}, {4096, 0, 0}, 18},
        {"q4km.head", 4096, 1, false, {Q6, 0, 0}, {151936, 0, 0}, 1},
        {"q8.qkv", 4096, 1, false, {Q8, 0, 0}, {6144, 0, 0}, 36},
        {"q8.o", 4096, 0, true, {Q8, 0, 0}, {4096, 0, 0}, 36},
        {"q8.gateup", 4096, 1, false, {Q8, 0, 0}, {24576, 0, 0}, 36},
        {"q8.down", 12288, 2, true, {Q8, 0, 0}, {4096, 0, 0}, 36},
        {"q8.head", 4096, 1, false, {Q8, 0, 0}, {151936, 0, 0}, 1},
    };
    for (int i = 0; i < 2; i++)
        for (int pro = 0; pro < 3; pro++)
            CK(cudaFuncSetAttribute(kern(i + 1, pro), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    200 << 10));
    // QB_ONLY=name: only the shapes whose name contains it; QB_B=1 or 2: only that batch.
    const char *only = getenv("QB_ONLY"), *only_b = getenv("QB_B");
    for (int b = 1; b <= 2; b++) {
        if (only_b && atoi(only_b) != b) continue;
        double sum_us[2] = {0, 0}, sum_bytes[2] = {0, 0};
        for (const Shape &s : shapes) {
            if (only && !strstr(s.name, only)) continue;
            size_t seg_bytes[3], mb = 0;
            for (int i = 0; i < 3; i++) {
                seg_bytes[i] = s.n[i] ? matrix_bytes(s.t[i], s.n[i], s.k) : 0;
                seg_bytes[i] = (seg_bytes[i] + 255) / 256 * 256;
                mb += seg_bytes[i];
            }
            // fix the scales of every copy in the pool as this shape's types read it
            size_t copies = POOL / mb;
            if (copies < 1) copies = 1;
            for (size_t c = 0; c < copies; c++) {
                size_t off = c * mb;
                for (int i = 0; i < 3; i++) {
                    if (!s.n[i]) continue;
                    const size_t nb = (size_t)s.n[i] * (s.k / block_vals(s.t[i]));
                    fix_scales<<<1024, 256>>>(pool + off, nb, s.t[i], 11 + i);
                    off += seg_bytes[i];
                }
            }
            CK(cudaDeviceSynchronize());
            auto ptrs = [&](size_t c, const uint8_t **w) {
                size_t off = c * mb;
                for (int i = 0; i < 3; i++) {
                    w[i] = pool + off;
                    off += seg_bytes[i];
                }
            };
            // check against the reference, segment by segment
            const uint8_t *w[3];
            ptrs(0, w);
            CK(cudaMemset(y, 0, 2 * 160000 * sizeof(bf)));
            launch(s, b, x, nw, w, res, y, 0);
            CK(cudaGetLastError());
            CK(cudaDeviceSynchronize());
            ref_act<<<b, 256>>>(x, nw, 1e-6f, s.pro, b, s.k, a);
            int ld = s.n[0] + s.n[1] + s.n[2], col = 0;
            std::vector<bf> hy((size_t)b * ld);
            CK(cudaMemcpy(hy.data(), y, hy.size() * sizeof(bf), cudaMemcpyDeviceToHost));
            double worst = 0;
            for (int i = 0; i < 3; i++) {
                if (!s.n[i]) continue;
                dequant<<<4096, 256>>>(w[i], s.t[i], s.n[i], s.k, wd);
                ref_gemv<<<(s.n[i] + 7) / 8, 256>>>(a, wd, nullptr, b, s.n[i], s.k, yr);
                std::vector<float> hr((size_t)b * s.n[i]);
                CK(cudaMemcpy(hr.data(), yr, hr.size() * sizeof(float), cudaMemcpyDeviceToHost));
                std::vector<bf> hres((size_t)b * ld);
                CK(cudaMemcpy(hres.data(), res, hres.size() * sizeof(bf), cudaMemcpyDeviceToHost));
                double mx = 0, md = 0;
                for (int r = 0; r < b; r++)
                    for (int j = 0; j < s.n[i]; j++) {
                        double ref = hr[(size_t)r * s.n[i] + j];
                        if (s.res) ref += __bfloat162float(hres[(size_t)r * ld + col + j]);
                        const double got = __bfloat162float(hy[(size_t)r * ld + col + j]);
                        mx = fmax(mx, fabs(ref));
                        const double dd = fabs(got - ref);
                        if (!(dd <= md)) md = dd;
                    }
                const double rel = mx > 0 ? md / mx : md;
                if (!(rel <= worst)) worst = rel;
                col += s.n[i];
            }
            const int L = copies < 8 ? 8 : (int)copies;
            const float us = graph_us(
                [&](cudaStream_t st) {
                    for (int l = 0; l < L; l++) {
                        const uint8_t *wl[3];
                        ptrs(l % copies, wl);
                        launch(s, b, x, nw, wl, res, y, st);
                    }
                },
                L);
            const double gbs = mb / (us * 1e-6) / 1e9;
            printf("b=%d %-12s %7.1f MB %8.2f us %7.1f GB/s (%4.1f %% of copy)  error %.2f %%%s\n",
                   b, s.name, mb / 1e6, us, gbs, 100.0 * gbs / copy_gbs, 100.0 * worst,
                   worst < 0.03 ? "" : "  <-- FAIL");
            const int m = s.name[1] == '4' ? 0 : 1;
            sum_us[m] += us * s.per_step;
            sum_bytes[m] += (double)mb * s.per_step;
        }
        const char *names[2] = {"qwen3-8b Q4_K_M", "qwen3-8b Q8_0"};
        for (int m = 0; m < 2; m++)
            printf("SUM b=%d %-16s GEMVs %8.1f us/step  %7.1f GB/s (%4.1f %% of copy) -> %.0f tok/s "
                   "if nothing else ran\n",
                   b, names[m], sum_us[m], sum_bytes[m] / (sum_us[m] * 1e-6) / 1e9,
                   100.0 * sum_bytes[m] / (sum_us[m] * 1e-6) / 1e9 / copy_gbs, 1e6 / sum_us[m] * b);
    }
    return 0;
}
