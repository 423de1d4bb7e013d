// The CUDA backend's device, emulated on the CPU as a shared library for CudaKernelsEmulationTest:
// every kernel of the fatbin (both .cu files, unchanged) launched by name under cuda_emu.h, and a
// column-major SGEMM with cuBLAS's contract (C is not read when beta == 0). Device pointers are
// host pointers here, so the Java side's CudaKernels runs its real launch path against it.
//
//   g++ -std=c++20 -O2 -pthread -shared -fPIC -I include emu_device.cpp -o libdistillery_emu.so
#include "cuda_emu.h"
#include "../../main/cuda/distill_loss.cu"
#include "../../main/cuda/transformer_ops.cu"

#include <cstring>

#define ARG(T, i) (*reinterpret_cast<T*>(args[i]))

extern "C" {

// Returns 0, or 1 for an unknown kernel name.
int emu_launch(const char* name, int grid, int block, void** args) {
    auto is = [&](const char* k) { return std::strcmp(name, k) == 0; };
    using P = distill::Params;
    if (is("ops_embedding_forward")) emu::launch(grid, block, [&] { ops_embedding_forward(ARG(float*, 0), ARG(const int*, 1), ARG(const float*, 2), ARG(const float*, 3), ARG(int, 4), ARG(int, 5), ARG(int, 6)); });
    else if (is("ops_embedding_backward")) emu::launch(grid, block, [&] { ops_embedding_backward(ARG(float*, 0), ARG(float*, 1), ARG(const float*, 2), ARG(const int*, 3), ARG(int, 4), ARG(int, 5), ARG(int, 6)); });
    else if (is("ops_layernorm_forward")) emu::launch(grid, block, [&] { ops_layernorm_forward(ARG(float*, 0), ARG(float*, 1), ARG(float*, 2), ARG(const float*, 3), ARG(const float*, 4), ARG(const float*, 5), ARG(int, 6), ARG(int, 7)); });
    else if (is("ops_layernorm_backward_input")) emu::launch(grid, block, [&] { ops_layernorm_backward_input(ARG(float*, 0), ARG(const float*, 1), ARG(const float*, 2), ARG(const float*, 3), ARG(const float*, 4), ARG(const float*, 5), ARG(int, 6), ARG(int, 7)); });
    else if (is("ops_layernorm_backward_params")) emu::launch(grid, block, [&] { ops_layernorm_backward_params(ARG(float*, 0), ARG(float*, 1), ARG(const float*, 2), ARG(const float*, 3), ARG(const float*, 4), ARG(const float*, 5), ARG(int, 6), ARG(int, 7)); });
    else if (is("ops_gelu_forward")) emu::launch(grid, block, [&] { ops_gelu_forward(ARG(float*, 0), ARG(const float*, 1), ARG(long, 2)); });
    else if (is("ops_gelu_backward")) emu::launch(grid, block, [&] { ops_gelu_backward(ARG(float*, 0), ARG(const float*, 1), ARG(const float*, 2), ARG(long, 3)); });
    else if (is("ops_residual_forward")) emu::launch(grid, block, [&] { ops_residual_forward(ARG(float*, 0), ARG(const float*, 1), ARG(const float*, 2), ARG(long, 3)); });
    else if (is("ops_accumulate")) emu::launch(grid, block, [&] { ops_accumulate(ARG(float*, 0), ARG(const float*, 1), ARG(long, 2)); });
    else if (is("ops_scale")) emu::launch(grid, block, [&] { ops_scale(ARG(float*, 0), ARG(float, 1), ARG(long, 2)); });
    else if (is("ops_fill")) emu::launch(grid, block, [&] { ops_fill(ARG(float*, 0), ARG(float, 1), ARG(long, 2)); });
    else if (is("ops_broadcast_rows")) emu::launch(grid, block, [&] { ops_broadcast_rows(ARG(float*, 0), ARG(const float*, 1), ARG(int, 2), ARG(int, 3)); });
    else if (is("ops_sum_rows")) emu::launch(grid, block, [&] { ops_sum_rows(ARG(float*, 0), ARG(const float*, 1), ARG(int, 2), ARG(int, 3)); });
    else if (is("ops_softmax_cross_entropy")) emu::launch(grid, block, [&] { ops_softmax_cross_entropy(ARG(float*, 0), ARG(float*, 1), ARG(const int*, 2), ARG(int, 3), ARG(int, 4), ARG(int, 5), ARG(int, 6), ARG(float, 7)); });
    else if (is("ops_adamw")) emu::launch(grid, block, [&] { ops_adamw(ARG(float*, 0), ARG(const float*, 1), ARG(float*, 2), ARG(float*, 3), ARG(long, 4), ARG(float, 5), ARG(float, 6), ARG(float, 7), ARG(float, 8), ARG(float, 9), ARG(int, 10)); });
    else if (is("ops_sum_of_squares")) emu::launch(grid, block, [&] { ops_sum_of_squares(ARG(float*, 0), ARG(const float*, 1), ARG(long, 2)); });
    else if (is("ops_attention_softmax_forward")) emu::launch(grid, block, [&] { ops_attention_softmax_forward(ARG(float*, 0), ARG(const float*, 1), ARG(int, 2), ARG(int, 3), ARG(float, 4)); });
    else if (is("ops_attention_softmax_backward")) emu::launch(grid, block, [&] { ops_attention_softmax_backward(ARG(float*, 0), ARG(const float*, 1), ARG(const float*, 2), ARG(int, 3), ARG(int, 4), ARG(float, 5)); });
    else if (is("distill_dense_f32")) emu::launch(grid, block, [&] { distill_dense_f32(ARG(const float*, 0), ARG(float*, 1), ARG(const float*, 2), ARG(const int*, 3), ARG(float*, 4), ARG(float*, 5), ARG(int, 6), ARG(int, 7), ARG(int, 8), ARG(P, 9)); });
    else if (is("distill_dense_f16")) emu::launch(grid, block, [&] { distill_dense_f16(ARG(const float*, 0), ARG(float*, 1), ARG(const __half*, 2), ARG(const int*, 3), ARG(float*, 4), ARG(float*, 5), ARG(int, 6), ARG(int, 7), ARG(int, 8), ARG(P, 9)); });
    else if (is("distill_dense_bf16")) emu::launch(grid, block, [&] { distill_dense_bf16(ARG(const float*, 0), ARG(float*, 1), ARG(const __nv_bfloat16*, 2), ARG(const int*, 3), ARG(float*, 4), ARG(float*, 5), ARG(int, 6), ARG(int, 7), ARG(int, 8), ARG(P, 9)); });
    else if (is("distill_topk_f32")) emu::launch(grid, block, [&] { distill_topk_f32(ARG(const float*, 0), ARG(float*, 1), ARG(const int*, 2), ARG(const float*, 3), ARG(const float*, 4), ARG(const int*, 5), ARG(float*, 6), ARG(float*, 7), ARG(int, 8), ARG(int, 9), ARG(int, 10), ARG(int, 11), ARG(float, 12), ARG(int, 13), ARG(P, 14)); });
    else if (is("distill_topk_f16")) emu::launch(grid, block, [&] { distill_topk_f16(ARG(const float*, 0), ARG(float*, 1), ARG(const int*, 2), ARG(const __half*, 3), ARG(const float*, 4), ARG(const int*, 5), ARG(float*, 6), ARG(float*, 7), ARG(int, 8), ARG(int, 9), ARG(int, 10), ARG(int, 11), ARG(float, 12), ARG(int, 13), ARG(P, 14)); });
    else if (is("distill_topk_bf16")) emu::launch(grid, block, [&] { distill_topk_bf16(ARG(const float*, 0), ARG(float*, 1), ARG(const int*, 2), ARG(const __nv_bfloat16*, 3), ARG(const float*, 4), ARG(const int*, 5), ARG(float*, 6), ARG(float*, 7), ARG(int, 8), ARG(int, 9), ARG(int, 10), ARG(int, 11), ARG(float, 12), ARG(int, 13), ARG(P, 14)); });
    else if (is("distill_sampled")) emu::launch(grid, block, [&] { distill_sampled(ARG(const float*, 0), ARG(float*, 1), ARG(const int*, 2), ARG(const float*, 3), ARG(const int*, 4), ARG(float*, 5), ARG(float*, 6), ARG(int, 7), ARG(int, 8), ARG(int, 9), ARG(P, 10)); });
    else return 1;
    return 0;
}

// Column-major C (m, n) = alpha op(A) op(B) + beta C, cublasSgemm's contract.
void emu_sgemm_strided(int ta, int tb, int m, int n, int k, float alpha, const float* A, int lda, long sa, const float* B, int ldb,
                       long sb, float beta, float* C, int ldc, long sc, int batch) {
    for (int q = 0; q < batch; q++) {
        const float* a = A + q * sa;
        const float* b = B + q * sb;
        float* c = C + q * sc;
        for (int j = 0; j < n; j++) {
            for (int i = 0; i < m; i++) {
                float acc = 0.f;
                for (int l = 0; l < k; l++) {
                    float x = ta ? a[l + (long)i * lda] : a[i + (long)l * lda];
                    float y = tb ? b[j + (long)l * ldb] : b[l + (long)j * ldb];
                    acc += x * y;
                }
                float& out = c[i + (long)j * ldc];
                out = beta == 0.f ? alpha * acc : alpha * acc + beta * out;
            }
        }
    }
}

}  // extern "C"
