// CPU emulation of the CUDA execution model, enough to run Distillery's kernels with g++.
//
// Each CUDA thread of a block is an OS thread from a persistent pool; blocks run one at a time,
// so `__shared__` can be `static`. __syncthreads is a block-wide barrier (with a deadlock
// watchdog); warp shuffles meet per warp through an exchange array and the same barrier
// discipline, and check that the mask is the full warp. The only source change the kernels
// need is a launch macro (DISTILL_LAUNCH) in place of `__global__` + `<<<>>>`.
//
// Blind spots (see docs/CUDA-EMULATION.md): inter-block races, the GPU memory model, device
// math ulp differences, and performance.
#pragma once

#include <atomic>
#include <barrier>
#include <chrono>
#include <math.h>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define DISTILL_LAUNCH

struct EmuDim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace emu {
inline thread_local EmuDim3 thread_idx;
inline thread_local EmuDim3 block_idx;
inline EmuDim3 block_dim;
inline EmuDim3 grid_dim;

[[noreturn]] inline void fail(const char* what) {
    std::fprintf(stderr, "cuda-emu: %s\n", what);
    std::fflush(stderr);
    std::_Exit(3);
}

// A reusable barrier with a watchdog: a thread that waits longer than the limit means some
// thread of the block never reached this __syncthreads (divergent barrier): abort.
class Barrier {
  public:
    explicit Barrier(int n) : n_(n) {}
    void arrive_and_wait() {
        std::unique_lock<std::mutex> lock(m_);
        long gen = generation_;
        if (++count_ == n_) {
            count_ = 0;
            generation_++;
            cv_.notify_all();
            return;
        }
        if (!cv_.wait_for(lock, std::chrono::seconds(10), [&] { return generation_ != gen; })) {
            fail("__syncthreads deadlock: not every thread of the block reached the barrier");
        }
    }

  private:
    std::mutex m_;
    std::condition_variable cv_;
    int n_, count_ = 0;
    long generation_ = 0;
};

inline Barrier* block_barrier = nullptr;
inline std::vector<Barrier*> warp_barriers;
inline std::vector<float> shuffle_slots;  // one float per thread of the block

inline void launch(int grid, int block, const std::function<void()>& body) {
    if (block <= 0 || block > 1024 || block % 32 != 0) fail("block size must be a multiple of 32 in [32, 1024]");
    block_dim.x = block;
    grid_dim.x = grid;
    Barrier barrier(block);
    block_barrier = &barrier;
    int warps = block / 32;
    std::vector<Barrier> wbs;
    warp_barriers.clear();
    for (int w = 0; w < warps; w++) warp_barriers.push_back(new Barrier(32));
    shuffle_slots.assign(block, 0.f);
    for (int b = 0; b < grid; b++) {
        std::vector<std::thread> threads;
        threads.reserve(block);
        for (int t = 0; t < block; t++) {
            threads.emplace_back([&, t, b] {
                thread_idx.x = t;
                block_idx.x = b;
                body();
            });
        }
        for (auto& th : threads) th.join();
    }
    for (Barrier* w : warp_barriers) delete w;
    warp_barriers.clear();
    block_barrier = nullptr;
}
}  // namespace emu

#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)

inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask) {
    if (mask != 0xffffffffu) emu::fail("__shfl_xor_sync: only full-warp masks are emulated");
    int t = threadIdx.x, warp = t / 32, lane = t % 32;
    emu::Barrier* wb = emu::warp_barriers[warp];
    wb->arrive_and_wait();  // everyone's previous read of the slots is done
    emu::shuffle_slots[t] = v;
    wb->arrive_and_wait();  // everyone's value is written
    return emu::shuffle_slots[warp * 32 + (lane ^ lane_mask)];
}

inline float __expf(float x) { return std::exp(x); }

struct alignas(16) float4 {
    float x, y, z, w;
};
