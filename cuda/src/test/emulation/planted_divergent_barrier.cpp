// A planted bug for the emulator's own test: half of each block waits at one __syncthreads and
// half at another (undefined behaviour on a GPU, where it may hang or silently mis-synchronise).
// cuda_emu.h must abort, naming both call sites. Run with "uniform" to take one barrier only
// (the control: it must finish cleanly).
#include "cuda_emu.h"

#include <cstring>

static float out[64];

static void divergent(bool uniform) {
    int t = threadIdx.x;
    if (uniform || t < 16) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    out[t] = static_cast<float>(t);
}

int main(int argc, char** argv) {
    bool uniform = argc > 1 && std::strcmp(argv[1], "uniform") == 0;
    emu::launch(2, 64, [&] { divergent(uniform); });
    std::printf("finished\n");
    return 0;
}
