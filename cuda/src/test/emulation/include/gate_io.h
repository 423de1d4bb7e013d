// Buffers for the emulation gates: guarded allocations (64-byte aligned, 0x7F red zones on both
// sides) and reads from the Java test's input file.
#pragma once

#include <cstdint>
#include <fstream>
#include <vector>

#include "cuda_emu.h"

namespace gate {

constexpr size_t RED = 64;
constexpr unsigned char RED_BYTE = 0x7F;  // finite as floats (no NaN to hide behind max-comparisons)

struct Guarded {
    std::vector<unsigned char> raw;
    size_t bytes;
    explicit Guarded(size_t n) : raw(n + 2 * RED + 64, RED_BYTE), bytes(n) {}
    unsigned char* data() {  // 64-byte aligned, RED bytes of guard before
        uintptr_t p = reinterpret_cast<uintptr_t>(raw.data()) + RED;
        return reinterpret_cast<unsigned char*>((p + 63) & ~uintptr_t(63));
    }
    bool intact() {
        unsigned char* d = data();
        for (size_t i = 1; i <= RED; i++) if (d[-(long)i] != RED_BYTE) return false;
        for (size_t i = 0; i < RED; i++) if (d[bytes + i] != RED_BYTE) return false;
        return true;
    }
};

template <typename T>
void read(std::ifstream& in, T* dst, size_t count) {
    in.read(reinterpret_cast<char*>(dst), sizeof(T) * count);
    if (!in) emu::fail("input file is shorter than its header says");
}

}  // namespace gate
