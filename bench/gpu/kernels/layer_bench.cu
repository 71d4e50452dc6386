// The GEMVs of Qwen2.5-0.5B's batch-1 decode layer as the static step runs them (issue 17:
// qwen05 batch 1 is the one target not met), in variants of launch shape and loads in
// flight, against the device's copy bandwidth measured in the same run:
//   nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/layer_bench bench/gpu/kernels/layer_bench.cu
//   /tmp/layer_bench
// A layer is: RMSNorm + q|k|v (896 -> 1152), o + residual (896 -> 896), RMSNorm + gate|up
// with the SwiGLU (896 -> 2 x 4864, the `gemvfs_*` kernel), down + residual (4864 -> 896);
// each launched with programmatic dependent launch as the static step's pdl mode launches
// them. 24 layers, each on its own weights (716 MB, as the model: no layer finds its
// weights in L2), captured as one graph and replayed. The attention and the LM head are
// not in it. Every variant's outputs must equal the first's bit for bit (the same sums in
// the same order: the variants change only which warp or block does a row and how much
// of it is loaded ahead).
// (The split-row variants, KS warps a row, add in another order: their outputs are
// compared by their largest difference from the first's.)
// Variants (name: q|k|v, o, gate|up, down as warps a block / pieces in flight per lane):
//   the node's launches (8 warps, 4 pieces), then fewer registers in gate|up (2 or 3
//   pieces, or 4 with launch bounds for 5 blocks an SM: 608 blocks of 8 warps need 4.6 an
//   SM on 132 SMs, and 64 registers allow 4, so a tail of 80 blocks runs after the rest),
//   narrower blocks for the narrow GEMVs (896 outputs: 112 blocks of 8 warps leave 20 of
//   132 SMs idle), and more pieces in flight for the down projection's long rows.
#include "../../../gpu-node/cuda/decode.cu"
#include "bench_util.cuh"
#include <cstring>
#include <vector>

typedef void (*kfn)(const bf *, const bf *, float, const bf *, const bf *, const bf *, bf *,
                    int, int);

template <int PRO, bool PAIR, int U>
__global__ void k_g(const bf *x, const bf *nw, float eps, const bf *w, const bf *bias,
                    const bf *res, bf *y, int n, int k) {
    gemv_fused<bf, 1, PRO, true, PAIR, U>(x, nw, eps, w, bias, res, y, n, k, L2Ranges{});
}
template <int PRO, int U, int KS>
__global__ void k_gk(const bf *x, const bf *nw, float eps, const bf *w, const bf *bias,
                     const bf *res, bf *y, int n, int k) {
    gemv_fused<bf, 1, PRO, true, false, U, KS>(x, nw, eps, w, bias, res, y, n, k, L2Ranges{});
}
template <int PRO, bool PAIR, int U, int MINB>
__global__ void __launch_bounds__(256, MINB)
    k_gl(const bf *x, const bf *nw, float eps, const bf *w, const bf *bias, const bf *res, bf *y,
         int n, int k) {
    gemv_fused<bf, 1, PRO, true, PAIR, U>(x, nw, eps, w, bias, res, y, n, k, L2Ranges{});
}

struct G { // one GEMV's launch: kernel, warps a block, warps a row
    kfn f;
    int warps;
    const char *kname;
    int ks;
};
#define KG(PRO, PAIR, U) G{k_g<PRO, PAIR, U>, 8, "k_g<" #PRO "," #PAIR "," #U ">", 1}
#define KGL(PRO, PAIR, U, M) G{k_gl<PRO, PAIR, U, M>, 8, "k_gl<" #PRO "," #PAIR "," #U "," #M ">", 1}
#define KGK(PRO, U, KS) G{k_gk<PRO, U, KS>, 8, "k_gk<" #PRO "," #U "," #KS ">", KS}
static G W(G g, int warps) {
    g.warps = warps;
    return g;
}

struct Variant {
    const char *name;
    G qkv, o, gu, down;
};

static void launch(const G &g, int n, int k, const bf *x, const bf *nw, const bf *w,
                   const bf *res, bf *y, cudaStream_t st) {
    cudaLaunchConfig_t c = {};
    const int rows = g.warps / g.ks; // rows a block
    c.gridDim = dim3((n + rows - 1) / rows);
    c.blockDim = dim3(32 * g.warps);
    c.dynamicSmemBytes = (size_t)k * sizeof(bf);
    c.stream = st;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    c.attrs = at;
    c.numAttrs = 1;
    const float eps = 1e-6f;
    const bf *bias = nullptr;
    CK(cudaLaunchKernelEx(&c, g.f, x, nw, eps, w, bias, res, y, n, k));
}

static void describe(const G &g, const char *what) {
    cudaFuncAttributes a;
    CK(cudaFuncGetAttributes(&a, g.f));
    int blocks = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, g.f, 32 * g.warps,
                                                     (size_t)4864 * sizeof(bf)));
    printf("    %-5s %-22s %2d warps (%d a row): %3d registers, %4zu B local, %2d blocks an SM\n",
           what, g.kname, g.warps, g.ks, a.numRegs, (size_t)a.localSizeBytes, blocks);
}

int main() {
    const int H = 896, Q = 1152, I = 4864, LAYERS = 24;
    const double gbs = copy_bandwidth_gbs();
    int sms = 0;
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    printf("SMs: %d\n", sms);
    const size_t per = (size_t)Q * H + (size_t)H * H + (size_t)2 * I * H + (size_t)H * I;
    bf *w, *x, *nw, *att, *qkv, *h1, *act, *y;
    CK(cudaMalloc(&w, per * LAYERS * sizeof(bf)));
    CK(cudaMalloc(&x, H * sizeof(bf)));
    CK(cudaMalloc(&nw, I * sizeof(bf)));
    CK(cudaMalloc(&att, H * sizeof(bf)));
    CK(cudaMalloc(&qkv, Q * sizeof(bf)));
    CK(cudaMalloc(&h1, H * sizeof(bf)));
    CK(cudaMalloc(&act, I * sizeof(bf)));
    CK(cudaMalloc(&y, H * sizeof(bf)));
    fill_rand<<<1024, 256>>>(w, per * LAYERS, 1, 0.1f);
    fill_rand<<<16, 256>>>(x, H, 2, 2.f);
    fill_rand<<<16, 256>>>(nw, I, 3, 2.f);
    fill_rand<<<16, 256>>>(att, H, 4, 2.f);
    CK(cudaDeviceSynchronize());
    const double bytes = (double)per * LAYERS * sizeof(bf);
    printf("qwen05 layers: %d x %.2f MB = %.1f MB of weights; at %.1f GB/s: %.1f us\n", LAYERS,
           per * sizeof(bf) / 1e6, bytes / 1e6, gbs, bytes / (gbs * 1e9) * 1e6);

    const Variant vs[] = {
        {"node (8 warps, 4 pieces)", KG(1, false, 4), KG(0, false, 4), KG(1, true, 4), KG(0, false, 4)},
        {"gate|up 2 pieces", KG(1, false, 4), KG(0, false, 4), KG(1, true, 2), KG(0, false, 4)},
        {"gate|up 3 pieces", KG(1, false, 4), KG(0, false, 4), KG(1, true, 3), KG(0, false, 4)},
        {"gate|up 2 pieces, 5 blocks", KG(1, false, 4), KG(0, false, 4), KGL(1, true, 2, 5), KG(0, false, 4)},
        {"gate|up 4 pieces, 5 blocks", KG(1, false, 4), KG(0, false, 4), KGL(1, true, 4, 5), KG(0, false, 4)},
        {"narrow 4 warps", W(KG(1, false, 4), 4), W(KG(0, false, 4), 4), KG(1, true, 4), W(KG(0, false, 4), 4)},
        {"narrow 2 warps", W(KG(1, false, 4), 2), W(KG(0, false, 4), 2), KG(1, true, 4), W(KG(0, false, 4), 2)},
        {"down 8 pieces", KG(1, false, 4), KG(0, false, 4), KG(1, true, 4), KG(0, false, 8)},
        {"down 8 pieces, 4 warps", KG(1, false, 4), KG(0, false, 4), KG(1, true, 4), W(KG(0, false, 8), 4)},
        {"gate|up 2 pieces + narrow 4 warps", W(KG(1, false, 4), 4), W(KG(0, false, 4), 4), KG(1, true, 2), W(KG(0, false, 4), 4)},
        {"gate|up 2 pieces + narrow 4 warps + down 8 pieces", W(KG(1, false, 4), 4), W(KG(0, false, 4), 4), KG(1, true, 2), W(KG(0, false, 8), 4)},
        // split rows (KS warps a row; sums in another order: compared by max difference)
        {"down 2 warps a row", KG(1, false, 4), KG(0, false, 4), KG(1, true, 4), KGK(0, 4, 2)},
        {"down 4 warps a row", KG(1, false, 4), KG(0, false, 4), KG(1, true, 4), KGK(0, 4, 4)},
        {"down 4 warps a row, 5 pieces", KG(1, false, 4), KG(0, false, 4), KG(1, true, 4), KGK(0, 5, 4)},
        {"down 8 warps a row, 3 pieces", KG(1, false, 4), KG(0, false, 4), KG(1, true, 4), KGK(0, 3, 8)},
        {"down 8 warps a row", KG(1, false, 4), KG(0, false, 4), KG(1, true, 4), KGK(0, 4, 8)},
        {"down 16 warps a row, 2 pieces", KG(1, false, 4), KG(0, false, 4), KG(1, true, 4), W(KGK(0, 2, 16), 16)},
        {"q|k|v, o 2 warps a row", KGK(1, 4, 2), KGK(0, 4, 2), KG(1, true, 4), KGK(0, 4, 4)},
        {"gate|up 2 pieces + down 4 warps a row, 5 pieces", KG(1, false, 4), KG(0, false, 4), KG(1, true, 2), KGK(0, 5, 4)},
        {"gate|up 2 pieces + narrow 4 warps + down 4 warps a row, 5 pieces", W(KG(1, false, 4), 4), W(KG(0, false, 4), 4), KG(1, true, 2), KGK(0, 5, 4)},
    };
    const int NV = sizeof(vs) / sizeof(vs[0]);
    for (const Variant &v : vs)
        for (const G *g : {&v.qkv, &v.o, &v.gu, &v.down})
            CK(cudaFuncSetAttribute(g->f, cudaFuncAttributeMaxDynamicSharedMemorySize, 96 << 10));

    auto layers = [&](const Variant &v, cudaStream_t st, bool only_gu) {
        for (int l = 0; l < LAYERS; l++) {
            const bf *wq = w + per * l, *wo = wq + (size_t)Q * H, *wg = wo + (size_t)H * H,
                     *wd = wg + (size_t)2 * I * H;
            if (!only_gu) launch(v.qkv, Q, H, x, nw, wq, nullptr, qkv, st);
            if (!only_gu) launch(v.o, H, H, att, nw, wo, x, h1, st);
            launch(v.gu, I, H, only_gu ? x : h1, nw, wg, nullptr, act, st);
            if (!only_gu) launch(v.down, H, I, act, nw, wd, h1, y, st);
        }
    };
    std::vector<bf> ref_qkv(Q), ref_act(I), ref_y(H), got(I);
    double base = 0;
    for (int i = 0; i < NV; i++) {
        const Variant &v = vs[i];
        printf("== %s\n", v.name);
        describe(v.qkv, "q|k|v");
        describe(v.o, "o");
        describe(v.gu, "gu");
        describe(v.down, "down");
        CK(cudaMemset(qkv, 0, Q * sizeof(bf)));
        CK(cudaMemset(act, 0, I * sizeof(bf)));
        CK(cudaMemset(y, 0, H * sizeof(bf)));
        layers(v, 0, false);
        CK(cudaDeviceSynchronize());
        bool same = true;
        float diff = 0.f;
        auto check = [&](const bf *d, std::vector<bf> &ref, int n) {
            CK(cudaMemcpy(got.data(), d, n * sizeof(bf), cudaMemcpyDeviceToHost));
            if (i == 0) memcpy(ref.data(), got.data(), n * sizeof(bf));
            else same = same && memcmp(ref.data(), got.data(), n * sizeof(bf)) == 0;
            for (int j = 0; i > 0 && j < n; j++)
                diff = fmaxf(diff, fabsf(__bfloat162float(ref[j]) - __bfloat162float(got[j])));
        };
        check(qkv, ref_qkv, Q);
        check(act, ref_act, I);
        check(y, ref_y, H);
        const float us = graph_us([&](cudaStream_t st) { layers(v, st, false); }, 1);
        const float gu = graph_us([&](cudaStream_t st) { layers(v, st, true); }, 1);
        if (i == 0) base = us;
        printf("   %-52s %7.1f us for 24 layers (%5.2f a layer), %6.1f GB/s = %4.1f %% of copy; "
               "%.3fx node; gate|up alone %6.1f us (%5.1f GB/s); outputs %s (max diff %.3g)\n",
               v.name, us, us / LAYERS, bytes / (us * 1e-6) / 1e9,
               100.0 * bytes / (us * 1e-6) / 1e9 / gbs, base / us, gu,
               (double)2 * I * H * 2 * LAYERS / (gu * 1e-6) / 1e9,
               i == 0 ? "(reference)" : same ? "equal" : "differ", diff);
    }
    return 0;
}
