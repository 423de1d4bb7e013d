// Emulation stand-in for CUDA's cuda_fp16.h: storage and conversion to float only.
#pragma once
#include <cstdint>
#include <cstring>
struct __half {
    uint16_t x;
};
inline float __half2float(__half h) {
    uint32_t sign = (h.x & 0x8000u) << 16, exp = (h.x >> 10) & 0x1f, mant = h.x & 0x3ffu, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else {  // subnormal: normalize
            int e = -1;
            do { e++; mant <<= 1; } while ((mant & 0x400u) == 0);
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}
