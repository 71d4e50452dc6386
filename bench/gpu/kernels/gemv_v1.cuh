// The decode GEMV before issue 17's prefetch (commit 61abd9f), kept as the bench's
// baseline: it stages the activation first and only then streams the weights.
template <typename T, int B, int PRO>
__device__ void gemv_v1(const T *__restrict__ x, const T *__restrict__ nw, float eps,
                           const T *__restrict__ w, const T *__restrict__ bias,
                           const T *__restrict__ res, T *__restrict__ y, int n_out, int k_in) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *a = reinterpret_cast<T *>(smem_raw); // [B, K]
    __shared__ float rinv[B];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw_ = blockDim.x >> 5;
    if (PRO == 1) {
        // One warp per row computes the row's inverse RMS.
        for (int b = warp; b < B; b += nw_) {
            float ss = 0.f;
            for (int k = lane; k < k_in; k += 32) {
                const float v = to_f(x[(size_t)b * k_in + k]);
                ss += v * v;
            }
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
            if (lane == 0) rinv[b] = rsqrtf(ss / k_in + eps);
        }
        __syncthreads();
    }
    for (int i = threadIdx.x; i < B * k_in; i += blockDim.x) {
        const int b = i / k_in, k = i - b * k_in;
        if (PRO == 0) {
            a[i] = x[i];
        } else if (PRO == 1) {
            a[i] = rnd<T>(to_f(x[i]) * rinv[b] * to_f(nw[k]));
        } else {
            const float g = to_f(x[(size_t)b * 2 * k_in + k]);
            const float u = to_f(x[(size_t)b * 2 * k_in + k_in + k]);
            const float s = to_f(rnd<T>(g / (1.f + __expf(-g))));
            a[i] = rnd<T>(s * u);
        }
    }
    __syncthreads();
    constexpr int V = 16 / sizeof(T);
    const int n = blockIdx.x * nw_ + warp;
    if (n >= n_out) return;
    const T *wr = w + (size_t)n * k_in;
    float acc[B];
#pragma unroll
    for (int b = 0; b < B; b++) acc[b] = 0.f;
#pragma unroll 4
    for (int k = lane * V; k < k_in; k += 32 * V) {
        const uint4 wv = __ldg(reinterpret_cast<const uint4 *>(wr + k));
        const T *wt = reinterpret_cast<const T *>(&wv);
        float wf[V];
#pragma unroll
        for (int v = 0; v < V; v++) wf[v] = to_f(wt[v]);
#pragma unroll
        for (int b = 0; b < B; b++) {
            const uint4 xv = *reinterpret_cast<const uint4 *>(a + (size_t)b * k_in + k);
            const T *xt = reinterpret_cast<const T *>(&xv);
#pragma unroll
            for (int v = 0; v < V; v++) acc[b] += wf[v] * to_f(xt[v]);
        }
    }
#pragma unroll
    for (int b = 0; b < B; b++) {
        float s = acc[b];
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        if (lane == 0) {
            float r = to_f(rnd<T>(s));
            if (bias != nullptr) r = to_f(rnd<T>(r + to_f(bias[n])));
            if (res != nullptr) r = to_f(rnd<T>(r + to_f(res[(size_t)b * n_out + n])));
            y[(size_t)b * n_out + n] = rnd<T>(r);
        }
    }
}

