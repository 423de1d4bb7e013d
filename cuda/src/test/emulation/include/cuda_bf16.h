// Emulation stand-in for CUDA's cuda_bf16.h: storage and conversion to float only.
#pragma once
#include <cstdint>
#include <cstring>
struct __nv_bfloat16 {
    uint16_t x;
};
inline float __bfloat162float(__nv_bfloat16 h) {
    uint32_t bits = (uint32_t)h.x << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
