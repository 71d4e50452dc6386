// Frozen copies of the fused decode step's RoPE and attention kernels as they were
// before the one-launch RoPE (rope_qkv) and the in-kernel split merge (2026-12-04,
// gpu-node/cuda/decode.cu at 15a15f3): the baseline gemv_bench.cu times the node's
// kernels against, in the same run. Not built into the node.

// rope_rows: one part of a fused q|k|v projection output qkv [b, (nh + 2 nkv) hd]:
//   part 0: q_out[r, h] = rope(qknorm(q[r, h]))       -> out: [b, nh, hd]
//   part 1: kc[slot, h, pos] = rope(qknorm(k[r, h]))  -> out: the key cache
//   part 2: vc[slot, h, pos] = v[r, h]                -> out: the value cache
// RoPE is the non-interleaved (rotate-half) form; cos/sin: [positions, hd / 2].
// grid (heads of the part, b); block hd / 2 threads.
template <typename T>
__device__ void rope_rows_v2(const T *__restrict__ qkv, const T *__restrict__ norm, float eps,
                          const T *__restrict__ cos, const T *__restrict__ sin,
                          T *__restrict__ out, const uint32_t *__restrict__ idx, int part,
                          int b, int nh, int nkv, int cap, int hd) {
    __shared__ float red[32];
    const int h = blockIdx.x, r = blockIdx.y, i = threadIdx.x, half = hd / 2;
    const uint32_t pos = idx[b + r];
    const uint32_t slot = idx[2 * b + r];
    const int head = part == 0 ? h : part == 1 ? nh + h : nh + nkv + h;
    const T *src = qkv + (size_t)r * (nh + 2 * nkv) * hd + (size_t)head * hd;
    float x1 = to_f(src[i]), x2 = to_f(src[i + half]);
    if (part < 2 && norm != nullptr) {
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
        T *q = out + ((size_t)r * nh + h) * hd;
        q[i] = o1;
        q[i + half] = o2;
    } else if (slot != DS_PAD_SLOT && pos < (uint32_t)cap) {
        T *c = out + (((size_t)slot * nkv + h) * cap + pos) * hd;
        c[i] = o1;
        c[i + half] = o2;
    }
}

template <typename T>
__global__ void rope_rows_v2_k(const T *qkv, const T *norm, float eps, const T *cos, const T *sin,
                               T *out, const uint32_t *idx, int part, int b, int nh, int nkv,
                               int cap, int hd) {
    rope_rows_v2<T>(qkv, norm, eps, cos, sin, out, idx, part, b, nh, nkv, cap, hd);
}

// Decode attention for head size 64 * G (G = 1, 2, 4), split over the keys
// (flash-decoding): block (h, r, sp) takes row r's keys in [sp * split_keys,
// (sp + 1) * split_keys) that lie in its window [start, len), so a long context spreads
// over many blocks instead of one per head (grid (nh, b, splits), block 128). In a block, G lanes share a key (64
// dimensions each) and the 128 / G key groups each keep an online softmax; the groups
// are merged in shared memory (rows padded by one float: no bank conflicts), all threads
// taking part. With one split the block writes the output; with several it writes its
// max, sum and unnormalised accumulator, and decode_attn_merge_v2 combines the splits.
// Shapes as decode_attn; part_m, part_l: [b, nh, splits], part_acc: [b, nh, splits, HD].
template <typename T, int G>
__device__ void decode_attn64_v2(const T *__restrict__ q, const T *__restrict__ kc,
                              const T *__restrict__ vc, T *__restrict__ out,
                              float *__restrict__ part_m, float *__restrict__ part_l,
                              float *__restrict__ part_acc, const uint32_t *__restrict__ idx,
                              int b, int nh, int nkv, int cap, int window, float scale,
                              int split_keys) {
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
    const uint32_t lo = (uint32_t)sp * split_keys, hi = lo + split_keys;
    if (start < lo) start = lo;
    if (len > hi) len = hi;
    const T *qr = q + ((size_t)r * nh + h) * HD + part * 64;
    const size_t base =
        ((size_t)(slot == DS_PAD_SLOT ? 0 : slot) * nkv + kvh) * (size_t)cap * HD + part * 64;
    float qv[64], acc[64];
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
    // Only this key group's G lanes take an iteration (the bound differs between
    // groups), so only they may take part in the shuffle: a full-warp mask here hung the
    // GPU at head size 128 (H200, 2026-12-04).
    const unsigned gmask = G == 1 ? 1u : ((1u << G) - 1) << (lane & ~(G - 1));
    float m = -INFINITY, l = 0.f;
    for (uint32_t j = start + g; j < len; j += NG) {
        const T *kj = kc + base + (size_t)j * HD;
        float sc = 0.f;
#pragma unroll
        for (int c = 0; c < 64 / V; c++) {
            const uint4 u = __ldg(reinterpret_cast<const uint4 *>(kj + c * V));
            const T *tv = reinterpret_cast<const T *>(&u);
#pragma unroll
            for (int v = 0; v < V; v++) sc += qv[c * V + v] * to_f(tv[v]);
        }
#pragma unroll
        for (int off = 1; off < G; off <<= 1) sc += __shfl_xor_sync(gmask, sc, off);
        const float mn = fmaxf(m, sc);
        const float cr = __expf(m - mn);
        const float p = __expf(sc - mn);
        l = l * cr + p;
        const T *vj = vc + base + (size_t)j * HD;
#pragma unroll
        for (int c = 0; c < 64 / V; c++) {
            const uint4 u = __ldg(reinterpret_cast<const uint4 *>(vj + c * V));
            const T *tv = reinterpret_cast<const T *>(&u);
#pragma unroll
            for (int v = 0; v < V; v++) acc[c * V + v] = acc[c * V + v] * cr + p * to_f(tv[v]);
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
        if (splits == 1) {
            out[row * HD + d] = from_f<T>(total > 0.f ? v / total : 0.f);
        } else {
            part_acc[(row * splits + sp) * HD + d] = v;
        }
    }
    if (splits > 1 && t == 0) {
        part_m[row * splits + sp] = mx;
        part_l[row * splits + sp] = total;
    }
}

// Combines decode_attn64_v2's splits: out[r, h, d] = sum_s acc_s[d] e^(m_s - M) /
// sum_s l_s e^(m_s - M), M = max_s m_s. grid (nh, b), block HD threads.
template <typename T>
__device__ void decode_attn_merge_v2(const float *__restrict__ part_m, const float *__restrict__ part_l,
                                  const float *__restrict__ part_acc, T *__restrict__ out, int nh,
                                  int splits, int hd) {
    const size_t row = (size_t)blockIdx.y * nh + blockIdx.x;
    const int d = threadIdx.x;
    float mx = -INFINITY;
    for (int s = 0; s < splits; s++) mx = fmaxf(mx, part_m[row * splits + s]);
    float v = 0.f, total = 0.f;
    if (mx != -INFINITY) {
        for (int s = 0; s < splits; s++) {
            const float pm = part_m[row * splits + s];
            if (pm == -INFINITY) continue;
            const float w = __expf(pm - mx);
            total += part_l[row * splits + s] * w;
            v += part_acc[(row * splits + s) * hd + d] * w;
        }
    }
    if (d < hd) out[row * hd + d] = from_f<T>(total > 0.f ? v / total : 0.f);
}

template <typename T, int G>
__global__ void decode_attn64_v2_k(const T *q, const T *kc, const T *vc, T *out, float *pm,
                                   float *pl, float *pa, const uint32_t *idx, int b, int nh,
                                   int nkv, int cap, int window, float scale, int split_keys) {
    decode_attn64_v2<T, G>(q, kc, vc, out, pm, pl, pa, idx, b, nh, nkv, cap, window, scale,
                           split_keys);
}
template <typename T>
__global__ void decode_attn_merge_v2_k(const float *pm, const float *pl, const float *pa, T *out,
                                       int nh, int splits, int hd) {
    decode_attn_merge_v2<T>(pm, pl, pa, out, nh, splits, hd);
}
