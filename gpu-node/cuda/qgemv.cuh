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
// these 12 words).
struct QRaw {
    uint4 a, b, c;
};

struct QAct {
    const int8_t *qa;
    const float *da;
    const float *sa;
    int k;
    int swz; // qa_off's mask: 0x30 where k is a multiple of 64, else 0 (no swizzle)
};

// The shared-memory offset of activation byte `off` of a row: 16-byte chunk c of every
// 128 bytes is stored at c ^ ((off / 128) % 4), so the lanes of a quarter-warp reading 16
// bytes of sub-blocks 256 bytes apart (Q4_K), and the lanes of Q6_K's 4-byte reads 128
// bytes apart, hit distinct banks (unswizzled: 4-way conflicts). Measured on an H200
// with Q6_K's cheaper q - 32: Q6_K head 283 -> 251 us (b = 1), 422 -> 335 us (b = 2).
__device__ __forceinline__ int qa_off(int swz, int off) {
    return off ^ ((off >> 3) & swz);
}

// Q4_K: 144-byte blocks of 256 values (f16 d, f16 dmin, 12 bytes of 6-bit scales and
// mins for 8 sub-blocks of 32, 128 bytes of 4-bit values). A warp takes 8 blocks per
// step: lane l the 32 bytes qs[32 j..] of block 8 step + l / 4, j = l % 4, which hold all
// 64 values of sub-blocks 2 j (low nibbles) and 2 j + 1 (high nibbles), so a lane decodes
// its scales and applies its mins once per 64 values (16 values per lane before: 1.2x
// slower on gateup). Its header (16 bytes, 16-byte aligned) is loaded by the block's 4
// lanes. One step loaded at a time (a k = 4096 row is 2 steps): two would need ~90
// registers, fewer blocks per SM (measured slower).
struct Q4K {
    static constexpr int BYTES = 144, PER_STEP = 8, PF = 1;
    // a: the header; b, c: the 32 bytes of values.
    __device__ static void load(const uint8_t *row, int step, int nblk, int lane, QRaw &r) {
        const int blk = step * PER_STEP + (lane >> 2);
        if (blk >= nblk) return;
        const uint8_t *p = row + (size_t)blk * BYTES;
        r.a = __ldg(reinterpret_cast<const uint4 *>(p));
        r.b = __ldg(reinterpret_cast<const uint4 *>(p + 16 + 32 * (lane & 3)));
        r.c = __ldg(reinterpret_cast<const uint4 *>(p + 32 + 32 * (lane & 3)));
    }
    template <int B>
    __device__ static void dot(const QRaw &r, int step, int nblk, int lane, const QAct &a,
                               float *acc) {
        const int blk = step * PER_STEP + (lane >> 2);
        if (blk >= nblk) return;
        const int j = lane & 3;
        const float d = half_bits(r.a.x & 0xffff), dmin = half_bits(r.a.x >> 16);
        // scales and mins of sub-blocks 2 j, 2 j + 1 as byte pairs (llama.cpp's form):
        // scale bytes 2 j, 2 j + 1 of each 4-byte word.
        const int sh = 16 * (j & 1);
        const uint32_t y = r.a.y >> sh, z = r.a.z >> sh, w = r.a.w >> sh;
        const uint32_t sc2 = j < 2 ? y & 0x3f3f : (w & 0x0f0f) | ((y & 0xc0c0) >> 2);
        const uint32_t m2 = j < 2 ? z & 0x3f3f : ((w >> 4) & 0x0f0f) | ((z & 0xc0c0) >> 2);
        const float fs0 = d * (float)(sc2 & 0xff), fs1 = d * (float)(sc2 >> 8);
        const float fm0 = dmin * (float)(m2 & 0xff), fm1 = dmin * (float)(m2 >> 8);
        const int c0 = blk * 8 + 2 * j;
        const int m4 = 0x0F0F0F0F;
        const int lo0[4] = {(int)r.b.x & m4, (int)r.b.y & m4, (int)r.b.z & m4, (int)r.b.w & m4};
        const int lo1[4] = {(int)r.c.x & m4, (int)r.c.y & m4, (int)r.c.z & m4, (int)r.c.w & m4};
        const int hi0[4] = {(int)(r.b.x >> 4) & m4, (int)(r.b.y >> 4) & m4, (int)(r.b.z >> 4) & m4,
                            (int)(r.b.w >> 4) & m4};
        const int hi1[4] = {(int)(r.c.x >> 4) & m4, (int)(r.c.y >> 4) & m4, (int)(r.c.z >> 4) & m4,
                            (int)(r.c.w >> 4) & m4};
#pragma unroll
        for (int b = 0; b < B; b++) {
            const int8_t *qb = a.qa + (size_t)b * a.k;
            const int4 a0 = *reinterpret_cast<const int4 *>(qb + qa_off(a.swz, c0 * 32));
            const int4 a1 = *reinterpret_cast<const int4 *>(qb + qa_off(a.swz, c0 * 32 + 16));
            const int4 a2 = *reinterpret_cast<const int4 *>(qb + qa_off(a.swz, c0 * 32 + 32));
            const int4 a3 = *reinterpret_cast<const int4 *>(qb + qa_off(a.swz, c0 * 32 + 48));
            int s0 = __dp4a(lo0[0], a0.x, 0), s1 = __dp4a(hi0[0], a2.x, 0);
            s0 = __dp4a(lo0[1], a0.y, s0);
            s1 = __dp4a(hi0[1], a2.y, s1);
            s0 = __dp4a(lo0[2], a0.z, s0);
            s1 = __dp4a(hi0[2], a2.z, s1);
            s0 = __dp4a(lo0[3], a0.w, s0);
            s1 = __dp4a(hi0[3], a2.w, s1);
            s0 = __dp4a(lo1[0], a1.x, s0);
            s1 = __dp4a(hi1[0], a3.x, s1);
            s0 = __dp4a(lo1[1], a1.y, s0);
            s1 = __dp4a(hi1[1], a3.y, s1);
            s0 = __dp4a(lo1[2], a1.z, s0);
            s1 = __dp4a(hi1[2], a3.z, s1);
            s0 = __dp4a(lo1[3], a1.w, s0);
            s1 = __dp4a(hi1[3], a3.w, s1);
            const int kc = b * (a.k / 32);
            const float2 da = *reinterpret_cast<const float2 *>(a.da + kc + c0);
            const float2 sa = *reinterpret_cast<const float2 *>(a.sa + kc + c0);
            acc[b] += fs0 * da.x * (float)s0 + fs1 * da.y * (float)s1 - fm0 * sa.x - fm1 * sa.y;
        }
    }
};

// Q6_K: 210-byte blocks of 256 values (ql[128]: low 4 bits, qh[64]: high 2 bits,
// scales[16]: int8 per 16 values, f16 d), value = d * scale * (q - 32). A warp takes 2
// blocks per step: lane l block 2 step + l / 16, half h = (l / 8) % 2 (values 128 h..),
// and within it positions 4 t..4 t + 3 (t = l % 8) of each of the half's four runs of 32.
struct Q6K {
    static constexpr int BYTES = 210, PER_STEP = 2, PF = QG_PREFETCH;
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
        const uint32_t sel = (t >> 2) | ((4 + (t >> 2)) << 4);
        r.a.w = __byte_perm(__byte_perm(__ldg(sp), __ldg(sp + 1), sel),
                            __byte_perm(__ldg(sp + 2), __ldg(sp + 3), sel), 0x5410);
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
        for (int i = 0; i < 4; i++)
            q[i] = (q[i] + 0x60606060) ^ 0x80808080; // bytes of 0..63: q - 32, no carries
        const int c = blk * 8 + 4 * h;
#pragma unroll
        for (int b = 0; b < B; b++) {
            const int8_t *qb = a.qa + (size_t)b * a.k;
            const int kc = b * (a.k / 32);
            float v = 0.f;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int av = *reinterpret_cast<const int *>(qb + qa_off(a.swz, (c + i) * 32 + 4 * t));
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
    static constexpr int BYTES = 34, PER_STEP = 8, PF = QG_PREFETCH;
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
            const int2 av = *reinterpret_cast<const int2 *>(qb + qa_off(a.swz, blk * 32 + 8 * (lane & 3)));
            const int s = __dp4a((int)r.a.y, av.y, __dp4a((int)r.a.x, av.x, 0));
            acc[b] += __uint_as_float(r.a.z) * a.da[b * (a.k / 32) + blk] * (float)s;
        }
    }
};

// v[0..3] rounded to T (as candle rounds them), two at a time where T is 16 bits (one
// packed conversion instruction per pair).
__device__ __forceinline__ void qg_rnd4(float *, const float *) {}
__device__ __forceinline__ void qg_rnd4(float *v, const __half *) {
#pragma unroll
    for (int e = 0; e < 4; e += 2) {
        const float2 f = __half22float2(__floats2half2_rn(v[e], v[e + 1]));
        v[e] = f.x, v[e + 1] = f.y;
    }
}
__device__ __forceinline__ void qg_rnd4(float *v, const __nv_bfloat16 *) {
#pragma unroll
    for (int e = 0; e < 4; e += 2) {
        const __nv_bfloat162 h = __floats2bfloat162_rn(v[e], v[e + 1]);
        const uint32_t u = *reinterpret_cast<const uint32_t *>(&h);
        v[e] = __uint_as_float(u << 16), v[e + 1] = __uint_as_float(u & 0xffff0000u);
    }
}
// Four consecutive values p[0..3] as f32: one 8- or 16-byte load where `vec` (p aligned).
__device__ __forceinline__ void qg_ld4(const float *p, bool vec, float *v) {
    if (vec) {
        const float4 r = *reinterpret_cast<const float4 *>(p);
        v[0] = r.x, v[1] = r.y, v[2] = r.z, v[3] = r.w;
    } else {
#pragma unroll
        for (int e = 0; e < 4; e++) v[e] = p[e];
    }
}
__device__ __forceinline__ void qg_ld4(const __half *p, bool vec, float *v) {
    if (vec) {
        const uint2 r = *reinterpret_cast<const uint2 *>(p);
        v[0] = __half2float(__ushort_as_half((unsigned short)(r.x & 0xffff)));
        v[1] = __half2float(__ushort_as_half((unsigned short)(r.x >> 16)));
        v[2] = __half2float(__ushort_as_half((unsigned short)(r.y & 0xffff)));
        v[3] = __half2float(__ushort_as_half((unsigned short)(r.y >> 16)));
    } else {
#pragma unroll
        for (int e = 0; e < 4; e++) v[e] = __half2float(p[e]);
    }
}
__device__ __forceinline__ void qg_ld4(const __nv_bfloat16 *p, bool vec, float *v) {
    if (vec) {
        const uint2 r = *reinterpret_cast<const uint2 *>(p);
        v[0] = __uint_as_float(r.x << 16), v[1] = __uint_as_float(r.x & 0xffff0000u);
        v[2] = __uint_as_float(r.y << 16), v[3] = __uint_as_float(r.y & 0xffff0000u);
    } else {
#pragma unroll
        for (int e = 0; e < 4; e++) v[e] = __bfloat162float(p[e]);
    }
}

// The block's prologue into shared memory as QAct. Each thread takes 4 consecutive
// values at a time (8 threads per 32-value piece), so a piece's max and sum take 3
// shuffle steps, not 5 per value as with one value per lane. Every block of the grid
// computes it (4 per SM), so its instructions count: where x (and the norm weights) are
// aligned to 4 values the loads are 4 values wide; a thread loads two groups before
// computing either (the loads of both in flight at once); roundings to T are packed
// conversions, two values each; the 8-bit values are v * (127 / amax) rounded by one FMA
// (llama.cpp's form, without a division or conversion per value); SiLU divides with
// __fdividef. Measured on an H200: Qwen3-8B Q4_K_M 3,810 -> 3,047 us per step (b = 1),
// 5,305 -> 4,020 (b = 2) from the prologue alone.
template <typename T, int B, int PRO>
__device__ void qgemv_prologue(const T *__restrict__ x, const T *__restrict__ nw, float eps,
                               int k_in, int swz, int8_t *qa, float *da, float *sa) {
    __shared__ float part[32][B];
    __shared__ float rinv[B];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    const uintptr_t al = 4 * sizeof(T) - 1;
    const bool vec = (((uintptr_t)x & al) | (PRO == 1 ? (uintptr_t)nw & al : 0)) == 0;
    const int groups = k_in / 4, chunks = k_in / 32;
    if (PRO == 1) {
#pragma unroll
        for (int b = 0; b < B; b++) {
            float ss = 0.f;
#pragma unroll 4
            for (int g = threadIdx.x; g < groups; g += blockDim.x) {
                float v[4];
                qg_ld4(x + (size_t)b * k_in + 4 * g, vec, v);
                ss += (v[0] * v[0] + v[1] * v[1]) + (v[2] * v[2] + v[3] * v[3]);
            }
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
            if (lane == 0) part[warp][b] = ss;
        }
        __syncthreads();
        if (threadIdx.x < B) {
            float s = 0.f;
            for (int i = 0; i < nwarps; i++) s += part[i][threadIdx.x];
            rinv[threadIdx.x] = rsqrtf(s / k_in + eps);
        }
        __syncthreads();
    }
    float rv[B];
#pragma unroll
    for (int b = 0; b < B; b++) rv[b] = PRO == 1 ? rinv[b] : 0.f;
    // k_in is a multiple of 32, so every warp's 32 groups are 4 whole pieces.
    for (int g0 = warp * 32; g0 < groups; g0 += 2 * blockDim.x) {
        // the second group of the pair may be past the end: computed on group 0, not stored
        const bool has1 = g0 + (int)blockDim.x < groups;
        float v[2][B][4];
#pragma unroll
        for (int u = 0; u < 2; u++) {
            const int g = u == 0 || has1 ? g0 + u * blockDim.x + lane : lane;
#pragma unroll
            for (int b = 0; b < B; b++) {
                if (PRO == 0) {
                    qg_ld4(x + (size_t)b * k_in + 4 * g, vec, v[u][b]);
                } else if (PRO == 1) {
                    float xv[4], wv[4];
                    qg_ld4(x + (size_t)b * k_in + 4 * g, vec, xv);
                    qg_ld4(nw + 4 * g, vec, wv);
#pragma unroll
                    for (int e = 0; e < 4; e++) v[u][b][e] = xv[e] * rv[b] * wv[e];
                    qg_rnd4(v[u][b], x);
                } else {
                    float gv[4], uv[4];
                    qg_ld4(x + (size_t)b * 2 * k_in + 4 * g, vec, gv);
                    qg_ld4(x + (size_t)b * 2 * k_in + k_in + 4 * g, vec, uv);
#pragma unroll
                    for (int e = 0; e < 4; e++) gv[e] = __fdividef(gv[e], 1.f + __expf(-gv[e]));
                    qg_rnd4(gv, x);
#pragma unroll
                    for (int e = 0; e < 4; e++) v[u][b][e] = gv[e] * uv[e];
                    qg_rnd4(v[u][b], x);
                }
            }
        }
#pragma unroll
        for (int u = 0; u < 2; u++) {
            const int g = g0 + u * blockDim.x + lane;
#pragma unroll
            for (int b = 0; b < B; b++) {
                const float *vv = v[u][b];
                float amax = fmaxf(fmaxf(fabsf(vv[0]), fabsf(vv[1])), fmaxf(fabsf(vv[2]), fabsf(vv[3])));
                float sum = (vv[0] + vv[1]) + (vv[2] + vv[3]);
#pragma unroll
                for (int off = 1; off < 8; off <<= 1) {
                    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
                    sum += __shfl_xor_sync(0xffffffffu, sum, off);
                }
                const float id = amax > 0.f ? __fdividef(127.f, amax) : 0.f;
                // v * id + 1.5 * 2^23: the rounded integer in the low mantissa bits (one FMA,
                // no conversion instruction); its low bytes packed.
                uint32_t qv[4];
#pragma unroll
                for (int e = 0; e < 4; e++) qv[e] = __float_as_uint(fmaf(vv[e], id, 12582912.f));
                const uint32_t packed = __byte_perm(__byte_perm(qv[0], qv[1], 0x0040),
                                                    __byte_perm(qv[2], qv[3], 0x0040), 0x5410);
                if (u == 0 || has1) {
                    *reinterpret_cast<uint32_t *>(qa + (size_t)b * k_in + qa_off(swz, 4 * g)) = packed;
                    if ((lane & 7) == 0) {
                        da[b * chunks + g / 8] = amax * (1.f / 127.f);
                        sa[b * chunks + g / 8] = sum;
                    }
                }
            }
        }
    }
    __syncthreads();
}


// One output row: the dot product of weight row `row` of w (type Q) with the block's
// activation, Q::PF steps loaded at a time, then the epilogue into column n of y.
template <typename T, int B, typename Q>
__device__ void qgemv_row(const uint8_t *__restrict__ w, int row, const QAct &a,
                          const T *__restrict__ bias, const T *__restrict__ res,
                          T *__restrict__ y, int n, int ld_y) {
    const int lane = threadIdx.x & 31;
    const int nblk = a.k / (Q::BYTES == Q80::BYTES ? 32 : 256);
    const int steps = (nblk + Q::PER_STEP - 1) / Q::PER_STEP;
    const uint8_t *wr = w + (size_t)row * nblk * Q::BYTES;
    QRaw raw[Q::PF];
    float acc[B];
#pragma unroll
    for (int b = 0; b < B; b++) acc[b] = 0.f;
    for (int s0 = 0; s0 < steps; s0 += Q::PF) {
#pragma unroll
        for (int u = 0; u < Q::PF; u++)
            if (s0 + u < steps) Q::load(wr, s0 + u, nblk, lane, raw[u]);
#pragma unroll
        for (int u = 0; u < Q::PF; u++)
            if (s0 + u < steps) Q::template dot<B>(raw[u], s0 + u, nblk, lane, a, acc);
    }
    gemv_finish<T, B>(acc, lane, bias, res, y, n, ld_y);
}

// Q8_0 rows staged through shared memory. A Q8_0 block (34 bytes) starts only 2-byte
// aligned, so loading it straight into registers takes five 2-byte loads per 10 bytes
// (Q80 above): load instructions, not bytes, then limit the kernel (Qwen3-8B's Q8_0
// head at 64 % of copy bandwidth). Where a row starts 16-byte aligned (k_in a multiple
// of 256, the weight 16-byte aligned), a warp instead copies 32 blocks (1,088 bytes, 68
// 16-byte pieces) at a time into its own shared memory with at most three 16-byte
// asynchronous copies per lane (cp.async: no registers held while they fly), up to
// QG_Q8S_STAGES steps in flight, and lane l takes block l from there: nine aligned
// 4-byte words around it, shifted by 16 bits where the block starts at 0 mod 4 (even l:
// its values start at 2 mod 4) and by 32 where it starts at 2 mod 4 (odd l: the scale is
// the high half of the first word).
#ifndef QG_Q8S
#define QG_Q8S 1
#endif
#ifndef QG_Q8S_STAGES
#define QG_Q8S_STAGES 2
#endif
#define QG_STEP_BYTES 1088 // Q8_0: 32 blocks
#define QG_STEP6_BYTES 1680 // Q6_K: 8 blocks (qgemv_row_q6s)
#define QG_STAGE_BYTES (QG_STEP6_BYTES * QG_Q8S_STAGES) // per warp: stages of the larger step

__device__ __forceinline__ void qg_cp16(void *smem, const void *g) {
    const uint32_t sa = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(sa), "l"(g) : "memory");
}
__device__ __forceinline__ void qg_cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void qg_cp_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// Step s of a staged row: its CH 16-byte pieces from wr + s * CH (at most U per lane,
// none past the row's `pieces`) copied asynchronously into stage s % QG_Q8S_STAGES of the
// warp's buffer; the group is committed even when s is past the last step, so the count
// of groups in flight stays in step with the loop (qgemv_row_q8s, qgemv_row_q6s).
template <int CH, int U>
__device__ __forceinline__ void qg_stage_fetch(uint8_t *buf, const uint4 *wr, int s, int steps,
                                               int pieces, int lane) {
    if (s < steps) {
        uint4 *sb = reinterpret_cast<uint4 *>(buf + (s % QG_Q8S_STAGES) * QG_STEP6_BYTES);
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int c = lane + 32 * u;
            if (c < CH && s * CH + c < pieces) qg_cp16(sb + c, wr + s * CH + c);
        }
    }
    qg_cp_commit();
}

template <typename T, int B>
__device__ void qgemv_row_q8s(const uint8_t *__restrict__ w, int row, const QAct &a,
                              const T *__restrict__ bias, const T *__restrict__ res,
                              T *__restrict__ y, int n, int ld_y, uint8_t *buf) {
    constexpr int CH = QG_STEP_BYTES / 16, S = QG_Q8S_STAGES; // 68 pieces per step
    const int lane = threadIdx.x & 31;
    const int nblk = a.k / 32, steps = (nblk + 31) / 32, pieces = nblk * 34 / 16;
    const uint4 *wr = reinterpret_cast<const uint4 *>(w + (size_t)row * nblk * 34);
    float acc[B];
#pragma unroll
    for (int b = 0; b < B; b++) acc[b] = 0.f;
    auto fetch = [&](int s) { qg_stage_fetch<CH, 3>(buf, wr, s, steps, pieces, lane); };
#pragma unroll
    for (int s = 0; s < S - 1; s++) fetch(s);
    const int off = 34 * lane;
    const int sh = (off & 3) ? 32 : 16;
    for (int s = 0; s < steps; s++) {
        fetch(s + S - 1);
        qg_cp_wait<S - 1>(); // this lane's copies of step s have landed
        __syncwarp();        // and every other lane's
        const uint32_t *wd =
            reinterpret_cast<const uint32_t *>(buf + (s % S) * QG_STEP6_BYTES + (off & ~3));
        const int blk = s * 32 + lane;
        if (blk < nblk) {
            uint32_t prev = wd[0];
            const float d = half_bits((uint16_t)(prev >> (sh - 16)));
            int q[8];
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const uint32_t next = wd[j + 1];
                q[j] = (int)__funnelshift_rc(prev, next, sh);
                prev = next;
            }
#pragma unroll
            for (int b = 0; b < B; b++) {
                const int8_t *qb = a.qa + (size_t)b * a.k;
                const int4 a0 = *reinterpret_cast<const int4 *>(qb + qa_off(a.swz, blk * 32));
                const int4 a1 = *reinterpret_cast<const int4 *>(qb + qa_off(a.swz, blk * 32 + 16));
                int dp = __dp4a(q[0], a0.x, 0);
                dp = __dp4a(q[1], a0.y, dp);
                dp = __dp4a(q[2], a0.z, dp);
                dp = __dp4a(q[3], a0.w, dp);
                dp = __dp4a(q[4], a1.x, dp);
                dp = __dp4a(q[5], a1.y, dp);
                dp = __dp4a(q[6], a1.z, dp);
                dp = __dp4a(q[7], a1.w, dp);
                acc[b] += d * a.da[b * (a.k / 32) + blk] * (float)dp;
            }
        }
        __syncwarp(); // every lane is done with this stage before it is refilled
    }
    qg_cp_wait<0>();
    gemv_finish<T, B>(acc, lane, bias, res, y, n, ld_y);
}

// Q6_K rows staged through shared memory the same way (its 210-byte blocks start 2-byte
// aligned too; Q6K above loads 13 bytes per lane with 11 loads): where a row starts
// 16-byte aligned (k_in a multiple of 2,048), a warp copies 8 blocks (1,680 bytes, 105
// pieces) per step, and lane l takes 64 values of block l / 4: half h = (l / 2) % 2 and
// positions 16 p..16 p + 15 (p = l % 2) of each of the half's four runs of 32, from 16
// bytes of ql at 64 h + 16 p (runs 0 and 2), 16 at 64 h + 32 + 16 p (runs 1 and 3), 16 of
// qh at 128 + 32 h + 16 p, the four scales at 192 + 8 h + p + {0, 2, 4, 6} and d. Every
// field starts at 0 mod 4 within the block, and odd blocks start at 2 mod 4: a lane reads
// aligned words and shifts them by 16 bits where its block is odd.
template <typename T, int B>
__device__ void qgemv_row_q6s(const uint8_t *__restrict__ w, int row, const QAct &a,
                              const T *__restrict__ bias, const T *__restrict__ res,
                              T *__restrict__ y, int n, int ld_y, uint8_t *buf) {
    constexpr int CH = QG_STEP6_BYTES / 16, S = QG_Q8S_STAGES; // 105 pieces per step
    const int lane = threadIdx.x & 31;
    const int nblk = a.k / 256, steps = nblk / 8, pieces = nblk * 210 / 16;
    const uint4 *wr = reinterpret_cast<const uint4 *>(w + (size_t)row * nblk * 210);
    float acc[B];
#pragma unroll
    for (int b = 0; b < B; b++) acc[b] = 0.f;
    auto fetch = [&](int s) { qg_stage_fetch<CH, 4>(buf, wr, s, steps, pieces, lane); };
#pragma unroll
    for (int s = 0; s < S - 1; s++) fetch(s);
    const int bl = lane >> 2, h = (lane >> 1) & 1, p = lane & 1;
    const int off = 210 * bl, sh = (off & 3) ? 16 : 0, base = off & ~3;
    // 4 words of a 16-byte field at byte f of the block, from 5 aligned words
    auto field16 = [&](const uint8_t *st, int f, uint32_t *o) {
        const uint32_t *wd = reinterpret_cast<const uint32_t *>(st + base + f);
        uint32_t prev = wd[0];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const uint32_t next = wd[j + 1];
            o[j] = __funnelshift_rc(prev, next, sh);
            prev = next;
        }
    };
    for (int s = 0; s < steps; s++) {
        fetch(s + S - 1);
        qg_cp_wait<S - 1>();
        __syncwarp();
        const uint8_t *st = buf + (s % S) * QG_STEP6_BYTES;
        uint32_t qh_[4];
        field16(st, 128 + 32 * h + 16 * p, qh_);
        // scales: bytes p, 2 + p, 4 + p, 6 + p of the 8 at 192 + 8 h
        const uint32_t *sw = reinterpret_cast<const uint32_t *>(st + base + 192 + 8 * h);
        const uint32_t s0 = __funnelshift_rc(sw[0], sw[1], sh), s1 = __funnelshift_rc(sw[1], sw[2], sh);
        const uint32_t scs = __byte_perm(s0, s1, p ? 0x7531 : 0x6420);
        const uint32_t dw = *reinterpret_cast<const uint32_t *>(st + base + 208);
        const float d = half_bits((uint16_t)(dw >> sh));
        const int blk = s * 8 + bl;
        const int m4 = 0x0F0F0F0F, m2 = 0x03030303;
        float v[B];
#pragma unroll
        for (int b = 0; b < B; b++) v[b] = 0.f;
        // ql at 64 h + 16 p: runs 0 (low nibbles) and 2 (high); at +32: runs 1 and 3
#pragma unroll
        for (int r2 = 0; r2 < 2; r2++) {
            uint32_t ql[4];
            field16(st, 64 * h + 32 * r2 + 16 * p, ql);
#pragma unroll
            for (int hi = 0; hi < 2; hi++) {
                const int i = r2 + 2 * hi; // the run
                int q[4];
#pragma unroll
                for (int m = 0; m < 4; m++) {
                    q[m] = ((int)(ql[m] >> (4 * hi)) & m4) | ((((int)qh_[m] >> (2 * i)) & m2) << 4);
                    q[m] = (q[m] + 0x60606060) ^ 0x80808080; // bytes of 0..63: q - 32, no carries
                }
                const int c = blk * 8 + 4 * h + i; // the 32-value piece of the activation
                const float sc = (float)(int8_t)((scs >> (8 * i)) & 0xff);
#pragma unroll
                for (int b = 0; b < B; b++) {
                    const int8_t *qb = a.qa + (size_t)b * a.k;
                    const int4 av = *reinterpret_cast<const int4 *>(qb + qa_off(a.swz, c * 32 + 16 * p));
                    int dp = __dp4a(q[0], av.x, 0);
                    dp = __dp4a(q[1], av.y, dp);
                    dp = __dp4a(q[2], av.z, dp);
                    dp = __dp4a(q[3], av.w, dp);
                    v[b] += sc * (float)dp * a.da[b * (a.k / 32) + c];
                }
            }
        }
#pragma unroll
        for (int b = 0; b < B; b++) acc[b] += d * v[b];
        __syncwarp();
    }
    qg_cp_wait<0>();
    gemv_finish<T, B>(acc, lane, bias, res, y, n, ld_y);
}

// Asks L2 for the `bytes` bytes at p (a weight row), without waiting for them: one bulk
// prefetch on sm_90, one prefetch per 32-byte sector before.
__device__ __forceinline__ void qg_prefetch_l2(const uint8_t *p, int bytes, int lane) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (lane == 0) {
        const uintptr_t a = (uintptr_t)p & ~(uintptr_t)15;
        const uint32_t n = (uint32_t)(((uintptr_t)p + bytes - a + 15) & ~(uintptr_t)15);
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(a), "r"(n) : "memory");
    }
#else
    for (int off = lane * 32; off < bytes; off += 32 * 32)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(p + off));
#endif
}

__device__ __forceinline__ int qg_row_bytes(int t, int k) {
    return t == QG_Q4_K ? k / 256 * Q4K::BYTES : t == QG_Q6_K ? k / 256 * Q6K::BYTES : k / 32 * Q80::BYTES;
}

// Segments s = 0, 1, 2: weights ws (GGML type ts, ns rows; ns = 0: absent), output
// columns from the sum of the earlier segments' rows; y, res: [B, ld_y]; bias: [ld_y].
// The grid is as many blocks as the GPU runs at once (or fewer): each block computes the
// prologue once and its warps then take output rows gridDim.x * warps apart. Before the
// prologue each warp asks L2 for its first row, so the weights stream while it runs, and
// before each row for its next one, so that row's loads find it in L2 (Q4_K_M: 2,635 ->
// 2,557 us per step at b = 1, 3,326 -> 3,210 at b = 2; Q8_0 at b = 1, whose head already
// streams at 77 % of copy bandwidth without it, 3,712 -> 3,825, so not for Q8_0 rows at
// b = 1; at b = 2, 4,719 -> 4,620).
// (Measured on an H200, bench/gpu/kernels/qgemv_bench.cu: one block per 8 rows, each
// redoing the prologue, was 2x slower; a warp pipeline of loads running ahead across
// rows and segments, 1.2x slower: its per-step type dispatch costs more than it hides.)
// PF: issue the L2 prefetch of `pf` and take part in programmatic dependent launch (the
// `qgemvfp_*` kernels; see gemv_fused).
template <typename T, int B, int PRO, bool PF = false>
__device__ void qgemv_fused(const T *x, const T *nw, float eps, const uint8_t *w0, int t0,
                            int n0, const uint8_t *w1, int t1, int n1, const uint8_t *w2,
                            int t2, int n2, const T *bias, const T *res, T *y, int ld_y,
                            int k_in, const L2Ranges &pf = L2Ranges{}) {
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
        qg_prefetch_l2(p, rb, lane);
    }
    if (PF) {
        l2_prefetch(pf);
        pdl_wait(); // after the weights' first prefetch; before x is read (see gemv_fused)
        pdl_launch_dependents();
    }
    int8_t *qa = reinterpret_cast<int8_t *>(smem_raw);
    float *da = reinterpret_cast<float *>(smem_raw + (size_t)B * k_in);
    float *sa = da + B * (k_in / 32);
    const int swz = (k_in & 63) == 0 ? 0x30 : 0;
    // the warp's staging buffer (qgemv_row_q8s, qgemv_row_q6s), after the activation;
    // 16-byte aligned where rows can be staged (k_in a multiple of 256), and there only
    // where the launch gave the block room for it (a wide activation may leave none)
    uint32_t dyn_smem;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(dyn_smem));
    const bool room = dyn_smem >= (uint32_t)(B * k_in + 8 * B * (k_in / 32) + nwarps * QG_STAGE_BYTES);
    const bool staged = room && (k_in & 255) == 0, staged6 = room && (k_in & 2047) == 0;
    uint8_t *stage = smem_raw + (size_t)B * k_in + 8 * B * (k_in / 32) + warp * QG_STAGE_BYTES;
    qgemv_prologue<T, B, PRO>(x, nw, eps, k_in, swz, qa, da, sa);
    const QAct a{qa, da, sa, k_in, swz};
    for (int n = first; n < total; n += stride) {
        const uint8_t *w;
        int t, row;
        locate(n, w, t, row);
        if (n + stride < total) {
            const uint8_t *w2;
            int t2, row2;
            locate(n + stride, w2, t2, row2);
            const int rb2 = qg_row_bytes(t2, k_in);
            if (B > 1 || t2 != QG_Q8_0) qg_prefetch_l2(w2 + (size_t)row2 * rb2, rb2, lane);
        }
        switch (t) {
        case QG_Q4_K: qgemv_row<T, B, Q4K>(w, row, a, bias, res, y, n, ld_y); break;
        case QG_Q6_K:
            if (QG_Q8S && staged6 && ((uintptr_t)w & 15) == 0)
                qgemv_row_q6s<T, B>(w, row, a, bias, res, y, n, ld_y, stage);
            else
                qgemv_row<T, B, Q6K>(w, row, a, bias, res, y, n, ld_y);
            break;
        default:
            if (QG_Q8S && staged && ((uintptr_t)w & 15) == 0)
                qgemv_row_q8s<T, B>(w, row, a, bias, res, y, n, ld_y, stage);
            else
                qgemv_row<T, B, Q80>(w, row, a, bias, res, y, n, ld_y);
            break;
        }
    }
}

// Block size: B = 1: 16 warps (QG_WARPS1; the launcher's QuantGemv::warps), at most 64
// registers (without the bound the compiler takes ~90 for Q4_K's wide lanes), 2 blocks
// per SM: each SM computes the prologue twice instead of 4 times with 8-warp blocks, and
// twice as fast (Qwen3-8B Q4_K_M GEMVs 2,368 -> 2,163 us a step, Q8_0 3,208 -> 2,978;
// 32 warps: 2,185 and 2,938, but their staging buffers would not fit 96 KiB). B = 2: 8
// warps, at most 80 registers, 3 blocks per SM (capping at 64 spills and was slower).
#ifndef QG_WARPS1
#define QG_WARPS1 16
#endif
#define QG_BOUNDS(B) __launch_bounds__((B) == 1 ? 32 * QG_WARPS1 : 256, (B) == 1 ? 32 / QG_WARPS1 : 3)
#define DS_QGEMVF(T, SUFFIX, B, PRO)                                                           \
    extern "C" __global__ void QG_BOUNDS(B) qgemvf_##SUFFIX##_##B##_##PRO(                     \
        const T *x, const T *nw, float eps, const uint8_t *w0, int t0, int n0,                 \
        const uint8_t *w1, int t1, int n1, const uint8_t *w2, int t2, int n2, const T *bias,   \
        const T *res, T *y, int ld_y, int k_in, L2Ranges pf) {                                 \
        qgemv_fused<T, B, PRO>(x, nw, eps, w0, t0, n0, w1, t1, n1, w2, t2, n2, bias, res, y,    \
                               ld_y, k_in, pf);                                                \
    }                                                                                          \
    extern "C" __global__ void QG_BOUNDS(B) qgemvfp_##SUFFIX##_##B##_##PRO(                    \
        const T *x, const T *nw, float eps, const uint8_t *w0, int t0, int n0,                 \
        const uint8_t *w1, int t1, int n1, const uint8_t *w2, int t2, int n2, const T *bias,   \
        const T *res, T *y, int ld_y, int k_in, L2Ranges pf) {                                 \
        qgemv_fused<T, B, PRO, true>(x, nw, eps, w0, t0, n0, w1, t1, n1, w2, t2, n2, bias,      \
                                     res, y, ld_y, k_in, pf);                                  \
    }
#define DS_QGEMVF_ALL(T, SUFFIX)                                                               \
    DS_QGEMVF(T, SUFFIX, 1, 0) DS_QGEMVF(T, SUFFIX, 1, 1) DS_QGEMVF(T, SUFFIX, 1, 2)            \
    DS_QGEMVF(T, SUFFIX, 2, 0) DS_QGEMVF(T, SUFFIX, 2, 1) DS_QGEMVF(T, SUFFIX, 2, 2)
DS_QGEMVF_ALL(float, f32)
DS_QGEMVF_ALL(__half, f16)
DS_QGEMVF_ALL(__nv_bfloat16, bf16)
