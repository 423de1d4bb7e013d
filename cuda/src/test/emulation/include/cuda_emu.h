// CPU emulation of the CUDA execution model, enough to run Distillery's kernels with g++.
//
// Each CUDA thread of a block is an OS thread, created once per launch and reused for every
// block; blocks run one at a time, so `__shared__` can be `static`. __syncthreads is a
// block-wide barrier with a deadlock watchdog and a same-call-site check (every thread of a
// block must reach the same __syncthreads, file and line, or the run aborts naming both); warp
// shuffles meet per warp through an exchange array and the same barrier discipline, and check
// that the mask is the full warp. The only source change the kernels
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
#ifdef EMU_FIBERS
#include <csetjmp>
#include <ucontext.h>
#endif
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

#ifdef EMU_FIBERS
// Fiber mode (-DEMU_FIBERS): the threads of a block are ucontext fibers on the launching OS
// thread, switched round-robin at every barrier, instead of OS threads meeting on a mutex. The
// semantics are the same (blocks one at a time, barriers, shuffles, the call-site check); a
// launch costs microseconds instead of the futex wake-ups of dozens of OS threads, which is what
// lets a whole training loop run on the emulated device. It cannot see data races between
// threads (there is no parallelism): the OS-thread gates under TSan do that.
namespace fiber {
inline void yield();
inline bool stalled();
inline void progress();
}  // namespace fiber
#endif

// A reusable barrier with a watchdog: a thread that waits longer than the limit means some
// thread of the block never reached this __syncthreads (divergent barrier): abort.
class Barrier {
  public:
    explicit Barrier(int n) : n_(n) {}
    // site: the caller's "file:line" (a string literal), or nullptr where no check applies.
    void arrive_and_wait(const char* site = nullptr) {
#ifndef EMU_FIBERS
        std::unique_lock<std::mutex> lock(m_);
#endif
        long gen = generation_;
#ifdef EMU_FIBERS
        fiber::progress();
#endif
        if (count_ == 0) {
            site_ = site;
        } else if (site != site_ && (site == nullptr || site_ == nullptr || std::strcmp(site, site_) != 0)) {
            std::fprintf(stderr, "cuda-emu: __syncthreads at %s and at %s in the same block (thread %d)\n", site_ ? site_ : "?",
                         site ? site : "?", static_cast<int>(thread_idx.x));
            fail("__syncthreads reached from different call sites: a divergent barrier");
        }
        if (++count_ == n_) {
            count_ = 0;
            generation_++;
#ifndef EMU_FIBERS
            cv_.notify_all();
#endif
            return;
        }
#ifdef EMU_FIBERS
        while (generation_ == gen) {
            if (fiber::stalled()) fail("__syncthreads deadlock: not every thread of the block reached the barrier");
            fiber::yield();
        }
#else
        if (!cv_.wait_for(lock, std::chrono::seconds(10), [&] { return generation_ != gen; })) {
            fail("__syncthreads deadlock: not every thread of the block reached the barrier");
        }
#endif
    }

  private:
#ifndef EMU_FIBERS
    std::mutex m_;
    std::condition_variable cv_;
#endif
    int n_, count_ = 0;
    long generation_ = 0;
    const char* site_ = nullptr;
};

inline Barrier* block_barrier = nullptr;
inline std::vector<Barrier*> warp_barriers;
inline std::vector<float> shuffle_slots;  // one float per thread of the block

#ifdef EMU_FIBERS
namespace fiber {
// The block being run: one fiber per CUDA thread and the scheduler that resumes them in turn.
// A fiber is entered once with swapcontext (which sets up its stack); every later switch is a
// _setjmp/_longjmp pair, which skips the signal-mask system calls swapcontext makes each time.
inline ucontext_t scheduler_context;
inline jmp_buf scheduler_jump;
inline std::vector<ucontext_t> contexts;
struct Jump {
    jmp_buf buf;
};
inline std::vector<Jump> jumps;
inline std::vector<std::vector<char>> stacks;
inline std::vector<char> started;
inline std::vector<char> done;
inline const std::function<void()>* current_body = nullptr;
inline int current = 0;
inline long switches_without_progress = 0;
constexpr size_t STACK_BYTES = 256 * 1024;

// A fiber arrived at a barrier or finished: the block is not stuck.
inline void progress() {
    switches_without_progress = 0;
}

inline void entry() {
    (*current_body)();
    done[current] = 1;
    progress();
    _longjmp(scheduler_jump, 1);
}

inline void yield() {
    switches_without_progress++;
    if (!_setjmp(jumps[current].buf)) _longjmp(scheduler_jump, 1);
}

// Every live fiber has yielded twice since anyone arrived at a barrier or finished: nobody can move.
inline bool stalled() {
    return switches_without_progress > 2L * static_cast<long>(contexts.size()) + 2;
}

inline void run_block(int block, const std::function<void()>& body) {
    current_body = &body;
    contexts.assign(block, ucontext_t{});
    jumps.resize(block);
    if (stacks.size() < static_cast<size_t>(block)) stacks.resize(block);
    started.assign(block, 0);
    done.assign(block, 0);
    for (int t = 0; t < block; t++) {
        if (stacks[t].size() != STACK_BYTES) stacks[t].assign(STACK_BYTES, 0);
        getcontext(&contexts[t]);
        contexts[t].uc_stack.ss_sp = stacks[t].data();
        contexts[t].uc_stack.ss_size = STACK_BYTES;
        contexts[t].uc_link = nullptr;
        makecontext(&contexts[t], entry, 0);
    }
    int live = block;
    while (live > 0) {
        live = 0;
        for (int t = 0; t < block; t++) {
            if (done[t]) continue;
            current = t;
            thread_idx.x = t;
            if (!_setjmp(scheduler_jump)) {
                if (!started[t]) {
                    started[t] = 1;
                    swapcontext(&scheduler_context, &contexts[t]);
                } else {
                    _longjmp(jumps[t].buf, 1);
                }
            }
            if (!done[t]) live++;
        }
    }
}
}  // namespace fiber
#endif

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
#ifdef EMU_FIBERS
    for (int b = 0; b < grid; b++) {
        block_idx.x = b;
        fiber::run_block(block, body);
    }
#else
    // One OS thread per CUDA thread of a block, kept for the whole grid: thread t runs (b, t) for
    // b = 0, 1, ... and every thread finishes block b before any starts b + 1 (the end-of-block
    // barrier), so blocks still run one at a time and `static` __shared__ stays private to one.
    Barrier block_done(block);
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (int t = 0; t < block; t++) {
        threads.emplace_back([&, t] {
            thread_idx.x = t;
            for (int b = 0; b < grid; b++) {
                block_idx.x = b;
                body();
                block_done.arrive_and_wait();
            }
        });
    }
    for (auto& th : threads) th.join();
#endif
    for (Barrier* w : warp_barriers) delete w;
    warp_barriers.clear();
    block_barrier = nullptr;
}
}  // namespace emu

#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)

#define EMU_STRINGIFY2(x) #x
#define EMU_STRINGIFY(x) EMU_STRINGIFY2(x)
#define __syncthreads() emu::block_barrier->arrive_and_wait(__FILE__ ":" EMU_STRINGIFY(__LINE__))

inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask) {
    if (mask != 0xffffffffu) emu::fail("__shfl_xor_sync: only full-warp masks are emulated");
    int t = threadIdx.x, warp = t / 32, lane = t % 32;
    emu::Barrier* wb = emu::warp_barriers[warp];
    wb->arrive_and_wait();  // everyone's previous read of the slots is done
    emu::shuffle_slots[t] = v;
    wb->arrive_and_wait();  // everyone's value is written
    return emu::shuffle_slots[warp * 32 + (lane ^ lane_mask)];
}

// The int form: the same exchange, the bits carried in the float slots.
inline int __shfl_xor_sync(unsigned mask, int v, int lane_mask) {
    float bits;
    std::memcpy(&bits, &v, sizeof bits);
    float r = __shfl_xor_sync(mask, bits, lane_mask);
    int out;
    std::memcpy(&out, &r, sizeof out);
    return out;
}

// The double form: two 32-bit exchanges, as the hardware does it.
inline double __shfl_xor_sync(unsigned mask, double v, int lane_mask) {
    uint64_t u;
    std::memcpy(&u, &v, sizeof u);
    int lo = __shfl_xor_sync(mask, (int)(uint32_t)u, lane_mask);
    int hi = __shfl_xor_sync(mask, (int)(uint32_t)(u >> 32), lane_mask);
    u = (uint64_t)(uint32_t)lo | ((uint64_t)(uint32_t)hi << 32);
    double out;
    std::memcpy(&out, &u, sizeof out);
    return out;
}

inline float __expf(float x) { return std::exp(x); }
// A product rounded on its own: the emulation targets baseline x86-64, which has no FMA to contract it into.
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }

inline unsigned int __float_as_uint(float x) {
    unsigned int u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}

struct alignas(16) float4 {
    float x, y, z, w;
};
