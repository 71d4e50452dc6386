// Shared by the kernel benchmarks of this folder: the error check, bf16 random fill, the
// device's copy bandwidth (the limit every figure is a ratio of), and timing a captured
// graph's replays.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#define CK(x)                                                                                 \
    do {                                                                                      \
        cudaError_t e = (x);                                                                  \
        if (e != cudaSuccess) {                                                               \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

typedef __nv_bfloat16 bf;

// p[i] = uniform in [-scale / 2, scale / 2), a hash of (i, seed).
__global__ void fill_rand(bf *p, size_t n, uint32_t seed, float scale) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ seed;
        h ^= h >> 13;
        h *= 0x5bd1e995u;
        h ^= h >> 15;
        p[i] = __float2bfloat16(((h & 0xffff) / 65535.f - 0.5f) * scale);
    }
}

// Device-to-device copy bandwidth in GB/s (bytes read + written; 10 copies of 1 GiB),
// printed as "d2d copy: ... GB/s (read + write)".
static double copy_bandwidth_gbs() {
    void *src, *dst;
    const size_t n = (size_t)1 << 30;
    CK(cudaMalloc(&src, n));
    CK(cudaMalloc(&dst, n));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    CK(cudaMemcpy(dst, src, n, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e0));
    for (int i = 0; i < 10; i++) CK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    const double gbs = 2.0 * n * 10 / (ms * 1e-3) / 1e9;
    printf("d2d copy: %.1f GB/s (read + write)\n", gbs);
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    CK(cudaFree(src));
    CK(cudaFree(dst));
    return gbs;
}

// Milliseconds of `reps` replays of `ge` on `st` back to back, after `warm` warm-ups.
static float replay_ms(cudaGraphExec_t ge, cudaStream_t st, int warm, int reps) {
    for (int i = 0; i < warm; i++) CK(cudaGraphLaunch(ge, st));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    CK(cudaEventRecord(e0, st));
    for (int i = 0; i < reps; i++) CK(cudaGraphLaunch(ge, st));
    CK(cudaEventRecord(e1, st));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    CK(cudaEventDestroy(e0));
    CK(cudaEventDestroy(e1));
    return ms;
}

// Microseconds per kernel of the work `enqueue(stream)` records (`launches` kernels):
// captured once as a CUDA graph, replayed 20 times after 3 warm-ups.
template <typename F> static float graph_us(F enqueue, int launches) {
    cudaStream_t st;
    CK(cudaStreamCreate(&st));
    cudaGraph_t g;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeRelaxed));
    enqueue(st);
    CK(cudaStreamEndCapture(st, &g));
    cudaGraphExec_t ge;
    CK(cudaGraphInstantiate(&ge, g, 0));
    const int R = 20;
    const float ms = replay_ms(ge, st, 3, R);
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    CK(cudaStreamDestroy(st));
    return ms * 1000.f / (R * launches);
}
