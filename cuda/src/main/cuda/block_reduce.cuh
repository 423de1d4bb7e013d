// Block-wide reductions shared by every kernel file: warp shuffles, then one float per warp in
// shared memory. `scratch` holds MAX_WARPS floats; every thread of the block gets the result.
#pragma once

#include <math_constants.h>

namespace blockreduce {

constexpr int MAX_WARPS = 32;

// float, and float64 for the sums a kernel keeps in double (the top-k rows' listed entries).
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T>
__device__ __forceinline__ T warp_max(T v) {
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block; every thread gets the result. `scratch` holds MAX_WARPS floats.
__device__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous reduction
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.f;
    return warp_sum(v);
}

__device__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : -CUDART_INF_F;
    return warp_max(v);
}

// (value, index) of the largest value, the smallest index on ties (NaN never wins); every thread
// gets the index. `values` and `indices` hold MAX_WARPS entries each.
__device__ __forceinline__ void better(float& v, int& i, float ov, int oi) {
    if (ov > v || (ov == v && oi < i)) {
        v = ov;
        i = oi;
    }
}

__device__ int block_argmax(float v, int i, float* values, int* indices) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    for (int o = 16; o > 0; o >>= 1) better(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
    __syncthreads();
    if (lane == 0) {
        values[warp] = v;
        indices[warp] = i;
    }
    __syncthreads();
    v = lane < warps ? values[lane] : -CUDART_INF_F;
    i = lane < warps ? indices[lane] : 0x7fffffff;
    for (int o = 16; o > 0; o >>= 1) better(v, i, __shfl_xor_sync(0xffffffffu, v, o), __shfl_xor_sync(0xffffffffu, i, o));
    return i;
}

}  // namespace blockreduce
