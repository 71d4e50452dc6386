// Fused decode GEMV over GGML-quantized weights (included by decode.cu; issue 18):
//   y[r, n] = epilogue(sum_k a[r, k] w[n, k]),  a = prologue(x) as in gemv_fused
// for a decode step's 1 or 2 rows, with w in GGML blocks (Q4_K, Q6_K, Q8_0) read once
// from memory. The block first computes its prologue (none, RMSNorm, SwiGLU; each value
// rounded to T where candle rounds it) and stores the activation in shared memory as
// int8 with one f32 scale and one f32 sum per 32 values (the q8_1 form llama.cpp and
// candle's MMVQ quantize activations to), so the products are 4-way int8 dot products
// (dp4a): about one instruction per weight, where converting each 4-bit weight to
// float would take four and make the kernel compute-bound on an H200.
//
// A launch covers up to three segments of output rows, each its own matrix and GGML
// type (a layer's q, k and v projections, whose types differ in Q4_K_M files), written
// side by side into y's columns; a warp dispatches on the type of each row it takes.
// Weight rows are whole blocks (k_in a multiple of 256 for the K-quants, 32 for Q8_0);
// GGML block starts are only 2-byte aligned for Q6_K and Q8_0 (210 and 34 bytes).

#ifndef QG_PREFETCH
#define QG_PREFETCH 4
#endif
// GGML type ids (ggml.h).
#define QG_Q8_0 8
#define QG_Q4_K 12
#define QG_Q6_K 14

__device__ __forceinline__ float half_bits(uint16_t h) { return __half2float(__ushort_as_half(h)); }

// A 32-bit word from a 2-byte aligned address.
__device__ __forceinline__ int ld_b2(const uint8_t *p) {
    const uint16_t *q = reinterpret_cast<const uint16_t *>(p);
    return (int)((uint32_t)__ldg(q) | ((uint32_t)__ldg(q + 1) << 16));
}

// The activation of the block: B rows of K int8 values (qa), and per 32 values the scale
// (da: amax / 127) and the sum of the unquantized values (sa).
// One lane's raw weights of one step, whatever the type (each type maps its fields onto
// these 8 words).
struct QRaw {
    uint4 a, b;
};

struct QAct {
    const int8_t *qa;
    const float *da;
    const float *sa;
    int k;
};

// Q4_K: 144-byte blocks of 256 values (f16 d, f16 dmin, 12 bytes of 6-bit scales and
// mins for 8 sub-blocks of 32, 128 bytes of 4-bit values). A warp takes 4 blocks per
// step: lane l the 16 bytes qs[16 (l % 8)..] of block 4 step + l / 8, which hold 16
// values of sub-block 2j (low nibbles) and 16 of sub-block 2j + 1 (high nibbles),
// j = (l % 8) / 2; its header (16 bytes, 16-byte aligned) is loaded by every lane of the
// 8 (one transaction).
struct Q4K {
    static constexpr int BYTES = 144, PER_STEP = 4;
    // a: the header; b: the 16 bytes of values.
    __device__ static void load(const uint8_t *row, int step, int nblk, int lane, QRaw &r) {
        const int blk = step * PER_STEP + (lane >> 3);
        if (blk >= nblk) return;
        const uint8_t *p = row + (size_t)blk * BYTES;
        r.a = __ldg(reinterpret_cast<const uint4 *>(p));
        r.b = __ldg(reinterpret_cast<const uint4 *>(p + 16 + 16 * (lane & 7)));
    }
    template <int B>
    __device__ static void dot(const QRaw &r, int step, int nblk, int lane, const QAct &a,
                               float *acc) {
        const int blk = step * PER_STEP + (lane >> 3);
        if (blk >= nblk) return;
        const int p = lane & 7, j = p >> 1, half = p & 1;
        const float d = half_bits(r.a.x & 0xffff), dmin = half_bits(r.a.x >> 16);
        // Byte i of the 12 scale bytes (header bytes 4..15), without indexing a register
        // array at run time (that would put it in local memory).
        auto s = [&](int i) -> int {
            const uint32_t v = i < 4 ? r.a.y : i < 8 ? r.a.z : r.a.w;
            return (int)((v >> (8 * (i & 3))) & 0xff);
        };
        int sc0, m0, sc1, m1;
        const int i0 = 2 * j, i1 = 2 * j + 1;
        if (j < 2) {
            sc0 = s(i0) & 63;
            m0 = s(i0 + 4) & 63;
            sc1 = s(i1) & 63;
            m1 = s(i1 + 4) & 63;
        } else {
            sc0 = (s(i0 + 4) & 0xF) | ((s(i0 - 4) >> 6) << 4);
            m0 = (s(i0 + 4) >> 4) | ((s(i0) >> 6) << 4);
            sc1 = (s(i1 + 4) & 0xF) | ((s(i1 - 4) >> 6) << 4);
            m1 = (s(i1 + 4) >> 4) | ((s(i1) >> 6) << 4);
        }
        const int c0 = blk * 8 + i0, c1 = c0 + 1;
        const int w[4] = {(int)r.b.x, (int)r.b.y, (int)r.b.z, (int)r.b.w};
#pragma unroll
        for (int b = 0; b < B; b++) {
            const int8_t *qb = a.qa + (size_t)b * a.k;
            const int4 a0 = *reinterpret_cast<const int4 *>(qb + c0 * 32 + 16 * half);
            const int4 a1 = *reinterpret_cast<const int4 *>(qb + c1 * 32 + 16 * half);
            const int av0[4] = {a0.x, a0.y, a0.z, a0.w}, av1[4] = {a1.x, a1.y, a1.z, a1.w};
            int s0 = 0, s1 = 0;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                s0 = __dp4a(w[i] & 0x0F0F0F0F, av0[i], s0);
                s1 = __dp4a((w[i] >> 4) & 0x0F0F0F0F, av1[i], s1);
            }
            const int kc = b * (a.k / 32);
            float v = d * (sc0 * a.da[kc + c0] * s0 + sc1 * a.da[kc + c1] * s1);
            // The mins apply to every value of the sub-block: the lane of the first 16
            // values takes them for all 32.
            if (half == 0) v -= dmin * (m0 * a.sa[kc + c0] + m1 * a.sa[kc + c1]);
            acc[b] += v;
        }
    }
};

// Q6_K: 210-byte blocks of 256 values (ql[128]: low 4 bits, qh[64]: high 2 bits,
// scales[16]: int8 per 16 values, f16 d), value = d * scale * (q - 32). A warp takes 2
// blocks per step: lane l block 2 step + l / 16, half h = (l / 8) % 2 (values 128 h..),
// and within it positions 4 t..4 t + 3 (t = l % 8) of each of the half's four runs of 32.
struct Q6K {
    static constexpr int BYTES = 210, PER_STEP = 2;
    // a: ql of the first and second run, qh, the four scales; b.x: d (f32 bits).
    __device__ static void load(const uint8_t *row, int step, int nblk, int lane, QRaw &r) {
        const int blk = step * PER_STEP + (lane >> 4);
        if (blk >= nblk) return;
        const uint8_t *p = row + (size_t)blk * BYTES;
        const int h = (lane >> 3) & 1, t = lane & 7;
        r.a.x = ld_b2(p + 64 * h + 4 * t);
        r.a.y = ld_b2(p + 64 * h + 32 + 4 * t);
        r.a.z = ld_b2(p + 128 + 32 * h + 4 * t);
        // scales[8 h + t / 4 + {0, 2, 4, 6}]: the four 2-byte pairs at 192 + 8 h, byte t / 4
        // of each, packed into one word.
        const uint16_t *sp = reinterpret_cast<const uint16_t *>(p + 192 + 8 * h);
        const int sh = 8 * (t >> 2);
        r.a.w = (uint32_t)(((__ldg(sp) >> sh) & 0xff) | (((__ldg(sp + 1) >> sh) & 0xff) << 8) |
                     (((__ldg(sp + 2) >> sh) & 0xff) << 16) | (((__ldg(sp + 3) >> sh) & 0xff) << 24));
        r.b.x = __float_as_uint(half_bits(__ldg(reinterpret_cast<const uint16_t *>(p + 208))));
    }
    template <int B>
    __device__ static void dot(const QRaw &r, int step, int nblk, int lane, const QAct &a,
                               float *acc) {
        const int blk = step * PER_STEP + (lane >> 4);
        if (blk >= nblk) return;
        const int h = (lane >> 3) & 1, t = lane & 7;
        const int m4 = 0x0F0F0F0F, m2 = 0x03030303;
        const int qla = (int)r.a.x, qlb = (int)r.a.y, qh = (int)r.a.z, scs = (int)r.a.w;
        int q[4];
        q[0] = (qla & m4) | ((qh & m2) << 4);
        q[1] = (qlb & m4) | (((qh >> 2) & m2) << 4);
        q[2] = ((qla >> 4) & m4) | (((qh >> 4) & m2) << 4);
        q[3] = ((qlb >> 4) & m4) | (((qh >> 6) & m2) << 4);
#pragma unroll
        for (int i = 0; i < 4; i++) q[i] = __vsubss4(q[i], 0x20202020);
        const int c = blk * 8 + 4 * h;
#pragma unroll
        for (int b = 0; b < B; b++) {
            const int8_t *qb = a.qa + (size_t)b * a.k;
            const int kc = b * (a.k / 32);
            float v = 0.f;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int av = *reinterpret_cast<const int *>(qb + (c + i) * 32 + 4 * t);
                const int sc = (int)(int8_t)((scs >> (8 * i)) & 0xff);
                v += (float)(sc * __dp4a(q[i], av, 0)) * a.da[kc + c + i];
            }
            acc[b] += __uint_as_float(r.b.x) * v;
        }
    }
};

// Q8_0: 34-byte blocks of 32 values (f16 d, int8 qs[32]). A warp takes 8 blocks per
// step: lane l block 8 step + l / 4, values 8 (l % 4)..+8.
struct Q80 {
    static constexpr int BYTES = 34, PER_STEP = 8;
    // a.x, a.y: the 8 values; a.z: d (f32 bits).
    __device__ static void load(const uint8_t *row, int step, int nblk, int lane, QRaw &r) {
        const int blk = step * PER_STEP + (lane >> 2);
        if (blk >= nblk) return;
        const uint8_t *p = row + (size_t)blk * BYTES;
        r.a.z = __float_as_uint(half_bits(__ldg(reinterpret_cast<const uint16_t *>(p))));
        r.a.x = ld_b2(p + 2 + 8 * (lane & 3));
        r.a.y = ld_b2(p + 6 + 8 * (lane & 3));
    }
    template <int B>
    __device__ static void dot(const QRaw &r, int step, int nblk, int lane, const QAct &a,
                               float *acc) {
        const int blk = step * PER_STEP + (lane >> 2);
        if (blk >= nblk) return;
#pragma unroll
        for (int b = 0; b < B; b++) {
            const int8_t *qb = a.qa + (size_t)b * a.k;
            const int2 av = *reinterpret_cast<const int2 *>(qb + blk * 32 + 8 * (lane & 3));
            const int s = __dp4a((int)r.a.y, av.y, __dp4a((int)r.a.x, av.x, 0));
            acc[b] += __uint_as_float(r.a.z) * a.da[b * (a.k / 32) + blk] * (float)s;
        }
    }
};

// The block's prologue into shared memory as QAct. Each thread takes 4 consecutive
// values at a time (8 threads per 32-value piece), so a piece's max and sum take 3
// shuffle steps, not 5 per value as with one value per lane.
template <typename T, int B, int PRO>
__device__ void qgemv_prologue(const T *__restrict__ x, const T *__restrict__ nw, float eps,
                               int k_in, int8_t *qa, float *da, float *sa) {
    __shared__ float part[32][B];
    __shared__ float rinv[B];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    if (PRO == 1) {
        float ss[B];
#pragma unroll
        for (int b = 0; b < B; b++) {
            ss[b] = 0.f;
            for (int i = threadIdx.x; i < k_in; i += blockDim.x) {
                const float v = to_f(x[(size_t)b * k_in + i]);
                ss[b] += v * v;
            }
            float s = ss[b];
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
            if (lane == 0) part[warp][b] = s;
        }
        __syncthreads();
        if (threadIdx.x < B) {
            float s = 0.f;
            for (int i = 0; i < nwarps; i++) s += part[i][threadIdx.x];
            rinv[threadIdx.x] = rsqrtf(s / k_in + eps);
        }
        __syncthreads();
    }
    const int groups = k_in / 4, chunks = k_in / 32;
    // k_in is a multiple of 32, so every warp's 32 groups are 4 whole pieces.
    for (int g0 = warp * 32; g0 < groups; g0 += blockDim.x) {
        const int g = g0 + lane;
#pragma unroll
        for (int b = 0; b < B; b++) {
            float v[4];
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int i = 4 * g + e;
                if (PRO == 0) {
                    v[e] = to_f(x[(size_t)b * k_in + i]);
                } else if (PRO == 1) {
                    v[e] = to_f(rnd<T>(to_f(x[(size_t)b * k_in + i]) * rinv[b] * to_f(nw[i])));
                } else {
                    const float gt = to_f(x[(size_t)b * 2 * k_in + i]);
                    const float u = to_f(x[(size_t)b * 2 * k_in + k_in + i]);
                    v[e] = to_f(rnd<T>(to_f(rnd<T>(gt / (1.f + __expf(-gt)))) * u));
                }
            }
            float amax = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
            float sum = (v[0] + v[1]) + (v[2] + v[3]);
#pragma unroll
            for (int off = 1; off < 8; off <<= 1) {
                amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
                sum += __shfl_xor_sync(0xffffffffu, sum, off);
            }
            const float d = amax / 127.f;
            uint32_t packed = 0;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int q = amax == 0.f ? 0 : (int)roundf(v[e] / d);
                packed |= (uint32_t)(q & 0xff) << (8 * e);
            }
            *reinterpret_cast<uint32_t *>(qa + (size_t)b * k_in + 4 * g) = packed;
            if ((lane & 7) == 0) {
                da[b * chunks + g / 8] = d;
                sa[b * chunks + g / 8] = sum;
            }
        }
    }
    __syncthreads();
}


// One output row: the dot product of weight row `row` of w (type Q) with the block's
// activation, QG_PREFETCH steps loaded at a time, then the epilogue into column n of y.
template <typename T, int B, typename Q>
__device__ void qgemv_row(const uint8_t *__restrict__ w, int row, const QAct &a,
                          const T *__restrict__ bias, const T *__restrict__ res,
                          T *__restrict__ y, int n, int ld_y) {
    const int lane = threadIdx.x & 31;
    const int nblk = a.k / (Q::BYTES == Q80::BYTES ? 32 : 256);
    const int steps = (nblk + Q::PER_STEP - 1) / Q::PER_STEP;
    const uint8_t *wr = w + (size_t)row * nblk * Q::BYTES;
    QRaw raw[QG_PREFETCH];
    float acc[B];
#pragma unroll
    for (int b = 0; b < B; b++) acc[b] = 0.f;
    for (int s0 = 0; s0 < steps; s0 += QG_PREFETCH) {
#pragma unroll
        for (int u = 0; u < QG_PREFETCH; u++)
            if (s0 + u < steps) Q::load(wr, s0 + u, nblk, lane, raw[u]);
#pragma unroll
        for (int u = 0; u < QG_PREFETCH; u++)
            if (s0 + u < steps) Q::template dot<B>(raw[u], s0 + u, nblk, lane, a, acc);
    }
    gemv_finish<T, B>(acc, lane, bias, res, y, n, ld_y);
}

__device__ __forceinline__ int qg_row_bytes(int t, int k) {
    return t == QG_Q4_K ? k / 256 * Q4K::BYTES : t == QG_Q6_K ? k / 256 * Q6K::BYTES : k / 32 * Q80::BYTES;
}

// Segments s = 0, 1, 2: weights ws (GGML type ts, ns rows; ns = 0: absent), output
// columns from the sum of the earlier segments' rows; y, res: [B, ld_y]; bias: [ld_y].
// The grid is as many blocks as the GPU runs at once (or fewer): each block computes the
// prologue once and its warps then take output rows gridDim.x * warps apart. Before the
// prologue each warp asks L2 for its first row, so the weights stream while it runs.
// (Measured on an H200, bench/gpu/kernels/qgemv_bench.cu: one block per 8 rows, each
// redoing the prologue, was 2x slower; a warp pipeline of loads running ahead across
// rows and segments, 1.2x slower: its per-step type dispatch costs more than it hides.)
template <typename T, int B, int PRO>
__device__ void qgemv_fused(const T *x, const T *nw, float eps, const uint8_t *w0, int t0,
                            int n0, const uint8_t *w1, int t1, int n1, const uint8_t *w2,
                            int t2, int n2, const T *bias, const T *res, T *y, int ld_y,
                            int k_in) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int nwarps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int total = n0 + n1 + n2;
    const int first = blockIdx.x * nwarps + warp, stride = gridDim.x * nwarps;
    // (selected, not indexed: a run-time index into an array would put it in local memory)
    auto locate = [&](int n, const uint8_t *&w, int &t, int &row) {
        if (n < n0) {
            w = w0, t = t0, row = n;
        } else if (n < n0 + n1) {
            w = w1, t = t1, row = n - n0;
        } else {
            w = w2, t = t2, row = n - n0 - n1;
        }
    };
    if (first < total) {
        const uint8_t *w;
        int t, row;
        locate(first, w, t, row);
        const int rb = qg_row_bytes(t, k_in);
        const uint8_t *p = w + (size_t)row * rb;
        for (int off = lane * 128; off < rb; off += 32 * 128)
            asm volatile("prefetch.global.L2 [%0];" ::"l"(p + off));
    }
    int8_t *qa = reinterpret_cast<int8_t *>(smem_raw);
    float *da = reinterpret_cast<float *>(smem_raw + (size_t)B * k_in);
    float *sa = da + B * (k_in / 32);
    qgemv_prologue<T, B, PRO>(x, nw, eps, k_in, qa, da, sa);
    const QAct a{qa, da, sa, k_in};
    for (int n = first; n < total; n += stride) {
        const uint8_t *w;
        int t, row;
        locate(n, w, t, row);
        switch (t) {
        case QG_Q4_K: qgemv_row<T, B, Q4K>(w, row, a, bias, res, y, n, ld_y); break;
        case QG_Q6_K: qgemv_row<T, B, Q6K>(w, row, a, bias, res, y, n, ld_y); break;
        default: qgemv_row<T, B, Q80>(w, row, a, bias, res, y, n, ld_y); break;
        }
    }
}

#define DS_QGEMVF(T, SUFFIX, B, PRO)                                                           \
    extern "C" __global__ void qgemvf_##SUFFIX##_##B##_##PRO(                                   \
        const T *x, const T *nw, float eps, const uint8_t *w0, int t0, int n0,                 \
        const uint8_t *w1, int t1, int n1, const uint8_t *w2, int t2, int n2, const T *bias,   \
        const T *res, T *y, int ld_y, int k_in) {                                              \
        qgemv_fused<T, B, PRO>(x, nw, eps, w0, t0, n0, w1, t1, n1, w2, t2, n2, bias, res, y,    \
                               ld_y, k_in);                                                    \
    }
#define DS_QGEMVF_ALL(T, SUFFIX)                                                               \
    DS_QGEMVF(T, SUFFIX, 1, 0) DS_QGEMVF(T, SUFFIX, 1, 1) DS_QGEMVF(T, SUFFIX, 1, 2)            \
    DS_QGEMVF(T, SUFFIX, 2, 0) DS_QGEMVF(T, SUFFIX, 2, 1) DS_QGEMVF(T, SUFFIX, 2, 2)
DS_QGEMVF_ALL(float, f32)
DS_QGEMVF_ALL(__half, f16)
DS_QGEMVF_ALL(__nv_bfloat16, bf16)
