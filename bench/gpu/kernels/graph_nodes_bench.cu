// What the nodes between a decode graph's kernels cost (issue 17): a graph of N small
// kernels in a chain, replayed, against the same chain with a stream-ordered allocation
// before each kernel and a free after it (what candle's allocator records when a step is
// captured: alloc and free nodes between the kernels), and against the bare chain with
// programmatic dependent launch (the kernel triggers its successor, then waits on it).
//   nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/gnb bench/gpu/kernels/graph_nodes_bench.cu
//   /tmp/gnb [N] [BLOCKS]     (N kernels, default 150; BLOCKS per kernel, default 132)
#include <cstdio>
#include <cstdlib>

#include "bench_util.cuh"

__global__ void tiny(float *p, int pdl) {
    if (pdl) {
        asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
        asm volatile("griddepcontrol.wait;" ::: "memory");
    }
    if (threadIdx.x == 0) p[blockIdx.x] += 1.f;
}

static void launch(float *p, int blocks, bool pdl, cudaStream_t s) {
    cudaLaunchConfig_t c = {};
    c.gridDim = dim3(blocks);
    c.blockDim = dim3(128);
    c.stream = s;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    c.attrs = at;
    c.numAttrs = pdl ? 1 : 0;
    CK(cudaLaunchKernelEx(&c, tiny, p, pdl ? 1 : 0));
}

// mode 0: bare chain; 1: alloc + kernel + free per kernel; 2: bare chain with PDL;
// 3: alloc before, free after, and PDL launches (what the capture gives with PDL on)
static float run(int mode, int n, int blocks, float *buf, cudaStream_t s) {
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
    for (int i = 0; i < n; i++) {
        if (mode == 1 || mode == 3) {
            float *q;
            CK(cudaMallocAsync(&q, 4096 * sizeof(float), s));
            launch(q, blocks, mode == 3, s);
            CK(cudaFreeAsync(q, s));
        } else {
            launch(buf, blocks, mode == 2, s);
        }
    }
    CK(cudaStreamEndCapture(s, &g));
    size_t nodes = 0;
    CK(cudaGraphGetNodes(g, nullptr, &nodes));
    CK(cudaGraphInstantiate(&ge, g, 0));
    const int reps = 50;
    const float ms = replay_ms(ge, s, 3, reps);
    const float us = ms * 1e3f / reps / n;
    printf("mode %d (%s): %zu nodes, %.3f us per kernel\n", mode,
           mode == 0 ? "kernels only" : mode == 1 ? "alloc + kernel + free" : mode == 2 ? "kernels, PDL" : "alloc + kernel + free, PDL",
           nodes, us);
    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    return us;
}

int main(int argc, char **argv) {
    const int n = argc > 1 ? atoi(argv[1]) : 150, blocks = argc > 2 ? atoi(argv[2]) : 132;
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    float *buf;
    CK(cudaMalloc(&buf, 4096 * sizeof(float)));
    for (int r = 0; r < 2; r++)
        for (int mode = 0; mode < 4; mode++) run(mode, n, blocks, buf, s);
    return 0;
}
