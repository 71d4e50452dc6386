// Does prefetching the next GEMV's weights into L2 fill the DRAM bubbles of a batch-1
// decode step? (issue 17: qwen05 at ~26 % of the bandwidth limit, its small matrices and
// the gaps between kernels leave DRAM idle.)
//   nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/l2pf bench/gpu/kernels/l2_prefetch_bench.cu
//   /tmp/l2pf
// A step's GEMVs in order, as the node's fused step runs them (gpu-node/cuda/decode.cu's
// gemv_fused, included): per layer q|k|v (RMSNorm prologue), a stand-in for RoPE +
// attention (a latency-bound kernel of ~4 us that reads nothing), o (residual), gate|up
// (RMSNorm prologue), down (SwiGLU prologue, residual), then the head; every layer with
// its own weights (the whole model's bytes stream from DRAM each step). Captured once as
// a CUDA graph, replayed 20 times after 3 warm-ups. Variants:
//   none      the step as it is
//   next      each kernel also issues an L2 bulk prefetch (cp.async.bulk.prefetch.L2,
//             sm_90) of its share of the next GEMV's weights (decode.cu's l2_prefetch,
//             after the GEMV's first weight loads, as the node runs it)
//   next2     the same for the GEMV after the next as well
// Figures: us a step, and the bandwidth-bound time of the step's weight bytes at the
// device's measured copy bandwidth (read + write / 2).
#include "../../../gpu-node/cuda/decode.cu"
#include "bench_util.cuh"
#include <cstdio>
#include <cstdlib>
#include <vector>

template <int PRO>
__global__ void k_gemv(const bf *x, const bf *nw, float eps, const bf *w, const bf *res, bf *y,
                       int n, int k, L2Ranges pf) {
    gemv_fused<bf, 1, PRO, true>(x, nw, eps, w, nullptr, res, y, n, k, pf);
}

// Stand-in for RoPE + attention at a short context: ~`ns` of latency, no DRAM traffic.
__global__ void k_wait(long long ns, L2Ranges pf) {
    l2_prefetch(pf);
    long long t0;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    for (;;) {
        long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        if (t - t0 >= ns) break;
    }
}

struct Op {
    int kind; // 0 q|k|v, 1 o, 2 gate|up, 3 down, 4 head, 5 attention stand-in
    int n, k;
    const bf *w;
};

int main() {
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount,
           prop.l2CacheSize >> 20);
    const double bw = copy_bandwidth_gbs() * 1e9;
    struct Model {
        const char *name;
        int layers, hidden, qkv, inter, vocab;
    } models[] = {{"qwen05", 24, 896, 1152, 4864, 151936}, {"llama1b", 16, 2048, 3072, 8192, 128256}};
    bf *x, *nw, *res, *y;
    CK(cudaMalloc(&x, 2 * 16384 * sizeof(bf)));
    CK(cudaMalloc(&nw, 16384 * sizeof(bf)));
    CK(cudaMalloc(&res, 160000 * sizeof(bf)));
    CK(cudaMalloc(&y, 160000 * sizeof(bf)));
    fill_rand<<<64, 256>>>(x, 2 * 16384, 2, 2.f);
    fill_rand<<<64, 256>>>(nw, 16384, 3, 2.f);
    fill_rand<<<64, 256>>>(res, 160000, 4, 1.f);
    const long long attn_ns = getenv("ATTN_NS") ? atoll(getenv("ATTN_NS")) : 4000;
    for (const Model &m : models) {
        std::vector<Op> ops;
        size_t total = 0;
        auto mat = [&](int n, int k) {
            bf *w;
            CK(cudaMalloc(&w, (size_t)n * k * sizeof(bf)));
            fill_rand<<<1024, 256>>>(w, (size_t)n * k, (uint32_t)ops.size() + 7, 0.05f);
            total += (size_t)n * k * sizeof(bf);
            return w;
        };
        for (int l = 0; l < m.layers; l++) {
            ops.push_back({0, m.qkv, m.hidden, mat(m.qkv, m.hidden)});
            ops.push_back({5, 0, 0, nullptr});
            ops.push_back({1, m.hidden, m.hidden, mat(m.hidden, m.hidden)});
            ops.push_back({2, 2 * m.inter, m.hidden, mat(2 * m.inter, m.hidden)});
            ops.push_back({3, m.hidden, m.inter, mat(m.hidden, m.inter)});
        }
        ops.push_back({4, m.vocab, m.hidden, mat(m.vocab, m.hidden)});
        CK(cudaDeviceSynchronize());
        // The GEMVs after op i (skipping the attention stand-in).
        auto next_gemv = [&](size_t i, int skip) -> const Op * {
            for (size_t j = i + 1; j < ops.size(); j++)
                if (ops[j].kind != 5 && skip-- == 0) return &ops[j];
            return nullptr;
        };
        for (int dist = 0; dist <= 2; dist++) {
            cudaStream_t st;
            CK(cudaStreamCreate(&st));
            cudaGraph_t g;
            CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeRelaxed));
            for (size_t i = 0; i < ops.size(); i++) {
                const Op &o = ops[i];
                L2Ranges pf = {};
                for (int d = 0; d < dist; d++) {
                    const Op *nx = next_gemv(i, d);
                    if (nx) {
                        pf.p[d] = reinterpret_cast<unsigned long long>(nx->w);
                        pf.n[d] = ((size_t)nx->n * nx->k * sizeof(bf)) & ~(size_t)15;
                    }
                }
                if (o.kind == 5) {
                    k_wait<<<m.qkv / 64, 64, 0, st>>>(attn_ns, pf);
                    continue;
                }
                const int warps = o.kind == 3 ? 16 : 8;
                const dim3 grid((o.n + warps - 1) / warps), block(32 * warps);
                const size_t smem = (size_t)o.k * sizeof(bf);
                const float eps = 1e-5f;
                switch (o.kind) {
                case 0:
                case 2:
                case 4:
                    k_gemv<1><<<grid, block, smem, st>>>(x, nw, eps, o.w, nullptr, y, o.n, o.k, pf);
                    break;
                case 1:
                    k_gemv<0><<<grid, block, smem, st>>>(x, nw, eps, o.w, res, y, o.n, o.k, pf);
                    break;
                default:
                    k_gemv<2><<<grid, block, smem, st>>>(x, nw, eps, o.w, res, y, o.n, o.k, pf);
                }
            }
            CK(cudaStreamEndCapture(st, &g));
            CK(cudaGetLastError());
            cudaGraphExec_t ge;
            CK(cudaGraphInstantiate(&ge, g, 0));
            const int R = 20;
            const float ms = replay_ms(ge, st, 3, R);
            const double us = ms * 1e3 / R;
            const double limit = total / (bw / 2) * 1e6;
            const char *names[] = {"none", "next", "next2"};
            printf("%-8s %-6s %8.1f us a step (weights %.3f GB, bandwidth-bound %.1f us: %.1f %%; "
                   "attention stand-in %lld ns x %d)\n",
                   m.name, names[dist], us, total / 1e9, limit, 100 * limit / us, attn_ns,
                   m.layers);
            CK(cudaGraphExecDestroy(ge));
            CK(cudaGraphDestroy(g));
            CK(cudaStreamDestroy(st));
        }
        for (const Op &o : ops)
            if (o.w) CK(cudaFree((void *)o.w));
    }
    return 0;
}
