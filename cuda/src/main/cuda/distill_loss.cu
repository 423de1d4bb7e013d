// Fused distillation loss, the CUDA twin of the Java rows in kernels/.../kernels/cpu/distill and of
// kernels/.../reference/ReferenceDistillLoss.java. The same pieces carry the same names:
//
//   student_pass     StudentPass.run (pass A over the student: max, log Z_T, log Z_1), struct Student
//   dense_row        DenseForwardKl / DenseReverseKl / DenseJsd .row; ReferenceDistillLoss.denseRow
//   topk_row         TopKRows.row; ReferenceDistillLoss.topKRow
//   sampled_row      SampledRows.row; ReferenceDistillLoss.sampledRow
//   shared gradient  SparseRows.sharedGradient (the loop every unlisted column of a sparse row shares)
//
//   feature_row      CpuKernels.featureDistance; ReferenceKernels.featureDistance (hidden states)
//   mixture_entry    FusedDistillLoss with a TeacherTargets.Mixture; MixtureRow (t[j]) is MixtureRows' m_j;
//                    ReferenceDistillLoss.mixtureRow (several dense teachers, never stored as a mixture)
//
// Covered: dense teachers (fp32, fp16, bf16), mixtures of up to 8 of them (any of those types each)
// and top-k teachers (fp32, fp16, bf16 logits; tail bucket, renormalized or rescaled) with forward
// KL, reverse KL and JSD; sampled teachers (forward KL). Top-k rows read their k student logits
// into shared memory before any gradient is written (k <= MAX_TOPK); ids in a row must be
// distinct (the host checks).
//
// One thread block per token row. Same contract as Kernels.distillLoss: student logits s (n, V)
// fp32; teacher dense logits (n, Vt) fp32/fp16/bf16, or top-k ids/logits + logsumexp, or sampled
// ids + weights; optional int32 labels (ignore_index masks a row); writes
// grad_scale * d(sum_rows total)/ds into g (g may equal s: in place), per-row CE and divergence.
// The math and its derivation are in docs/KERNELS.md#distillation-losses.
//
//   pass A: online (max, sum exp) for softmax(s/T) and softmax(s), and for softmax(t/T)
//   pass B: forward KL value and gradient in one sweep; reverse KL / JSD sums
//   pass C: reverse KL / JSD gradient (they need a row-wide sum first)
//
// Loads are float4 when the row is 16-byte aligned (V % 4 == 0), scalar otherwise. Reductions:
// warp shuffles, then one float per warp in shared memory.
// Launch: grid = n, block = 256 (any multiple of 32 up to 1024), no dynamic shared memory.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math_constants.h>
#include <stdint.h>

#include "block_reduce.cuh"

#ifndef DISTILL_LAUNCH
#define DISTILL_LAUNCH __global__
#endif

namespace distill {

constexpr float LOG_FLOOR = -87.336544750553102f;  // log(FLT_MIN): reverse KL's charge for zero teacher mass
using blockreduce::MAX_WARPS;
constexpr int MAX_TOPK = 1024;

enum Divergence : int { FORWARD_KL = 0, REVERSE_KL = 1, JSD = 2 };

struct Params {
    float temperature;        // T > 0
    float alpha;              // weight of the hard-label CE
    int divergence;           // Divergence
    float beta;               // JSD beta in (0, 1)
    float divergence_scale;   // T^2 or 1
    float grad_t_factor;      // T (with T^2 scaling) or 1/T
    float grad_scale;         // factor on d(sum total)/ds
    int ignore_index;
};

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

// ------------------------------------------------------------------ reductions

using blockreduce::block_max;
using blockreduce::block_sum;
using blockreduce::warp_max;
using blockreduce::warp_sum;

// Online softmax state: running max m and d = sum exp((x - m) * scale).
struct Online {
    float m, d;
};

__device__ __forceinline__ Online online_add(Online a, float x, float scale) {
    if (x > a.m) {
        a.d = a.d * __expf((a.m - x) * scale) + 1.f;
        a.m = x;
    } else if (x != -CUDART_INF_F) {
        a.d += __expf((x - a.m) * scale);
    }
    return a;
}

__device__ __forceinline__ Online online_merge(Online a, Online b, float scale) {
    if (b.m == -CUDART_INF_F) return a;
    if (a.m == -CUDART_INF_F) return b;
    float m = fmaxf(a.m, b.m);
    return {m, a.d * __expf((a.m - m) * scale) + b.d * __expf((b.m - m) * scale)};
}

__device__ Online block_online(Online v, float scale, float* scratch_m, float* scratch_d) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        Online other = {__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.d, o)};
        v = online_merge(v, other, scale);
    }
    __syncthreads();
    if (lane == 0) {
        scratch_m[warp] = v.m;
        scratch_d[warp] = v.d;
    }
    __syncthreads();
    v = lane < warps ? Online{scratch_m[lane], scratch_d[lane]} : Online{-CUDART_INF_F, 0.f};
    for (int o = 16; o > 0; o >>= 1) {
        Online other = {__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.d, o)};
        v = online_merge(v, other, scale);
    }
    return v;
}

// Student row statistics after pass A.
struct Student {
    float max, log_zt, log_z1;  // max s; log sum exp((s-max)/T); log sum exp(s-max)
};

__device__ Student student_pass(const float* s, int V, float inv_t, float* sm, float* sd) {
    Online at = {-CUDART_INF_F, 0.f}, a1 = {-CUDART_INF_F, 0.f};
    if ((V & 3) == 0 && (reinterpret_cast<uintptr_t>(s) & 15) == 0) {
        const float4* s4 = reinterpret_cast<const float4*>(s);
        for (int i = threadIdx.x; i < (V >> 2); i += blockDim.x) {
            float4 x = s4[i];
            at = online_add(at, x.x, inv_t); at = online_add(at, x.y, inv_t);
            at = online_add(at, x.z, inv_t); at = online_add(at, x.w, inv_t);
            a1 = online_add(a1, x.x, 1.f); a1 = online_add(a1, x.y, 1.f);
            a1 = online_add(a1, x.z, 1.f); a1 = online_add(a1, x.w, 1.f);
        }
    } else {
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
            at = online_add(at, s[i], inv_t);
            a1 = online_add(a1, s[i], 1.f);
        }
    }
    at = block_online(at, inv_t, sm, sd);
    a1 = block_online(a1, 1.f, sm, sd);
    return {at.m, logf(at.d), logf(a1.d)};
}

// t: a teacher row, a pointer to fp32/fp16/bf16 logits or a MixtureRow (anything t[j] reads)
template <typename TR>
__device__ Online teacher_pass(const TR& t, int Vt, float inv_t, float* sm, float* sd) {
    Online a = {-CUDART_INF_F, 0.f};
    for (int i = threadIdx.x; i < Vt; i += blockDim.x) a = online_add(a, to_float(t[i]), inv_t);
    return block_online(a, inv_t, sm, sd);
}

// Writes the per-row outputs and the hard-label correction; thread 0 only.
__device__ void finish_row(float* g, int label, float ce, float div, float* row_ce, float* row_div, int row,
                           const Params& p, float c1) {
    if (threadIdx.x != 0) return;
    if (row_ce) row_ce[row] = ce;
    if (row_div) row_div[row] = div * p.divergence_scale;
    if (g && label >= 0) g[label] -= c1;
}

// A row whose label is the ignore index: zero gradient, zero losses. Returns whether it was one.
__device__ bool masked_row(const int* labels, int label, float* grow, float* row_ce, float* row_div, int row, int V,
                           const Params& p) {
    if (!labels || label != p.ignore_index) return false;
    if (grow) for (int j = threadIdx.x; j < V; j += blockDim.x) grow[j] = 0.f;
    if (threadIdx.x == 0) {
        if (row_ce) row_ce[row] = 0.f;
        if (row_div) row_div[row] = 0.f;
    }
    return true;
}

// The factors of a row's gradient (FusedDistillLoss.row): c1 on softmax(s) - onehot, cq on the
// divergence's (q - target).
struct Coefficients {
    float inv_t, c1, cq;
};

__device__ __forceinline__ Coefficients coefficients(const Params& p) {
    return {1.f / p.temperature, p.grad_scale * p.alpha, p.grad_scale * (1.f - p.alpha) * p.grad_t_factor};
}

// The row this block handles, with its label, its student and gradient rows and its coefficients.
struct Row {
    int index, label;
    const float* s;
    float* g;
    Coefficients k;
};

// Fills r for this block; false when the block has no row or its row is masked out (handled).
__device__ bool begin_row(Row& r, const float* s, float* g, const int* labels, float* row_ce, float* row_div, int n,
                          int V, const Params& p) {
    r.index = blockIdx.x;
    if (r.index >= n) return false;
    r.label = labels ? labels[r.index] : -1;
    r.s = s + (size_t)r.index * V;
    r.g = g ? g + (size_t)r.index * V : nullptr;
    r.k = coefficients(p);
    if (labels && r.label != p.ignore_index && (r.label < 0 || r.label >= V)) {
        // the host checks labels before it launches (DistillOptions.checkLabels); a row that
        // slipped past it reads nothing outside its row and reports NaN
        if (threadIdx.x == 0) {
            if (row_ce) row_ce[r.index] = CUDART_NAN_F;
            if (row_div) row_div[r.index] = CUDART_NAN_F;
        }
        return false;
    }
    return !masked_row(labels, r.label, r.g, row_ce, row_div, r.index, V, p);
}

// SparseRows.sharedGradient: g_j = c1 softmax(s)_j + cqw q_j for every column of a sparse row; the
// caller then fixes up the listed columns.
__device__ void shared_gradient(const float* s, float* g, int V, const Student& st, const Coefficients& k, float cqw) {
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float x = s[j] - st.max;
        g[j] = (k.c1 != 0.f ? __expf(x - st.log_z1) * k.c1 : 0.f) + __expf(x * k.inv_t - st.log_zt) * cqw;
    }
}

// ------------------------------------------------------------------ dense teacher

template <typename TR>
__device__ void dense_row(const float* s, float* g, const TR& t, int label, float* row_ce, float* row_div,
                          int row, int V, int Vt, const Params& p) {
    __shared__ float sm[MAX_WARPS], sd[MAX_WARPS], red[MAX_WARPS];
    const Coefficients k = coefficients(p);
    const float inv_t = k.inv_t, c1 = k.c1, cq = k.cq;

    Student st = student_pass(s, V, inv_t, sm, sd);
    float ce = label >= 0 ? st.max + st.log_z1 - s[label] : 0.f;  // read before any gradient is written
    Online te = teacher_pass(t, Vt, inv_t, sm, sd);
    const float lzp = logf(te.d);
    __syncthreads();  // every thread has read s[label] before g (maybe == s) changes

    // pass B
    float acc = 0.f, acc2 = 0.f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float sv = s[j];
        float lq = (sv - st.max) * inv_t - st.log_zt;
        float q = __expf(lq);
        float lp = j < Vt ? (to_float(t[j]) - te.m) * inv_t - lzp : -CUDART_INF_F;
        float pv = j < Vt ? __expf(lp) : 0.f;
        if (p.divergence == FORWARD_KL) {
            if (pv > 0.f) acc += pv * (lp - lq);
            if (g) g[j] = (c1 != 0.f ? __expf(sv - st.max - st.log_z1) * c1 : 0.f) + (q - pv) * cq;
        } else if (p.divergence == REVERSE_KL) {
            if (q > 0.f) acc += q * (lq - fmaxf(lp, LOG_FLOOR));
        } else {
            float lm = logf(p.beta * pv + (1.f - p.beta) * q);
            float gq = (lq - lm) * (1.f - p.beta);
            if (pv > 0.f) acc += p.beta * pv * (lp - lm);
            if (q > 0.f) { acc += q * gq; acc2 += q * gq; }
        }
    }
    float value = block_sum(acc, red);
    float sum_qg = p.divergence == JSD ? block_sum(acc2, red) : 0.f;

    // pass C (reverse KL, JSD): every thread read s[j] for its own j only, so in place is safe
    if (g && p.divergence != FORWARD_KL) {
        for (int j = threadIdx.x; j < V; j += blockDim.x) {
            float sv = s[j];
            float lq = (sv - st.max) * inv_t - st.log_zt;
            float q = __expf(lq);
            float lp = j < Vt ? (to_float(t[j]) - te.m) * inv_t - lzp : -CUDART_INF_F;
            float w;
            if (p.divergence == REVERSE_KL) {
                w = lq - fmaxf(lp, LOG_FLOOR) - value;
            } else {
                float pv = j < Vt ? __expf(lp) : 0.f;
                float gq = q > 0.f ? (lq - logf(p.beta * pv + (1.f - p.beta) * q)) * (1.f - p.beta) : 0.f;
                w = gq - sum_qg;
            }
            g[j] = (c1 != 0.f ? __expf(sv - st.max - st.log_z1) * c1 : 0.f) + q * w * cq;
        }
    }
    __syncthreads();  // all gradient writes of the row happen before thread 0 fixes the label column
    finish_row(g, label, ce, value, row_ce, row_div, row, p, c1);
}

template <typename TT>
__device__ void dense_entry(const float* s, float* g, const TT* t, const int* labels, float* row_ce,
                            float* row_div, int n, int V, int Vt, const Params& p) {
    Row here;
    if (!begin_row(here, s, g, labels, row_ce, row_div, n, V, p)) return;
    const int row = here.index, label = here.label;
    const float* srow = here.s;
    float* grow = here.g;
    dense_row(srow, grow, t + (size_t)row * Vt, label, row_ce, row_div, row, V, Vt, p);
}

// ------------------------------------------------------------------ a mixture of dense teachers

constexpr int MAX_TEACHERS = 8;  // TeacherTargets.Mixture.MAX_TEACHERS: the rows come as t0..t7
enum LogitType : int { LOGITS_F32 = 0, LOGITS_F16 = 1, LOGITS_BF16 = 2 };

// The mixture's teachers by value: how many, each one's logit type and weight (summing to 1).
struct MixtureSpec {
    int count;
    int type[MAX_TEACHERS];
    float weight[MAX_TEACHERS];
};

__device__ __forceinline__ float logit_at(const void* t, int type, int j) {
    if (type == LOGITS_BF16) return __bfloat162float(static_cast<const __nv_bfloat16*>(t)[j]);
    if (type == LOGITS_F16) return __half2float(static_cast<const __half*>(t)[j]);
    return static_cast<const float*>(t)[j];
}

// Element `offset` of logits of this type: a teacher's row from its first row.
__device__ __forceinline__ const void* logits_from(const void* t, int type, size_t offset) {
    return static_cast<const char*>(t) + offset * (type == LOGITS_F32 ? 4 : 2);
}

// One row of the mixture, read like a dense teacher row: t[j] is MixtureRows' m_j,
//   m_j = T log sum_i (w_i / Z_i) exp((t_ij - max_i)/T),  Z_i = sum_j exp((t_ij - max_i)/T),
// computed where each pass reads it (the mixture is never stored); -inf where every term
// underflows. Loops run to MAX_TEACHERS, unrolled, so the per-teacher arrays stay in registers.
struct MixtureRow {
    const void* t[MAX_TEACHERS];
    int type[MAX_TEACHERS];
    float max[MAX_TEACHERS], scale[MAX_TEACHERS];
    int count;
    float inv_t, temperature;

    __device__ float operator[](int j) const {
        float sum = 0.f;
#pragma unroll
        for (int i = 0; i < MAX_TEACHERS; i++) {
            if (i < count) sum += scale[i] * __expf((logit_at(t[i], type[i], j) - max[i]) * inv_t);
        }
        return logf(sum) * temperature;
    }
};

// A row against a mixture of teachers: each teacher's (max, Z) at 1/T by one block pass over its
// row, then the dense row over the MixtureRow.
__device__ void mixture_entry(const float* s, float* g, const void* const (&t)[MAX_TEACHERS], const int* labels,
                              float* row_ce, float* row_div, int n, int V, int Vt, const MixtureSpec& spec, const Params& p) {
    __shared__ float sm[MAX_WARPS], sd[MAX_WARPS];
    Row here;
    if (!begin_row(here, s, g, labels, row_ce, row_div, n, V, p)) return;
    MixtureRow mix;
    mix.count = spec.count;
    mix.temperature = p.temperature;
    mix.inv_t = 1.f / p.temperature;
#pragma unroll
    for (int i = 0; i < MAX_TEACHERS; i++) {
        mix.t[i] = nullptr;
        mix.type[i] = spec.type[i];
        mix.max[i] = 0.f;
        mix.scale[i] = 0.f;
        if (i >= spec.count) continue;
        mix.t[i] = logits_from(t[i], spec.type[i], (size_t)here.index * Vt);
        Online o = {-CUDART_INF_F, 0.f};
        for (int j = threadIdx.x; j < Vt; j += blockDim.x) o = online_add(o, logit_at(mix.t[i], spec.type[i], j), mix.inv_t);
        o = block_online(o, mix.inv_t, sm, sd);
        mix.max[i] = o.m;
        mix.scale[i] = spec.weight[i] / o.d;
    }
    dense_row(here.s, here.g, mix, here.label, row_ce, row_div, here.index, V, Vt, p);
}

// ------------------------------------------------------------------ sampled teacher (forward KL)

// p_hat_j = sum_s w_s [id_s = j]; divergence reported as the cross-entropy -sum p_hat log q;
// dL/ds_j = (1/T)(q_j sum(w) - p_hat_j), scaled like the CPU kernel.
__device__ void sampled_row(const float* s, float* g, const int* ids, const float* weights, const int* labels,
                            float* row_ce, float* row_div, int n, int V, int samples, const Params& p) {
    __shared__ float sm[MAX_WARPS], sd[MAX_WARPS], red[MAX_WARPS];
    Row here;
    if (!begin_row(here, s, g, labels, row_ce, row_div, n, V, p)) return;
    const int row = here.index, label = here.label;
    const float* srow = here.s;
    float* grow = here.g;
    const Coefficients k = here.k;
    Student st = student_pass(srow, V, k.inv_t, sm, sd);
    float ce = label >= 0 ? st.max + st.log_z1 - srow[label] : 0.f;
    const int* rid = ids + (size_t)row * samples;
    const float* rw = weights + (size_t)row * samples;
    float wsum = 0.f, xent = 0.f;
    for (int i = threadIdx.x; i < samples; i += blockDim.x) {
        float lq = (srow[rid[i]] - st.max) * k.inv_t - st.log_zt;
        wsum += rw[i];
        xent -= rw[i] * lq;
    }
    wsum = block_sum(wsum, red);
    xent = block_sum(xent, red);  // every s value needed is read before the barrier inside block_sum
    if (grow) {
        shared_gradient(srow, grow, V, st, k, k.cq * wsum);
        __syncthreads();
        if (threadIdx.x == 0) {  // repeated ids accumulate; one thread keeps it race-free
            for (int i = 0; i < samples; i++) grow[rid[i]] -= k.cq * rw[i];
        }
        __syncthreads();
    }
    finish_row(grow, label, ce, xent, row_ce, row_div, row, p, k.c1);
}

// ------------------------------------------------------------------ top-k teacher

// ids, logits (n, k) and the teacher's logsumexp (n) of logits / shard_t; mode 0 = tail bucket,
// 1 = renormalize, 2 = rescale (tail mass kept from the shard temperature). Warp 0 does the k
// listed entries in float64 (as the CPU kernel does), lane-strided, its sums reduced across the
// warp: one thread walking them in order left the block's other warps idle for the length of
// k double-precision exp/log chains on every row. The block writes the gradient every unlisted
// column shares; then the listed columns' own over it (ids in a row are distinct).
template <typename TT>
__device__ void topk_row(const float* s, float* g, const int* ids, const TT* logits, const float* lse_all,
                         const int* labels, float* row_ce, float* row_div, int n, int V, int Vt, int k,
                         float shard_t, int mode, const Params& p) {
    __shared__ float sm[MAX_WARPS], sd[MAX_WARPS];
    __shared__ float listed_s[MAX_TOPK], fix[MAX_TOPK];
    __shared__ float shared_w_tail, shared_value;
    Row here;
    if (!begin_row(here, s, g, labels, row_ce, row_div, n, V, p)) return;
    const int row = here.index, label = here.label;
    const float* srow = here.s;
    float* grow = here.g;
    const float inv_t = here.k.inv_t, c1 = here.k.c1, cq = here.k.cq;
    const int* rid = ids + (size_t)row * k;
    const TT* rl = logits + (size_t)row * k;
    for (int i = threadIdx.x; i < k; i += blockDim.x) listed_s[i] = srow[rid[i]];
    Student st = student_pass(srow, V, inv_t, sm, sd);  // its barriers also publish listed_s
    float ce = label >= 0 ? st.max + st.log_z1 - srow[label] : 0.f;
    if (threadIdx.x < 32) {
        const int lane = threadIdx.x;
        const double lse = lse_all[row], inv_td = 1.0 / p.temperature;
        double max_t = -CUDART_INF, listed_shard = 0, renorm_z = 0, sum_q = 0;
        for (int i = lane; i < k; i += 32) {
            double lg = to_float(rl[i]);
            max_t = fmax(max_t, lg);
            listed_shard += exp(lg / (double)shard_t - lse);
            sum_q += exp((double)((listed_s[i] - st.max) * inv_t - st.log_zt));
        }
        max_t = warp_max(max_t);
        const double tail_shard = fmax(0.0, 1.0 - warp_sum(listed_shard));
        sum_q = warp_sum(sum_q);
        for (int i = lane; i < k; i += 32) renorm_z += exp((to_float(rl[i]) - max_t) * inv_td);
        renorm_z = warp_sum(renorm_z);
        const bool same_t = shard_t == p.temperature;
        const double p_tail = (mode == 1 || k == Vt) ? 0.0 : tail_shard;
        const double q_tail = k < V ? fmax(0.0, 1.0 - sum_q) : 0.0;
        // first sweep over the listed entries: the value and the row-wide terms
        double value = 0, sum_p = 0, agg = 0;
        for (int i = lane; i < k; i += 32) {
            double lg = to_float(rl[i]);
            double lp = mode == 1 ? (lg - max_t) * inv_td - log(renorm_z)
                      : same_t ? lg * inv_td - lse
                      : log(1 - tail_shard) + (lg - max_t) * inv_td - log(renorm_z);
            double pv = exp(lp);
            double lq = (double)((listed_s[i] - st.max) * inv_t - st.log_zt), q = exp(lq);
            sum_p += pv;
            if (p.divergence == FORWARD_KL) {
                if (pv > 0) value += pv * (lp - lq);
            } else if (p.divergence == REVERSE_KL) {
                if (q > 0) value += q * (lq - fmax(lp, (double)LOG_FLOOR));
            } else {
                double m = p.beta * pv + (1 - p.beta) * q;
                if (pv > 0) value += p.beta * pv * (lp - log(m));
                if (q > 0) { double gq = (1 - p.beta) * log(q / m); value += q * gq; agg += q * gq; }
            }
            fix[i] = (float)lp;  // kept for the second sweep (by the lane that reads it back)
        }
        value = warp_sum(value);
        sum_p = p_tail + warp_sum(sum_p);
        agg = warp_sum(agg);
        double w_tail;
        if (p.divergence == FORWARD_KL) {
            if (p_tail > 0) value += p_tail * (log(p_tail) - log(fmax(q_tail, 1.1754943508222875e-38)));
            w_tail = sum_p - (q_tail > 0 ? p_tail / q_tail : 0.0);
        } else if (p.divergence == REVERSE_KL) {
            double l_tail = q_tail > 0 ? log(q_tail) - fmax(p_tail > 0 ? log(p_tail) : (double)LOG_FLOOR, (double)LOG_FLOOR) : 0;
            value += q_tail * l_tail;
            w_tail = l_tail - value;
        } else {
            double m_tail = p.beta * p_tail + (1 - p.beta) * q_tail, g_tail = 0;
            if (p_tail > 0) value += p.beta * p_tail * log(p_tail / m_tail);
            if (q_tail > 0) { g_tail = (1 - p.beta) * log(q_tail / m_tail); value += q_tail * g_tail; agg += q_tail * g_tail; }
            w_tail = g_tail - agg;
        }
        // second sweep: each listed column's whole gradient, written over the shared one (q · w_tail
        // can dwarf it, and adding its negative back would leave its rounding behind)
        for (int i = lane; i < k; i += 32) {
            double lp = fix[i], pv = exp(lp);
            double lq = (double)((listed_s[i] - st.max) * inv_t - st.log_zt), q = exp(lq);
            double f;
            if (p.divergence == FORWARD_KL) {
                f = cq * (q * sum_p - pv);
            } else if (p.divergence == REVERSE_KL) {
                f = cq * q * (lq - fmax(lp, (double)LOG_FLOOR) - value);
            } else {
                double m = p.beta * pv + (1 - p.beta) * q;
                double gq = q > 0 ? (1 - p.beta) * log(q / m) : 0;
                f = cq * q * (gq - agg);
            }
            if (c1 != 0.f) f += c1 * exp((double)listed_s[i] - st.max - st.log_z1);  // the CE's softmax(s)
            fix[i] = (float)f;
        }
        if (lane == 0) {
            shared_w_tail = (float)w_tail;
            shared_value = (float)value;
        }
    }
    __syncthreads();
    if (grow) {
        shared_gradient(srow, grow, V, st, here.k, cq * shared_w_tail);
        __syncthreads();
        for (int i = threadIdx.x; i < k; i += blockDim.x) grow[rid[i]] = fix[i];
        __syncthreads();
    }
    finish_row(grow, label, ce, shared_value, row_ce, row_div, row, p, c1);
}

// ------------------------------------------------------------------ feature (hidden-state) distances

// One block per row: student row s (d) fp32 against teacher row t (d). MSE: loss = (1/d) sum (s - t)^2,
// ds = (2/d)(s - t). Cosine: loss = 1 - s.t / den, den = max(|s|, eps) max(|t|, eps),
// ds = (cos s/|s| - t/max(|t|, eps)) / |s| when |s| > eps, else -t / den: unit vectors first, so that
// the two terms cancel to rounding of 1, not of 1/|s| (in one dimension exactly: IEEE division and
// square root, which --use_fast_math would otherwise replace). grad (may be null) += grad_scale ds.
// docs/KERNELS.md#feature-distances.
enum FeatureDistance : int { MSE = 0, COSINE = 1 };
constexpr float FEATURE_EPS = 1e-8f;

template <typename T>
__device__ void feature_row(float* row_loss, float* grad, const float* s, const T* t, int n, int d, int distance,
                            float grad_scale) {
    __shared__ float scratch[MAX_WARPS];
    const int row = blockIdx.x;
    if (row >= n) return;
    const float* sr = s + (long)row * d;
    const T* tr = t + (long)row * d;
    float* gr = grad == nullptr ? nullptr : grad + (long)row * d;
    if (distance == MSE) {
        float acc = 0.f;
        for (int k = threadIdx.x; k < d; k += blockDim.x) {
            const float e = sr[k] - to_float(tr[k]);
            acc += e * e;
        }
        acc = block_sum(acc, scratch);
        if (threadIdx.x == 0) row_loss[row] = acc / d;
        if (gr != nullptr) {
            const float c = 2.f * grad_scale / d;
            for (int k = threadIdx.x; k < d; k += blockDim.x) gr[k] += c * (sr[k] - to_float(tr[k]));
        }
        return;
    }
    float st = 0.f, ss = 0.f, tt = 0.f;
    for (int k = threadIdx.x; k < d; k += blockDim.x) {
        const float a = sr[k], b = to_float(tr[k]);
        st += a * b;
        ss += a * a;
        tt += b * b;
    }
    st = block_sum(st, scratch);
    ss = block_sum(ss, scratch);
    tt = block_sum(tt, scratch);
    const float ns = __fsqrt_rn(ss), nt = fmaxf(__fsqrt_rn(tt), FEATURE_EPS), den = fmaxf(ns, FEATURE_EPS) * nt;
    const float cos = __fdiv_rn(st, den);
    if (threadIdx.x == 0) row_loss[row] = 1.f - cos;
    if (gr != nullptr) {
        for (int k = threadIdx.x; k < d; k += blockDim.x) {
            const float tk = to_float(tr[k]);
            const float ds = ns > FEATURE_EPS ? __fdiv_rn(cos * __fdiv_rn(sr[k], ns) - __fdiv_rn(tk, nt), ns) : -__fdiv_rn(tk, den);
            gr[k] += grad_scale * ds;
        }
    }
}

}  // namespace distill

// C entry points for cuModuleGetFunction; one per teacher layout.
extern "C" {

DISTILL_LAUNCH void distill_dense_f32(const float* s, float* g, const float* t, const int* labels, float* row_ce,
                                      float* row_div, int n, int V, int Vt, distill::Params p) {
    distill::dense_entry(s, g, t, labels, row_ce, row_div, n, V, Vt, p);
}

DISTILL_LAUNCH void distill_dense_f16(const float* s, float* g, const __half* t, const int* labels, float* row_ce,
                                      float* row_div, int n, int V, int Vt, distill::Params p) {
    distill::dense_entry(s, g, t, labels, row_ce, row_div, n, V, Vt, p);
}

DISTILL_LAUNCH void distill_dense_bf16(const float* s, float* g, const __nv_bfloat16* t, const int* labels,
                                       float* row_ce, float* row_div, int n, int V, int Vt, distill::Params p) {
    distill::dense_entry(s, g, t, labels, row_ce, row_div, n, V, Vt, p);
}

DISTILL_LAUNCH void distill_topk_f32(const float* s, float* g, const int* ids, const float* logits, const float* lse,
                                     const int* labels, float* row_ce, float* row_div, int n, int V, int Vt, int k,
                                     float shard_t, int mode, distill::Params p) {
    distill::topk_row(s, g, ids, logits, lse, labels, row_ce, row_div, n, V, Vt, k, shard_t, mode, p);
}

DISTILL_LAUNCH void distill_topk_f16(const float* s, float* g, const int* ids, const __half* logits, const float* lse,
                                     const int* labels, float* row_ce, float* row_div, int n, int V, int Vt, int k,
                                     float shard_t, int mode, distill::Params p) {
    distill::topk_row(s, g, ids, logits, lse, labels, row_ce, row_div, n, V, Vt, k, shard_t, mode, p);
}

DISTILL_LAUNCH void distill_topk_bf16(const float* s, float* g, const int* ids, const __nv_bfloat16* logits,
                                      const float* lse, const int* labels, float* row_ce, float* row_div, int n, int V,
                                      int Vt, int k, float shard_t, int mode, distill::Params p) {
    distill::topk_row(s, g, ids, logits, lse, labels, row_ce, row_div, n, V, Vt, k, shard_t, mode, p);
}

DISTILL_LAUNCH void distill_mixture(const float* s, float* g, const void* t0, const void* t1, const void* t2, const void* t3,
                                    const void* t4, const void* t5, const void* t6, const void* t7, const int* labels,
                                    float* row_ce, float* row_div, int n, int V, int Vt, distill::MixtureSpec m,
                                    distill::Params p) {
    const void* const t[distill::MAX_TEACHERS] = {t0, t1, t2, t3, t4, t5, t6, t7};
    distill::mixture_entry(s, g, t, labels, row_ce, row_div, n, V, Vt, m, p);
}

DISTILL_LAUNCH void distill_sampled(const float* s, float* g, const int* ids, const float* weights, const int* labels,
                                    float* row_ce, float* row_div, int n, int V, int samples, distill::Params p) {
    distill::sampled_row(s, g, ids, weights, labels, row_ce, row_div, n, V, samples, p);
}

DISTILL_LAUNCH void feature_distance_f32(float* row_loss, float* grad, const float* s, const float* t, int n, int d,
                                         int distance, float grad_scale) {
    distill::feature_row(row_loss, grad, s, t, n, d, distance, grad_scale);
}

DISTILL_LAUNCH void feature_distance_f16(float* row_loss, float* grad, const float* s, const __half* t, int n, int d,
                                         int distance, float grad_scale) {
    distill::feature_row(row_loss, grad, s, t, n, d, distance, grad_scale);
}

DISTILL_LAUNCH void feature_distance_bf16(float* row_loss, float* grad, const float* s, const __nv_bfloat16* t, int n,
                                          int d, int distance, float grad_scale) {
    distill::feature_row(row_loss, grad, s, t, n, d, distance, grad_scale);
}

}  // extern "C"
