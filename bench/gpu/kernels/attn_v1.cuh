// The decode attention before the key splits (commit a5a4347), kept as the bench's
// baseline and reference: one block per (head, row), groups merged serially.
template <typename T, int G>
__device__ void decode_attn64_v1(const T *__restrict__ q, const T *__restrict__ kc,
                              const T *__restrict__ vc, T *__restrict__ out,
                              const uint32_t *__restrict__ idx, int b, int nh, int nkv, int cap,
                              int window, float scale) {
    constexpr int HD = 64 * G;
    constexpr int V = 16 / sizeof(T);
    constexpr int NG = 128 / G; // key groups per block
    __shared__ float sm[NG];
    __shared__ float sl[NG];
    __shared__ float sacc[NG * HD];
    const int h = blockIdx.x, r = blockIdx.y;
    const int g = threadIdx.x / G, part = threadIdx.x % G;
    const int kvh = h / (nh / nkv);
    const uint32_t slot = idx[2 * b + r];
    uint32_t len = slot == DS_PAD_SLOT ? 0 : idx[b + r] + 1;
    if (len > (uint32_t)cap) len = cap;
    const uint32_t start = (window > 0 && len > (uint32_t)window) ? len - window : 0;
    const T *qr = q + ((size_t)r * nh + h) * HD + part * 64;
    const size_t base = ((size_t)slot * nkv + kvh) * (size_t)cap * HD + part * 64;
    float qv[64], acc[64];
#pragma unroll
    for (int c = 0; c < 64 / V; c++) {
        const uint4 u = *reinterpret_cast<const uint4 *>(qr + c * V);
        const T *t = reinterpret_cast<const T *>(&u);
#pragma unroll
        for (int v = 0; v < V; v++) {
            qv[c * V + v] = to_f(t[v]) * scale;
            acc[c * V + v] = 0.f;
        }
    }
    const unsigned gmask = G == 1 ? 1u : ((1u << G) - 1) << ((threadIdx.x & 31) & ~(G - 1));
    float m = -INFINITY, l = 0.f;
    for (uint32_t j = start + g; j < len; j += NG) {
        const T *kj = kc + base + (size_t)j * HD;
        float s = 0.f;
#pragma unroll
        for (int c = 0; c < 64 / V; c++) {
            const uint4 u = *reinterpret_cast<const uint4 *>(kj + c * V);
            const T *t = reinterpret_cast<const T *>(&u);
#pragma unroll
            for (int v = 0; v < V; v++) s += qv[c * V + v] * to_f(t[v]);
        }
        // Only this key group's G lanes take this iteration (the loop bound differs
        // between groups), so only they may take part in the shuffle: a full-warp mask
        // here hung the GPU at head size 128 (H200, 2026-12-04).
#pragma unroll
        for (int off = 1; off < G; off <<= 1) s += __shfl_xor_sync(gmask, s, off);
        const float mn = fmaxf(m, s);
        const float cr = __expf(m - mn);
        const float p = __expf(s - mn);
        l = l * cr + p;
        const T *vj = vc + base + (size_t)j * HD;
#pragma unroll
        for (int c = 0; c < 64 / V; c++) {
            const uint4 u = *reinterpret_cast<const uint4 *>(vj + c * V);
            const T *t = reinterpret_cast<const T *>(&u);
#pragma unroll
            for (int v = 0; v < V; v++) acc[c * V + v] = acc[c * V + v] * cr + p * to_f(t[v]);
        }
        m = mn;
    }
    if (part == 0) {
        sm[g] = m;
        sl[g] = l;
    }
#pragma unroll
    for (int d = 0; d < 64; d++) sacc[g * HD + part * 64 + d] = acc[d];
    __syncthreads();
    float mx = -INFINITY;
    for (int w = 0; w < NG; w++) mx = fmaxf(mx, sm[w]);
    float total = 0.f;
    for (int w = 0; w < NG; w++) total += sm[w] == -INFINITY ? 0.f : sl[w] * __expf(sm[w] - mx);
    T *o = out + ((size_t)r * nh + h) * HD;
    for (int d = threadIdx.x; d < HD; d += blockDim.x) {
        float v = 0.f;
        for (int w = 0; w < NG; w++) {
            if (sm[w] != -INFINITY) v += sacc[w * HD + d] * __expf(sm[w] - mx);
        }
        o[d] = from_f<T>(total > 0.f ? v / total : 0.f);
    }
}

