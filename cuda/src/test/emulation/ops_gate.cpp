// Runs one kernel of transformer_ops.cu under the CPU emulation (cuda_emu.h) on buffers written by
// the Java gate test (kernels/.../cuda/CudaOpsEmulationTest), checks the 0x7F red zones around
// every buffer, and writes every buffer back.
//
//   ops_gate <in.bin> <out.bin>
//
// in.bin, little-endian: int32 op, int32 ni, int32 ints[ni] (ints[0] = grid, ints[1] = block, then
// the op's sizes), int32 nf, float32 floats[nf], int32 nb, then nb buffers: int32 type (0 f32,
// 1 i32), int64 count, count × 4 bytes. out.bin: the nb buffers' bytes, in order.
#include "cuda_emu.h"
#include "gate_io.h"
#include "../../main/cuda/transformer_ops.cu"

#include <fstream>
#include <memory>
#include <vector>

using gate::Guarded;
using gate::read;

int main(int argc, char** argv) {
    if (argc != 3) emu::fail("usage: ops_gate <in.bin> <out.bin>");
    std::ifstream in(argv[1], std::ios::binary);
    int32_t op, ni, nf, nb;
    read(in, &op, 1);
    read(in, &ni, 1);
    std::vector<int32_t> I(ni);
    read(in, I.data(), ni);
    read(in, &nf, 1);
    std::vector<float> F(nf + 1);
    read(in, F.data(), nf);
    read(in, &nb, 1);
    std::vector<std::unique_ptr<Guarded>> bufs;
    for (int b = 0; b < nb; b++) {
        int32_t type;
        int64_t count;
        read(in, &type, 1);
        read(in, &count, 1);
        bufs.push_back(std::make_unique<Guarded>(4 * (size_t)count));
        read(in, reinterpret_cast<char*>(bufs.back()->data()), 4 * (size_t)count);
    }
    auto f = [&](int i) { return reinterpret_cast<float*>(bufs.at(i)->data()); };
    auto n = [&](int i) { return reinterpret_cast<int*>(bufs.at(i)->data()); };
    const int grid = I.at(0), block = I.at(1);
    switch (op) {
        case 0: emu::launch(grid, block, [&] { ops_embedding_forward(f(0), n(1), f(2), f(3), I[2], I[3], I[4]); }); break;
        case 1: emu::launch(grid, block, [&] { ops_embedding_backward(f(0), f(1), f(2), n(3), I[2], I[3], I[4]); }); break;
        case 2: emu::launch(grid, block, [&] { ops_layernorm_forward(f(0), f(1), f(2), f(3), f(4), f(5), I[2], I[3]); }); break;
        case 3:
            emu::launch(I[2], block, [&] { ops_layernorm_backward_input(f(0), f(3), f(4), f(5), f(6), f(7), I[2], I[3]); });
            emu::launch(grid, block, [&] { ops_layernorm_backward_params(f(1), f(2), f(3), f(4), f(6), f(7), I[2], I[3]); });
            break;
        case 4: emu::launch(grid, block, [&] { ops_gelu_forward(f(0), f(1), I[2]); }); break;
        case 5: emu::launch(grid, block, [&] { ops_gelu_backward(f(0), f(1), f(2), I[2]); }); break;
        case 6: emu::launch(grid, block, [&] { ops_residual_forward(f(0), f(1), f(2), I[2]); }); break;
        case 7: emu::launch(grid, block, [&] { ops_accumulate(f(0), f(1), I[2]); }); break;
        case 8: emu::launch(grid, block, [&] { ops_broadcast_rows(f(0), f(1), I[2], I[3]); }); break;
        case 9: emu::launch(grid, block, [&] { ops_sum_rows(f(0), f(1), I[2], I[3]); }); break;
        case 10:
            emu::launch(grid, block, [&] { ops_softmax_cross_entropy(f(0), f(1), n(2), I[2], I[3], I[4], I[5], F[0]); });
            break;
        case 11:
            emu::launch(grid, block, [&] { ops_adamw(f(0), f(1), f(2), f(3), I[2], F[0], F[1], F[2], F[3], F[4], I[3]); });
            break;
        case 12: emu::launch(grid, block, [&] { ops_sum_of_squares(f(0), f(1), I[2]); }); break;
        case 13: emu::launch(grid, block, [&] { ops_attention_softmax_forward(f(0), f(1), I[2], I[3], F[0]); }); break;
        case 14: emu::launch(grid, block, [&] { ops_attention_softmax_backward(f(0), f(1), f(2), I[2], I[3], F[0]); }); break;
        case 15: emu::launch(grid, block, [&] { ops_scale(f(0), F[0], I[2]); }); break;
        case 16: emu::launch(grid, block, [&] { ops_fill(f(0), F[0], I[2]); }); break;
        default: emu::fail("unknown op");
    }
    for (int b = 0; b < nb; b++) {
        if (!bufs[b]->intact()) {
            std::fprintf(stderr, "cuda-emu: red zone around buffer %d overwritten\n", b);
            return 4;
        }
    }
    std::ofstream out(argv[2], std::ios::binary);
    for (auto& b : bufs) out.write(reinterpret_cast<const char*>(b->data()), b->bytes);
    return out ? 0 : 5;
}
