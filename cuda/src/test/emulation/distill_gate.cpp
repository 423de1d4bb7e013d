// Runs the CUDA distillation kernels under the CPU emulation (cuda_emu.h) on inputs written by
// the Java gate test, checks the 0x7F red zones around every buffer, and writes the outputs.
//
//   distill_gate <in.bin> <out.bin>
//
// in.bin, little-endian: int32 kind (0 dense, 1 sampled, 2 top-k), dtype (0 f32, 1 f16, 2 bf16), n,
// V, Vt, samples (or k), divergence, has_labels, in_place, block; float32 temperature, alpha, beta,
// divergence_scale, grad_t_factor, grad_scale; int32 ignore_index; float32 shard_t; int32 topk mode;
// then s (n·V f32), the teacher (dense: n·Vt of dtype; sampled: ids n·samples int32, weights
// n·samples f32; top-k: ids n·k int32, logits n·k of dtype, logsumexp n f32), labels (n int32).
// out.bin: g (n·V f32), row_ce (n f32), row_div (n f32).
#include "cuda_emu.h"
#include "gate_io.h"
#include "../../main/cuda/distill_loss.cu"

#include <fstream>
#include <memory>
#include <string>

using gate::Guarded;
using gate::read;

int main(int argc, char** argv) {
    if (argc != 3) emu::fail("usage: distill_gate <in.bin> <out.bin>");
    std::ifstream in(argv[1], std::ios::binary);
    int32_t h[10];
    read(in, h, 10);
    const int kind = h[0], dtype = h[1], n = h[2], V = h[3], Vt = h[4], samples = h[5], divergence = h[6],
              has_labels = h[7], in_place = h[8], block = h[9];
    float f[6];
    read(in, f, 6);
    int32_t ignore, mode;
    float shard_t;
    read(in, &ignore, 1);
    read(in, &shard_t, 1);
    read(in, &mode, 1);
    distill::Params p{f[0], f[1], divergence, f[2], f[3], f[4], f[5], ignore};

    Guarded s(4ull * n * V), g(4ull * n * V), ce(4ull * n), div(4ull * n), labels(4ull * n);
    read(in, reinterpret_cast<float*>(s.data()), (size_t)n * V);
    const int elem = dtype == 0 ? 4 : 2;
    Guarded teacher(kind == 0 ? (size_t)elem * n * Vt : 4ull * n * samples), weights(4ull * n * samples),
        top_logits(kind == 2 ? (size_t)elem * n * samples : 4), lse(4ull * n);
    if (kind == 0) {
        read(in, reinterpret_cast<char*>(teacher.data()), (size_t)elem * n * Vt);
    } else if (kind == 2) {
        read(in, reinterpret_cast<int32_t*>(teacher.data()), (size_t)n * samples);
        read(in, reinterpret_cast<char*>(top_logits.data()), (size_t)elem * n * samples);
        read(in, reinterpret_cast<float*>(lse.data()), (size_t)n);
    } else {
        read(in, reinterpret_cast<int32_t*>(teacher.data()), (size_t)n * samples);
        read(in, reinterpret_cast<float*>(weights.data()), (size_t)n * samples);
    }
    read(in, reinterpret_cast<int32_t*>(labels.data()), (size_t)n);

    float* sp = reinterpret_cast<float*>(s.data());
    float* gp = in_place ? sp : reinterpret_cast<float*>(g.data());
    const int* lp = has_labels ? reinterpret_cast<const int*>(labels.data()) : nullptr;
    float* cep = reinterpret_cast<float*>(ce.data());
    float* dvp = reinterpret_cast<float*>(div.data());
    emu::launch(n, block, [&] {
        const int* ids = reinterpret_cast<const int*>(teacher.data());
        const float* lsep = reinterpret_cast<const float*>(lse.data());
        if (kind == 2 && dtype == 0) {
            distill_topk_f32(sp, gp, ids, reinterpret_cast<const float*>(top_logits.data()), lsep, lp, cep, dvp, n, V, Vt,
                             samples, shard_t, mode, p);
        } else if (kind == 2 && dtype == 1) {
            distill_topk_f16(sp, gp, ids, reinterpret_cast<const __half*>(top_logits.data()), lsep, lp, cep, dvp, n, V, Vt,
                             samples, shard_t, mode, p);
        } else if (kind == 2) {
            distill_topk_bf16(sp, gp, ids, reinterpret_cast<const __nv_bfloat16*>(top_logits.data()), lsep, lp, cep, dvp, n,
                              V, Vt, samples, shard_t, mode, p);
        } else if (kind == 1) {
            distill_sampled(sp, gp, reinterpret_cast<const int*>(teacher.data()),
                            reinterpret_cast<const float*>(weights.data()), lp, cep, dvp, n, V, samples, p);
        } else if (dtype == 0) {
            distill_dense_f32(sp, gp, reinterpret_cast<const float*>(teacher.data()), lp, cep, dvp, n, V, Vt, p);
        } else if (dtype == 1) {
            distill_dense_f16(sp, gp, reinterpret_cast<const __half*>(teacher.data()), lp, cep, dvp, n, V, Vt, p);
        } else {
            distill_dense_bf16(sp, gp, reinterpret_cast<const __nv_bfloat16*>(teacher.data()), lp, cep, dvp, n, V, Vt, p);
        }
    });
    const char* names[] = {"student", "gradient", "row_ce", "row_div", "labels", "teacher", "weights", "top-k logits",
                           "logsumexp"};
    Guarded* all[] = {&s, &g, &ce, &div, &labels, &teacher, &weights, &top_logits, &lse};
    for (int i = 0; i < 9; i++) {
        if (!all[i]->intact()) {
            std::fprintf(stderr, "cuda-emu: red zone around %s overwritten\n", names[i]);
            return 4;
        }
    }
    std::ofstream out(argv[2], std::ios::binary);
    out.write(reinterpret_cast<const char*>(gp), 4ull * n * V);
    out.write(reinterpret_cast<const char*>(cep), 4ull * n);
    out.write(reinterpret_cast<const char*>(dvp), 4ull * n);
    return out ? 0 : 5;
}
