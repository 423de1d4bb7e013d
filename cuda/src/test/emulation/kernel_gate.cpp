// Runs one kernel of the registry (cuda/src/main/cuda/kernels.def) under the CPU emulation
// (cuda_emu.h) on arguments written by a Java gate test (kernels/.../cuda/GateCall.java), checks
// the 0x7F red zones around every buffer, and writes every buffer back. Built plain and under
// AddressSanitizer + UBSan and ThreadSanitizer by the tests.
//
//   kernel_gate <in.bin> <out.bin>
//
// in.bin, little-endian: int32 name length, the kernel's name; int32 grid, int32 block; int32
// argument count; per argument an int32 tag and its value:
//   0 buffer: int64 bytes, then the bytes (its own guarded allocation)
//   1 alias: int32 the index of an earlier buffer argument (the same pointer: a gradient in place)
//   2 null pointer
//   3 int32   4 int64   5 float32
//   6 struct: int32 bytes, then the bytes (passed by value)
// out.bin: the bytes of every buffer argument after the launch, in argument order.
#include "kernel_table.h"
#include "gate_io.h"

#include <fstream>
#include <memory>
#include <string>
#include <vector>

using gate::Guarded;
using gate::read;

int main(int argc, char** argv) {
    if (argc != 3) emu::fail("usage: kernel_gate <in.bin> <out.bin>");
    std::ifstream in(argv[1], std::ios::binary);
    int32_t length, grid, block, count;
    read(in, &length, 1);
    std::string name(length, '\0');
    read(in, name.data(), length);
    read(in, &grid, 1);
    read(in, &block, 1);
    read(in, &count, 1);
    const registry::Kernel* kernel = registry::find(name.c_str());
    if (kernel == nullptr) {
        std::fprintf(stderr, "cuda-emu: no kernel named %s in kernels.def\n", name.c_str());
        return 6;
    }
    if (count != static_cast<int32_t>(kernel->signature.size())) {
        std::fprintf(stderr, "cuda-emu: %s takes %zu arguments (%s), got %d\n", name.c_str(), kernel->signature.size(),
                     kernel->signature.c_str(), count);
        return 7;
    }
    // values[i] holds argument i (a pointer, a number or a struct's bytes); args[i] points at it
    std::vector<std::unique_ptr<Guarded>> buffers(count);
    std::vector<std::vector<unsigned char>> values(count, std::vector<unsigned char>(8));
    std::vector<void*> args(count);
    for (int i = 0; i < count; i++) {
        int32_t tag;
        read(in, &tag, 1);
        const char expected = kernel->signature[i];
        const char given = tag <= 2 ? 'p' : tag == 3 ? 'i' : tag == 4 ? 'l' : tag == 5 ? 'f' : 's';
        if (given != expected) {
            std::fprintf(stderr, "cuda-emu: %s argument %d is '%c' (%s), the input gives '%c'\n", name.c_str(), i, expected,
                         kernel->signature.c_str(), given);
            return 7;
        }
        void* pointer = nullptr;
        if (tag == 0) {
            int64_t bytes;
            read(in, &bytes, 1);
            buffers[i] = std::make_unique<Guarded>(static_cast<size_t>(bytes));
            read(in, reinterpret_cast<char*>(buffers[i]->data()), static_cast<size_t>(bytes));
            pointer = buffers[i]->data();
        } else if (tag == 1) {
            int32_t of;
            read(in, &of, 1);
            if (of < 0 || of >= i || !buffers[of]) emu::fail("an alias names no earlier buffer argument");
            pointer = buffers[of]->data();
        } else if (tag == 3) {
            read(in, reinterpret_cast<int32_t*>(values[i].data()), 1);
        } else if (tag == 4) {
            read(in, reinterpret_cast<int64_t*>(values[i].data()), 1);
        } else if (tag == 5) {
            read(in, reinterpret_cast<float*>(values[i].data()), 1);
        } else if (tag == 6) {
            int32_t bytes;
            read(in, &bytes, 1);
            values[i].assign(static_cast<size_t>(bytes) + 16, 0);
            read(in, reinterpret_cast<char*>(values[i].data()), static_cast<size_t>(bytes));
        }
        if (tag <= 2) std::memcpy(values[i].data(), &pointer, sizeof pointer);
        args[i] = values[i].data();
    }
    kernel->launch(grid, block, args.data());
    for (int i = 0; i < count; i++) {
        if (buffers[i] && !buffers[i]->intact()) {
            std::fprintf(stderr, "cuda-emu: %s wrote into the red zone around argument %d\n", name.c_str(), i);
            return 4;
        }
    }
    std::ofstream out(argv[2], std::ios::binary);
    for (auto& b : buffers) {
        if (b) out.write(reinterpret_cast<const char*>(b->data()), static_cast<std::streamsize>(b->bytes));
    }
    return out ? 0 : 5;
}
