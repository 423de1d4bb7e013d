// The CUDA backend's device, emulated on the CPU as a shared library for the tests that run
// CudaKernels without a GPU (EmulatedCudaBackend): every kernel of the registry
// (cuda/src/main/cuda/kernels.def, both .cu files unchanged) launched by name under cuda_emu.h,
// and a column-major SGEMM with cuBLAS's contract (C is not read when beta == 0). Device pointers
// are host pointers here, so the Java side's CudaKernels runs its real launch path against it.
//
//   g++ -std=c++20 -O2 -pthread -shared -fPIC -DEMU_FIBERS -I include emu_device.cpp -o libdistillery_emu.so
#include "kernel_table.h"

#include <cstring>

// Column-major C (m, n) = alpha op(A) op(B) + beta C over `batch` matrices at element strides, each
// element of A and B through `widen` to float, fp32 sums: cuBLAS's contract (C is not read when
// beta == 0).
template <typename T, typename Widen>
static void gemm_strided(int ta, int tb, int m, int n, int k, float alpha, const T* A, int lda, long sa, const T* B, int ldb,
                         long sb, float beta, float* C, int ldc, long sc, int batch, Widen widen) {
    for (int q = 0; q < batch; q++) {
        const T* a = A + q * sa;
        const T* b = B + q * sb;
        float* c = C + q * sc;
        for (int j = 0; j < n; j++) {
            for (int i = 0; i < m; i++) {
                float acc = 0.f;
                for (int l = 0; l < k; l++) {
                    float x = widen(ta ? a[l + (long)i * lda] : a[i + (long)l * lda]);
                    float y = widen(tb ? b[j + (long)l * ldb] : b[l + (long)j * ldb]);
                    acc += x * y;
                }
                float& out = c[i + (long)j * ldc];
                out = beta == 0.f ? alpha * acc : alpha * acc + beta * out;
            }
        }
    }
}

extern "C" {

// Returns 0, or 1 for an unknown kernel name.
int emu_launch(const char* name, int grid, int block, void** args) {
    const registry::Kernel* k = registry::find(name);
    if (k == nullptr) return 1;
    k->launch(grid, block, args);
    return 0;
}

// The argument kinds of the kernel `name` (p pointer, i int, l long, f float, s struct) into out
// (capacity bytes, NUL-terminated); returns 0, or 1 for an unknown name.
int emu_signature(const char* name, char* out, int capacity) {
    const registry::Kernel* k = registry::find(name);
    if (k == nullptr || capacity < 1) return 1;
    std::strncpy(out, k->signature.c_str(), capacity - 1);
    out[capacity - 1] = 0;
    return 0;
}

// The number of kernels in the registry, and the name of the i-th.
int emu_kernel_count() { return static_cast<int>(registry::kernels().size()); }

const char* emu_kernel_name(int i) { return registry::kernels().at(i).name; }

// cublasSgemmStridedBatched.
void emu_sgemm_strided(int ta, int tb, int m, int n, int k, float alpha, const float* A, int lda, long sa, const float* B, int ldb,
                       long sb, float beta, float* C, int ldc, long sc, int batch) {
    gemm_strided(ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch, [](float x) { return x; });
}

// cublasGemmStridedBatchedEx with CUDA_R_16BF inputs, CUDA_R_32F output, CUBLAS_COMPUTE_32F: each
// bf16 widened exactly.
void emu_gemm_bf16_strided(int ta, int tb, int m, int n, int k, float alpha, const uint16_t* A, int lda, long sa,
                           const uint16_t* B, int ldb, long sb, float beta, float* C, int ldc, long sc, int batch) {
    gemm_strided(ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch, [](uint16_t h) {
        uint32_t u = (uint32_t)h << 16;
        float x;
        memcpy(&x, &u, 4);
        return x;
    });
}

}  // extern "C"
