// The transformer ops of the Kernels contract on the GPU: the CUDA twins of kernels/cpu/CpuKernels
// (embedding, layernorm, GELU, residual, bias rows, fused softmax cross-entropy, logsumexp and
// argmax of rows, a token sampled from rows, AdamW, gradient norm, scale, fill), the rounding of GEMM operands to bf16, and the
// pieces of attention around its GEMMs (which go through cuBLAS): the heads taken apart and put
// back, the causal softmax. Every entry point is listed in kernels.def.
// Same layouts and the same math as the Java kernels; the derivations are in docs/KERNELS.md.
//
// Determinism: no atomics. Sums over rows into one value per column (layernorm's dweight/dbias,
// RMSNorm's dweight, bias sums) run in two launches: partial sums of row chunks by column tiles,
// then the chunks added in order (column_tile, store_tile_sum, ops_sum_partials). The embedding's
// scatter into dwte runs by token groups, each group's positions in order. Every run gives the
// same bits. Backward kernels accumulate (+=).
//
// Launch shapes (the host side picks them; the emulation gate uses the same):
//   elementwise / per-column kernels, AdamW over chunks: any grid, any block (grid-stride loops);
//   row kernels (layernorm, softmax CE, attention softmax): grid = rows, block = a multiple of 32 ≤ 1024;
//   partial column sums (*_partial): grid = chunks · ceil(C / 32), block = a multiple of 32 ≤ 1024.

#include <math_constants.h>
#include <stdint.h>

#include "block_reduce.cuh"

#ifndef DISTILL_LAUNCH
#define DISTILL_LAUNCH __global__
#endif

// ops_sample_rows' arguments, by value: temperature >= 0 (0: the argmax), top_k (0 or >= V: every
// entry).
struct Sampling {
    double temperature;
    int top_k;
    int unused;
};

namespace ops {

using blockreduce::block_argmax;
using blockreduce::block_max;
using blockreduce::block_sum;
using blockreduce::MAX_WARPS;

__device__ __forceinline__ long first_index() { return (long)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ long stride() { return (long)gridDim.x * blockDim.x; }

// Partial column sums: block b covers row chunk b / tiles and the COLUMN_TILE columns of tile
// b % tiles, one column per lane; the block's warps take the chunk's rows in turn.
constexpr int COLUMN_TILE = 32;

struct ColumnTile {
    int chunk, col, row_begin, row_end, row_step;
};

__device__ __forceinline__ ColumnTile column_tile(int n, int c, int chunk_rows) {
    const int tiles = (c + COLUMN_TILE - 1) / COLUMN_TILE;
    ColumnTile t;
    t.chunk = blockIdx.x / tiles;
    t.col = (blockIdx.x % tiles) * COLUMN_TILE + (threadIdx.x & 31);
    t.row_begin = t.chunk * chunk_rows + (threadIdx.x >> 5);
    const int end = (t.chunk + 1) * chunk_rows;
    t.row_end = end < n ? end : n;
    t.row_step = blockDim.x >> 5;
    return t;
}

// Each warp's sum s of the tile's column, added by warp 0 in warp order: out[chunk, col] = sum,
// or out[col] += sum when `add` (a launch of one chunk, which needs no second pass).
__device__ __forceinline__ void store_tile_sum(float* out, float s, const ColumnTile& t, int c, int add,
                                               float (*part)[COLUMN_TILE]) {
    part[threadIdx.x >> 5][threadIdx.x & 31] = s;
    __syncthreads();
    if (threadIdx.x < 32 && t.col < c) {
        float sum = 0.f;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++) sum += part[w][threadIdx.x];
        if (add) out[t.col] += sum;
        else out[(long)t.chunk * c + t.col] = sum;
    }
}

constexpr float GELU_SCALE = 0.7978845608028654f;  // sqrt(2 / pi)

// x rounded to bf16: to nearest even at 16 bits, subnormals to signed zero, NaN kept (quiet), the
// rule of VCVTNEPS2BF16 and of ReferenceKernels.roundToBf16, bit for bit.
__device__ __forceinline__ uint16_t to_bf16(float x) {
    const uint32_t u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    if ((u & 0x7f800000u) == 0u) return (uint16_t)((u >> 16) & 0x8000u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ float as_stored(float x, float*) { return x; }
__device__ __forceinline__ uint16_t as_stored(float x, uint16_t*) { return to_bf16(x); }

// Attention's heads apart: in is (b·t, parts·nh·hs), the rows of a (b, t, parts·c) tensor (qkv: 3
// parts, an output gradient: 1); out is (parts, b, nh, t, hs), each head's (t, hs) matrix whole, so
// that one strided-batched GEMM covers every (batch element, head). One thread per element of out.
template <typename Out>
__device__ void heads_split(Out* out, const float* in, int b, int t, int nh, int hs, int parts) {
    const long total = (long)parts * b * nh * t * hs;
    for (long i = first_index(); i < total; i += stride()) {
        const long e = i % hs, ti = i / hs % t, h = i / ((long)hs * t) % nh, bh = i / ((long)hs * t * nh);
        const long bi = bh % b, p = bh / b;
        out[i] = as_stored(in[((bi * t + ti) * parts + p) * nh * hs + h * hs + e], out);
    }
}

// One element of AdamW on the gradient times grad_scale (clipping's factor; x * 1 is x): c1, c2
// the bias corrections 1 - beta^step.
__device__ __forceinline__ void adamw_element(float* params, const float* grads, float* m, float* v, long i, float grad_scale,
                                              float lr, float beta1, float beta2, float eps, float weight_decay, float c1, float c2) {
    const float g = __fmul_rn(grads[i], grad_scale);   // rounded on its own, as ops_scale's product
    const float mi = beta1 * m[i] + (1.f - beta1) * g;
    const float vi = beta2 * v[i] + (1.f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    params[i] -= lr * ((mi / c1) / (sqrtf(vi / c2) + eps) + weight_decay * params[i]);
}

// Out: float, or uint16_t for bf16 (rounded by to_bf16, as the GEMMs' operands are: an activation
// that only GEMMs read, stored in half the bytes with the bits they would have made).
template <typename Out>
__device__ void layernorm_forward(Out* out, float* mean, float* rstd, const float* inp, const float* weight,
                                  const float* bias, int N, int C) {
    __shared__ float scratch[MAX_WARPS];
    const int row = blockIdx.x;
    if (row >= N) return;
    const float* x = inp + (long)row * C;
    float s = 0.f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) s += x[i];
    const float m = block_sum(s, scratch) / C;
    float v = 0.f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        const float d = x[i] - m;
        v += d * d;
    }
    const float r = 1.f / sqrtf(block_sum(v, scratch) / C + 1e-5f);
    Out* o = out + (long)row * C;
    for (int i = threadIdx.x; i < C; i += blockDim.x) o[i] = as_stored((x[i] - m) * r * weight[i] + bias[i], o);
    if (threadIdx.x == 0) {
        mean[row] = m;
        rstd[row] = r;
    }
}

template <typename Out>
__device__ void rmsnorm_forward(Out* out, float* rstd, const float* inp, const float* weight, int N, int C, float eps) {
    __shared__ float scratch[MAX_WARPS];
    const int row = blockIdx.x;
    if (row >= N) return;
    const float* x = inp + (long)row * C;
    float s = 0.f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) s += x[i] * x[i];
    const float r = 1.f / sqrtf(block_sum(s, scratch) / C + eps);
    Out* o = out + (long)row * C;
    for (int i = threadIdx.x; i < C; i += blockDim.x) o[i] = as_stored(x[i] * r * weight[i], o);
    if (threadIdx.x == 0) rstd[row] = r;
}

// An order-preserving key of a float: a larger number, a larger key; -0 as +0 (they are equal); NaN
// the smallest (0), below -inf.
__device__ __forceinline__ unsigned sample_key(float x) {
    if (x != x) return 0u;
    if (x == 0.f) x = 0.f;
    const unsigned b = __float_as_uint(x);
    return (b & 0x80000000u) ? ~b : b | 0x80000000u;
}

// The sum of v over the threads before this one, in thread order; *total gets the block's sum.
// Thread 0 adds the block's values one after another (scan holds blockDim.x + 1 entries): a fixed
// order, and three barriers where a tree scan takes two a level.
template <typename T>
__device__ T block_exclusive_scan(T v, T* scan, T* total) {
    const int t = threadIdx.x, n = blockDim.x;
    scan[t] = v;
    __syncthreads();
    if (t == 0) {
        T run = T(0);
        for (int i = 0; i < n; i++) {
            const T x = scan[i];
            scan[i] = run;
            run += x;
        }
        scan[n] = run;
    }
    __syncthreads();
    const T before = scan[t];
    *total = scan[n];
    __syncthreads();  // scan may be reused next
    return before;
}

// p of the next entry of a span, in index order: exp((x - max) / T) in float64 if it is a candidate,
// else 0; NaN (an entry of +inf against a max of +inf) as 0. Under a top k an entry is a candidate
// when its key is above the k-th largest, or equal to it and among the first `tied` such (`rank`
// counts those met so far in index order).
__device__ __forceinline__ double sample_p(float x, float max, double inv_t, bool top, unsigned kth, int tied, int& rank) {
    if (top) {
        const unsigned k = sample_key(x);
        const bool candidate = k > kth || (k == kth && rank < tied);
        rank += k == kth;
        if (!candidate) return 0.0;
    }
    const double p = exp(((double)x - (double)max) * inv_t);
    return p == p ? p : 0.0;
}

}  // namespace ops

extern "C" {

// out[b,t,:] = wte[tokens[b,t], :] + wpe[t, :]. The host has checked every id is in [0, vocab).
DISTILL_LAUNCH void ops_embedding_forward(float* out, const int* tokens, const float* wte, const float* wpe, int B, int T,
                                          int C) {
    const long total = (long)B * T * C;
    for (long i = ops::first_index(); i < total; i += ops::stride()) {
        const long bt = i / C;
        const int c = (int)(i % C), t = (int)(bt % T);
        out[i] = wte[(long)tokens[bt] * C + c] + wpe[(long)t * C + c];
    }
}

// The embedding's backward in two launches that keep the order, and so the bits, of one thread per
// channel walking the positions (t, then b): dwpe[t] += sum_b dout[b,t], one thread per (t,
// channel); and dwte by token groups, which the host builds from the ids (EmbeddingGrads.grouping):
// starts (groups + 1), each group's token, then the rows b·T + t of each group in that order. One
// thread per (group, channel) adds its rows into dwte[token]; groups have distinct tokens.
DISTILL_LAUNCH void ops_embedding_backward_positions(float* dwpe, const float* dout, int B, int T, int C) {
    const long total = (long)T * C;
    for (long i = ops::first_index(); i < total; i += ops::stride()) {
        const long t = i / C, c = i % C;
        float acc = 0.f;
        for (int b = 0; b < B; b++) acc += dout[((long)b * T + t) * C + c];
        dwpe[i] += acc;
    }
}

DISTILL_LAUNCH void ops_embedding_backward_tokens(float* dwte, const float* dout, const int* grouping, int groups, int C) {
    const int* starts = grouping;
    const int* token = grouping + groups + 1;
    const int* rows = grouping + 2 * groups + 1;
    const long total = (long)groups * C;
    for (long i = ops::first_index(); i < total; i += ops::stride()) {
        const long g = i / C, c = i % C;
        float* w = dwte + (long)token[g] * C + c;
        float acc = *w;
        for (int k = starts[g]; k < starts[g + 1]; k++) acc += dout[(long)rows[k] * C + c];
        *w = acc;
    }
}

// One block per row: out = (x - mean) * rstd * weight + bias, eps 1e-5; mean, rstd saved.
DISTILL_LAUNCH void ops_layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                          const float* bias, int N, int C) {
    ops::layernorm_forward(out, mean, rstd, inp, weight, bias, N, C);
}

DISTILL_LAUNCH void ops_layernorm_forward_bf16(uint16_t* out, float* mean, float* rstd, const float* inp, const float* weight,
                                               const float* bias, int N, int C) {
    ops::layernorm_forward(out, mean, rstd, inp, weight, bias, N, C);
}

// One block per row: dinp += rstd * (g - mean(g) - norm * mean(g * norm)), g = dout * weight.
// g is rounded once (__fmul_rn, never contracted into the subtraction's FMA), so that g - mean(g)
// is exactly 0 where a row's g are all equal: with C = 1 the true gradient is 0, and an FMA's
// rounding residue times rstd = 1/sqrt(eps) would not be.
DISTILL_LAUNCH void ops_layernorm_backward_input(float* dinp, const float* dout, const float* inp, const float* weight,
                                                 const float* mean, const float* rstd, int N, int C) {
    __shared__ float scratch[ops::MAX_WARPS];
    const int row = blockIdx.x;
    if (row >= N) return;
    const float* x = inp + (long)row * C;
    const float* d = dout + (long)row * C;
    const float m = mean[row], r = rstd[row];
    float sg = 0.f, sgn = 0.f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        const float g = __fmul_rn(d[i], weight[i]);
        sg += g;
        sgn += g * (x[i] - m) * r;
    }
    const float mg = ops::block_sum(sg, scratch) / C;
    const float mgn = ops::block_sum(sgn, scratch) / C;
    float* di = dinp + (long)row * C;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        const float norm = (x[i] - m) * r;
        di[i] += r * (__fmul_rn(d[i], weight[i]) - mg - norm * mgn);
    }
}

// Layernorm's parameter gradients by row chunks: pw[chunk, c] = sum_r dout[r,c] * norm[r,c],
// pb[chunk, c] = sum_r dout[r,c] (ops_sum_partials adds the chunks into dweight and dbias).
DISTILL_LAUNCH void ops_layernorm_params_partial(float* pw, float* pb, const float* dout, const float* inp, const float* mean,
                                                 const float* rstd, int N, int C, int chunk_rows, int add) {
    __shared__ float part_w[ops::MAX_WARPS][ops::COLUMN_TILE], part_b[ops::MAX_WARPS][ops::COLUMN_TILE];
    const ops::ColumnTile t = ops::column_tile(N, C, chunk_rows);
    float dw = 0.f, db = 0.f;
    if (t.col < C) {
        for (int r = t.row_begin; r < t.row_end; r += t.row_step) {
            const float d = dout[(long)r * C + t.col];
            dw += d * (inp[(long)r * C + t.col] - mean[r]) * rstd[r];
            db += d;
        }
    }
    ops::store_tile_sum(pw, dw, t, C, add, part_w);
    ops::store_tile_sum(pb, db, t, C, add, part_b);
}

// GPT-2's tanh GELU and its derivative. 0.5 x (1 + tanh u) is computed as x · σ(2u), as the CPU
// kernels do: the same function without the cancellation of 1 + tanh u for negative x, and with
// exp where --use_fast_math would turn tanhf into the hardware's tanh approximation (about 11
// bits). See docs/KERNELS.md#gelu.
__device__ __forceinline__ float gelu_sigmoid(float x) {  // σ(2u), u = √(2/π) (x + 0.044715 x³)
    const float u2 = (x * x * 0.044715f + 1.f) * x * (-2.f * ops::GELU_SCALE);
    return 1.f / (expf(u2) + 1.f);
}

__device__ __forceinline__ float gelu(float x) { return x * gelu_sigmoid(x); }

DISTILL_LAUNCH void ops_gelu_forward(float* out, const float* inp, long n) {
    for (long i = ops::first_index(); i < n; i += ops::stride()) out[i] = gelu(inp[i]);
}

// GELU's output rounded as the GEMMs round (ops::to_bf16): the input of the MLP's projection, which only it reads.
DISTILL_LAUNCH void ops_gelu_forward_bf16(uint16_t* out, const float* inp, long n) {
    for (long i = ops::first_index(); i < n; i += ops::stride()) out[i] = ops::to_bf16(gelu(inp[i]));
}

// gelu'(x) = s + 2 x s (1 - s) u', s = σ(2u), u' = √(2/π) (1 + 3·0.044715 x²)
DISTILL_LAUNCH void ops_gelu_backward(float* dinp, const float* inp, const float* dout, long n) {
    for (long i = ops::first_index(); i < n; i += ops::stride()) {
        const float x = inp[i];
        const float s = gelu_sigmoid(x);
        const float grad = s + 2.f * x * s * (1.f - s) * ops::GELU_SCALE * (1.f + 3.f * 0.044715f * x * x);
        dinp[i] += grad * dout[i];
    }
}

// RMSNorm (the Llama family), one block per row: out = x * rstd * weight, rstd = 1/sqrt(mean(x^2) + eps) saved.
DISTILL_LAUNCH void ops_rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int N, int C, float eps) {
    ops::rmsnorm_forward(out, rstd, inp, weight, N, C, eps);
}

DISTILL_LAUNCH void ops_rmsnorm_forward_bf16(uint16_t* out, float* rstd, const float* inp, const float* weight, int N, int C, float eps) {
    ops::rmsnorm_forward(out, rstd, inp, weight, N, C, eps);
}

// One block per row: dinp += rstd * (g - norm * mean(g * norm)), g = dout * weight, norm = x * rstd.
DISTILL_LAUNCH void ops_rmsnorm_backward_input(float* dinp, const float* dout, const float* inp, const float* weight,
                                               const float* rstd, int N, int C) {
    __shared__ float scratch[ops::MAX_WARPS];
    const int row = blockIdx.x;
    if (row >= N) return;
    const float* x = inp + (long)row * C;
    const float* d = dout + (long)row * C;
    const float r = rstd[row];
    float sgn = 0.f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) sgn += d[i] * weight[i] * x[i] * r;
    const float mgn = ops::block_sum(sgn, scratch) / C;
    float* di = dinp + (long)row * C;
    for (int i = threadIdx.x; i < C; i += blockDim.x) di[i] += r * (d[i] * weight[i] - x[i] * r * mgn);
}

// RMSNorm's weight gradient by row chunks: pw[chunk, c] = sum_r dout[r,c] * inp[r,c] * rstd[r].
DISTILL_LAUNCH void ops_rmsnorm_weight_partial(float* pw, const float* dout, const float* inp, const float* rstd, int N, int C,
                                               int chunk_rows, int add) {
    __shared__ float part[ops::MAX_WARPS][ops::COLUMN_TILE];
    const ops::ColumnTile t = ops::column_tile(N, C, chunk_rows);
    float dw = 0.f;
    if (t.col < C) {
        for (int r = t.row_begin; r < t.row_end; r += t.row_step) dw += dout[(long)r * C + t.col] * inp[(long)r * C + t.col] * rstd[r];
    }
    ops::store_tile_sum(pw, dw, t, C, add, part);
}

// SwiGLU (the Llama family's MLP): out = silu(gate) * up, silu(x) = x sigmoid(x).
__device__ __forceinline__ float swiglu(float x, float up) { return x / (1.f + expf(-x)) * up; }

DISTILL_LAUNCH void ops_swiglu_forward(float* out, const float* gate, const float* up, long n) {
    for (long i = ops::first_index(); i < n; i += ops::stride()) out[i] = swiglu(gate[i], up[i]);
}

// SwiGLU's output rounded as the GEMMs round (ops::to_bf16): the input of the down projection, which only it reads.
DISTILL_LAUNCH void ops_swiglu_forward_bf16(uint16_t* out, const float* gate, const float* up, long n) {
    for (long i = ops::first_index(); i < n; i += ops::stride()) out[i] = ops::to_bf16(swiglu(gate[i], up[i]));
}

// dgate += dout * up * silu'(gate), silu' = s (1 + x (1 - s)); dup += dout * silu(gate).
DISTILL_LAUNCH void ops_swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate, const float* up, long n) {
    for (long i = ops::first_index(); i < n; i += ops::stride()) {
        const float x = gate[i], s = 1.f / (1.f + expf(-x)), d = dout[i];
        dgate[i] += d * up[i] * s * (1.f + x * (1.f - s));
        dup[i] += d * x * s;
    }
}

// Rotary positions (the Llama family), one thread per (row, head, pair): (x_j, x_{j+hs/2}) of the head at
// position p = row % T rotated by sign * angle (cos_sin is (T, hs/2, 2)); written, or added when accumulate.
// A thread reads its pair before writing it, so out may be inp.
DISTILL_LAUNCH void ops_rope_rotate(float* out, const float* inp, const float* cos_sin, int rows, int T, int heads, int hs, int row_stride,
                                    int offset, float sign, int accumulate) {
    const int half = hs / 2;
    const long total = (long)rows * heads * half;
    for (long i = ops::first_index(); i < total; i += ops::stride()) {
        const int j = (int)(i % half), h = (int)((i / half) % heads);
        const long r = i / ((long)half * heads), p = r % T;
        const long at = r * row_stride + offset + (long)h * hs;
        const float c = cos_sin[(p * half + j) * 2], s = sign * cos_sin[(p * half + j) * 2 + 1];
        const float x1 = inp[at + j], x2 = inp[at + j + half];
        const float y1 = x1 * c - x2 * s, y2 = x2 * c + x1 * s;
        out[at + j] = accumulate ? out[at + j] + y1 : y1;
        out[at + j + half] = accumulate ? out[at + j + half] + y2 : y2;
    }
}

// Grouped-query attention's shared heads, one thread per output element: head h of out is head h / group of inp.
DISTILL_LAUNCH void ops_repeat_heads_forward(float* out, int out_stride, int out_offset, const float* inp, int in_stride, int in_offset,
                                             int rows, int heads, int group, int hs) {
    const long per_row = (long)heads * group * hs, total = rows * per_row;
    for (long i = ops::first_index(); i < total; i += ops::stride()) {
        const long r = i / per_row, e = i % per_row, h = e / hs, k = e % hs;
        out[r * out_stride + out_offset + h * hs + k] = inp[r * in_stride + in_offset + (h / group) * hs + k];
    }
}

// One thread per input element: the sum of its group's heads, in order (no atomics: the same sums every run).
DISTILL_LAUNCH void ops_repeat_heads_backward(float* dinp, int in_stride, int in_offset, const float* dout, int out_stride, int out_offset,
                                              int rows, int heads, int group, int hs) {
    const long per_row = (long)heads * hs, total = rows * per_row;
    for (long i = ops::first_index(); i < total; i += ops::stride()) {
        const long r = i / per_row, e = i % per_row, g = e / hs, k = e % hs;
        float s = dinp[r * in_stride + in_offset + g * hs + k];
        for (int m = 0; m < group; m++) s += dout[r * out_stride + out_offset + (g * group + m) * hs + k];
        dinp[r * in_stride + in_offset + g * hs + k] = s;
    }
}

DISTILL_LAUNCH void ops_residual_forward(float* out, const float* a, const float* b, long n) {
    for (long i = ops::first_index(); i < n; i += ops::stride()) out[i] = a[i] + b[i];
}

DISTILL_LAUNCH void ops_accumulate(float* dst, const float* src, long n) {
    for (long i = ops::first_index(); i < n; i += ops::stride()) dst[i] += src[i];
}

DISTILL_LAUNCH void ops_scale(float* x, float factor, long n) {
    for (long i = ops::first_index(); i < n; i += ops::stride()) x[i] *= factor;
}

// out[i] = x[i] rounded to bf16 (the operands of bf16 mixed precision's GEMMs): to nearest even,
// subnormals to zero, a NaN stays a quiet NaN. The same function as the CPU's packing
// (cpu/src/main/c/bf16_gemm.c, to_bf16), bit for bit.
DISTILL_LAUNCH void ops_round_to_bf16(uint16_t* out, const float* x, long n) {
    for (long i = ops::first_index(); i < n; i += ops::stride()) out[i] = ops::to_bf16(x[i]);
}

DISTILL_LAUNCH void ops_fill(float* x, float value, long n) {
    for (long i = ops::first_index(); i < n; i += ops::stride()) x[i] = value;
}

// out[r, :] = row for every r.
DISTILL_LAUNCH void ops_broadcast_rows(float* out, const float* row, int n, int c) {
    const long total = (long)n * c;
    for (long i = ops::first_index(); i < total; i += ops::stride()) out[i] = row[i % c];
}

// Bias sums by row chunks: partial[chunk, j] = sum_r x[r, j] over the chunk's rows.
DISTILL_LAUNCH void ops_sum_rows_partial(float* partial, const float* x, int n, int c, int chunk_rows, int add) {
    __shared__ float part[ops::MAX_WARPS][ops::COLUMN_TILE];
    const ops::ColumnTile t = ops::column_tile(n, c, chunk_rows);
    float s = 0.f;
    if (t.col < c) {
        for (int r = t.row_begin; r < t.row_end; r += t.row_step) s += x[(long)r * c + t.col];
    }
    ops::store_tile_sum(partial, s, t, c, add, part);
}

// The second pass of the partial column sums: acc[j] += sum_k partial[k, j], chunks in order; and
// the same for (acc2, partial2) when acc2 is not null (layernorm's dweight and dbias in one launch).
DISTILL_LAUNCH void ops_sum_partials(float* acc, const float* partial, float* acc2, const float* partial2, int chunks, int c) {
    for (long j = ops::first_index(); j < c; j += ops::stride()) {
        float s = 0.f, s2 = 0.f;
        for (int k = 0; k < chunks; k++) s += partial[(long)k * c + j];
        acc[j] += s;
        if (acc2 != nullptr) {
            for (int k = 0; k < chunks; k++) s2 += partial2[(long)k * c + j];
            acc2[j] += s2;
        }
    }
}

// One block per row: losses[r] = logsumexp(logits[r]) - logits[r][target]; with write_grad the
// gradient grad_scale * (softmax - onehot) replaces the logits. Rows with target == ignore get
// loss 0 and gradient 0. The host checks the other targets are in [0, V); one that is not (the
// caller of the rows-only call checks them, once for all its chunks) leaves its row NaN, loss and
// gradient, rather than reading past the row.
DISTILL_LAUNCH void ops_softmax_cross_entropy(float* losses, float* logits, const int* targets, int N, int V,
                                              int ignore_index, int write_grad, float grad_scale) {
    __shared__ float scratch[ops::MAX_WARPS];
    const int row = blockIdx.x;
    if (row >= N) return;
    float* x = logits + (long)row * V;
    const int target = targets[row];
    if (target == ignore_index || target < 0 || target >= V) {
        const float fill = target == ignore_index ? 0.f : CUDART_NAN_F;
        if (threadIdx.x == 0) losses[row] = fill;
        if (write_grad) for (int i = threadIdx.x; i < V; i += blockDim.x) x[i] = fill;
        return;
    }
    float m = -CUDART_INF_F;
    for (int i = threadIdx.x; i < V; i += blockDim.x) m = fmaxf(m, x[i]);
    m = ops::block_max(m, scratch);
    float s = 0.f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) s += expf(x[i] - m);
    const float log_z = m + logf(ops::block_sum(s, scratch));
    const float xt = x[target];
    __syncthreads();  // every thread has read x[target] before any gradient overwrites it
    if (threadIdx.x == 0) losses[row] = log_z - xt;
    if (write_grad) {
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
            x[i] = grad_scale * (expf(x[i] - log_z) - (i == target ? 1.f : 0.f));
        }
    }
}

// One block per row: out[r] = log sum_j exp(scale x[r][j]) (scale > 0), x unchanged.
DISTILL_LAUNCH void ops_logsumexp_rows(float* out, const float* x, int N, int V, float scale) {
    __shared__ float scratch[ops::MAX_WARPS];
    const int row = blockIdx.x;
    if (row >= N) return;
    const float* xr = x + (long)row * V;
    float m = -CUDART_INF_F;
    for (int i = threadIdx.x; i < V; i += blockDim.x) m = fmaxf(m, xr[i] * scale);
    m = ops::block_max(m, scratch);
    float s = 0.f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) s += expf(xr[i] * scale - m);
    s = ops::block_sum(s, scratch);
    if (threadIdx.x == 0) out[row] = m + logf(s);
}

// One block per row: out[r] = the index of the largest x[r][j], the smallest such index on ties;
// NaN never wins; 0 when no entry beats -inf (all -inf or NaN).
DISTILL_LAUNCH void ops_argmax_rows(int* out, const float* x, int N, int V) {
    __shared__ float values[ops::MAX_WARPS];
    __shared__ int indices[ops::MAX_WARPS];
    const int row = blockIdx.x;
    if (row >= N) return;
    const float* xr = x + (long)row * V;
    float best = -CUDART_INF_F;
    int at = V;  // none yet
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        if (xr[i] > best) {
            best = xr[i];
            at = i;
        }
    }
    at = ops::block_argmax(best, at, values, indices);
    if (threadIdx.x == 0) out[row] = at == V ? 0 : at;
}

// ------------------------------------------------------------------ sampling a token

// One block per row (block a multiple of 32, at most SAMPLE_BLOCK): out[r] = a token id drawn
// from softmax(x[r] / T) over the top_k largest entries (ties to the lower index) with u[r] in
// [0, 1): the first candidate, in index order, whose running sum of p passes u[r] times the row's
// sum (Kernels.sampleRows; RowSampler on the CPU). The top k: the k-th largest key by a radix
// select, four bits a pass from the top (a histogram of 16 digits a pass), which leaves how many of
// the entries equal to it are kept (the lowest ids). Each thread takes a span of consecutive ids for
// the passes that go in index order (the ties' ranks, the sums, the walk); the spans' sums meet in
// a block scan, so a draw may differ from the CPU's only where u[r] times the sum lies within
// rounding of a boundary. No mass (an entry of +inf) or T = 0: the argmax, as ops_argmax_rows
// picks it.
constexpr int SAMPLE_BLOCK = 256;

DISTILL_LAUNCH void ops_sample_rows(int* out, const float* x, const double* u, int N, int V, Sampling s) {
    __shared__ float values[ops::MAX_WARPS];
    __shared__ int indices[ops::MAX_WARPS];
    __shared__ int hist[SAMPLE_BLOCK * 16];
    __shared__ int digits[16];
    __shared__ double dscan[SAMPLE_BLOCK + 1];
    __shared__ int iscan[SAMPLE_BLOCK + 1];
    const int row = blockIdx.x;
    if (row >= N) return;
    const int t = threadIdx.x;
    const float* xr = x + (long)row * V;
    float best = -CUDART_INF_F;
    int at = V;  // none yet
    for (int i = t; i < V; i += blockDim.x) {
        if (xr[i] > best) {
            best = xr[i];
            at = i;
        }
    }
    at = ops::block_argmax(best, at, values, indices);
    if (at == V) at = 0;
    if (!(s.temperature > 0)) {
        if (t == 0) out[row] = at;
        return;
    }
    const float mx = xr[at];
    const double inv_t = 1.0 / s.temperature;
    const bool top = s.top_k > 0 && s.top_k < V;
    unsigned kth = 0u;  // the k-th largest key
    int tied = 0;       // of the entries at kth, how many (the lowest ids) are candidates
    int ties_before = 0;
    const int per = (V + (int)blockDim.x - 1) / (int)blockDim.x;
    const int lo = t * per < V ? t * per : V, hi = lo + per < V ? lo + per : V;
    if (top) {
        unsigned mask = 0u;
        int need = s.top_k;  // of the keys under the prefix so far, how many are still to take
        for (int shift = 28; shift >= 0; shift -= 4) {
            int count[16];
            for (int d = 0; d < 16; d++) count[d] = 0;
            for (int i = t; i < V; i += blockDim.x) {
                const unsigned k = ops::sample_key(xr[i]);
                if ((k & mask) == kth) count[(k >> shift) & 15u]++;
            }
            for (int d = 0; d < 16; d++) hist[t * 16 + d] = count[d];
            __syncthreads();
            if (t < 16) {
                int sum = 0;
                for (int q = 0; q < (int)blockDim.x; q++) sum += hist[q * 16 + t];
                digits[t] = sum;
            }
            __syncthreads();
            int d = 15;
            for (; d > 0 && digits[d] < need; d--) need -= digits[d];
            kth |= (unsigned)d << shift;
            mask |= 15u << shift;
        }
        tied = need;
        int mine = 0;
        for (int i = lo; i < hi; i++) mine += ops::sample_key(xr[i]) == kth;
        int all;
        ties_before = ops::block_exclusive_scan(mine, iscan, &all);
    }
    // the span's sum of p, candidates in index order
    double sum = 0.0;
    int rank = ties_before;
    for (int i = lo; i < hi; i++) sum += ops::sample_p(xr[i], mx, inv_t, top, kth, tied, rank);
    double total;
    const double before = ops::block_exclusive_scan(sum, dscan, &total);
    if (!(total > 0.0)) {
        if (threadIdx.x == 0) out[row] = at;
        return;
    }
    const double target = u[row] * total;
    int first = V, last = -1;  // the span's first id whose running sum passes the target; its last id with mass
    double walked = before;
    rank = ties_before;
    for (int i = lo; i < hi; i++) {
        const double p = ops::sample_p(xr[i], mx, inv_t, top, kth, tied, rank);
        walked += p;
        if (p > 0.0) {
            last = i;
            if (first == V && target < walked) first = i;
        }
    }
    // the first crossing over the block (the smallest id), else the last id with mass: thread 0
    // looks at the spans in order (two barriers where two block reductions take a dozen)
    hist[2 * t] = first;
    hist[2 * t + 1] = last;
    __syncthreads();
    if (t == 0) {
        int pick = -1;
        for (int q = 0; q < (int)blockDim.x && pick < 0; q++) if (hist[2 * q] < V) pick = hist[2 * q];
        for (int q = (int)blockDim.x - 1; q >= 0 && pick < 0; q--) if (hist[2 * q + 1] >= 0) pick = hist[2 * q + 1];
        out[row] = pick;
    }
}

// AdamW with decoupled weight decay and bias correction (step >= 1), elementwise.
DISTILL_LAUNCH void ops_adamw(float* params, const float* grads, float* m, float* v, long n, float lr, float beta1,
                              float beta2, float eps, float weight_decay, int step) {
    const float c1 = 1.f - powf(beta1, (float)step), c2 = 1.f - powf(beta2, (float)step);
    for (long i = ops::first_index(); i < n; i += ops::stride()) ops::adamw_element(params, grads, m, v, i, 1.f, lr, beta1, beta2, eps, weight_decay, c1, c2);
}

// ops_adamw over a whole parameter block in one launch: chunk c is the elements [starts[c],
// starts[c] + lengths[c]) with weight decay decays[c], a chunk never spanning two tensors (the
// host cuts each tensor into chunks). One block per chunk, blocks striding over the chunks; per
// element the arithmetic of ops_scale by grad_scale and then ops_adamw, the gradients left as they were.
DISTILL_LAUNCH void ops_adamw_chunks(float* params, const float* grads, float* m, float* v, const long* starts, const long* lengths,
                                     const float* decays, int chunks, float grad_scale, float lr, float beta1, float beta2, float eps,
                                     int step) {
    const float c1 = 1.f - powf(beta1, (float)step), c2 = 1.f - powf(beta2, (float)step);
    for (int c = blockIdx.x; c < chunks; c += gridDim.x) {
        const long end = starts[c] + lengths[c];
        for (long i = starts[c] + threadIdx.x; i < end; i += blockDim.x)
            ops::adamw_element(params, grads, m, v, i, grad_scale, lr, beta1, beta2, eps, decays[c], c1, c2);
    }
}

// partials[block] = sum of x^2 over the block's grid-stride slice; the host adds the partials
// (in double) for the global gradient norm. Fixed grid and block: the same bits every run.
DISTILL_LAUNCH void ops_sum_of_squares(float* partials, const float* x, long n) {
    __shared__ float scratch[ops::MAX_WARPS];
    float s = 0.f;
    for (long i = ops::first_index(); i < n; i += ops::stride()) s += x[i] * x[i];
    s = ops::block_sum(s, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// Causal softmax of attention scores, one block per row: att[j] = softmax_j(scale · preatt[j]) for
// j <= t, 0 above the diagonal up to ld. preatt and att are (B·NH, band, ld): a band of query rows
// [row0, row0 + band) of each head, row r of it query t = row0 + r % band; the whole (B·NH, T, T)
// square is band = ld = T, row0 = 0.
DISTILL_LAUNCH void ops_attention_softmax_forward(float* att, const float* preatt, int rows, int band, int row0, int ld, float scale) {
    __shared__ float scratch[ops::MAX_WARPS];
    const int row = blockIdx.x;
    if (row >= rows) return;
    const int t = row0 + row % band;
    const float* p = preatt + (long)row * ld;
    float* a = att + (long)row * ld;
    float m = -CUDART_INF_F;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) m = fmaxf(m, scale * p[j]);
    m = ops::block_max(m, scratch);
    float s = 0.f;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) s += expf(scale * p[j] - m);
    const float inv = 1.f / ops::block_sum(s, scratch);
    for (int j = threadIdx.x; j < ld; j += blockDim.x) a[j] = j <= t ? expf(scale * p[j] - m) * inv : 0.f;
}

// Generation with a KV cache: one query row per sequence over len cached key/value rows. One block per
// (sequence, query head); the block's threads split the positions for the scores, then the head's dims
// for the weighted sum of values. q (b, nh*hs); keys, values (b, max_len, kvh*hs), head h reading kv
// head h / (nh / kvh); scores (b, nh, max_len) scratch; out (b, nh*hs). Scale 1/sqrt(hs).
DISTILL_LAUNCH void ops_attention_decode(float* out, float* scores, const float* q, const float* keys, const float* values,
                                         int len, int max_len, int nh, int kvh, int hs) {
    __shared__ float scratch[ops::MAX_WARPS];
    const int bh = blockIdx.x, b = bh / nh, h = bh % nh;
    const int width = kvh * hs;
    const float scale = 1.f / sqrtf((float)hs);
    const float* qh = q + (long)bh * hs;
    const float* k = keys + (long)b * max_len * width + (long)(h / (nh / kvh)) * hs;
    const float* v = values + (long)b * max_len * width + (long)(h / (nh / kvh)) * hs;
    float* p = scores + (long)bh * max_len;
    float m = -CUDART_INF_F;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        float s = 0.f;
        for (int d = 0; d < hs; d++) s += qh[d] * k[(long)j * width + d];
        p[j] = s * scale;
        m = fmaxf(m, p[j]);
    }
    m = ops::block_max(m, scratch);
    float sum = 0.f;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        p[j] = expf(p[j] - m);
        sum += p[j];
    }
    const float inv = 1.f / ops::block_sum(sum, scratch);   // its barrier also makes every p[j] visible to the block
    for (int d = threadIdx.x; d < hs; d += blockDim.x) {
        float acc = 0.f;
        for (int j = 0; j < len; j++) acc += p[j] * v[(long)j * width + d];
        out[(long)bh * hs + d] = acc * inv;
    }
}

// Its backward: dpreatt[j] = scale · att[j] · (datt[j] - sum_k att[k] datt[k]) (overwrites dpreatt),
// 0 above the diagonal up to ld; the rows laid out as the forward's.
DISTILL_LAUNCH void ops_attention_softmax_backward(float* dpreatt, const float* datt, const float* att, int rows, int band, int row0,
                                                   int ld, float scale) {
    __shared__ float scratch[ops::MAX_WARPS];
    const int row = blockIdx.x;
    if (row >= rows) return;
    const int t = row0 + row % band;
    const float* a = att + (long)row * ld;
    const float* d = datt + (long)row * ld;
    float s = 0.f;
    for (int j = threadIdx.x; j <= t; j += blockDim.x) s += a[j] * d[j];
    const float dot = ops::block_sum(s, scratch);
    float* out = dpreatt + (long)row * ld;
    for (int j = threadIdx.x; j < ld; j += blockDim.x) out[j] = j <= t ? scale * a[j] * (d[j] - dot) : 0.f;
}

// ops::heads_split in fp32 (attention's operands under fp32 GEMMs) and rounded to bf16 (under bf16 ones).
DISTILL_LAUNCH void ops_heads_split(float* out, const float* in, int b, int t, int nh, int hs, int parts) {
    ops::heads_split(out, in, b, t, nh, hs, parts);
}

DISTILL_LAUNCH void ops_heads_split_bf16(uint16_t* out, const float* in, int b, int t, int nh, int hs, int parts) {
    ops::heads_split(out, in, b, t, nh, hs, parts);
}

// The inverse of ops_heads_split: out (b·t, parts·nh·hs) = in (parts, b, nh, t, hs), or += with
// accumulate (a gradient added to what is there: the same single rounding as a GEMM's beta 1). One
// thread per element of out.
__device__ __forceinline__ float heads_apart_at(const float* in, long i, int b, int t, int nh, int hs, int parts) {
    const long width = (long)parts * nh * hs, row = i / width, col = i % width, p = col / ((long)nh * hs), h = col / hs % nh, e = col % hs;
    return in[(((p * b + row / t) * nh + h) * t + row % t) * hs + e];
}

DISTILL_LAUNCH void ops_heads_merge(float* out, const float* in, int b, int t, int nh, int hs, int parts, int accumulate) {
    const long total = (long)b * t * parts * nh * hs;
    for (long i = ops::first_index(); i < total; i += ops::stride()) {
        const float x = heads_apart_at(in, i, b, t, nh, hs, parts);
        out[i] = accumulate ? out[i] + x : x;
    }
}

// ops_heads_merge written in bf16, rounded as the GEMMs round (ops::to_bf16): attention's output,
// which only the output projection's GEMMs read.
DISTILL_LAUNCH void ops_heads_merge_bf16(uint16_t* out, const float* in, int b, int t, int nh, int hs, int parts) {
    const long total = (long)b * t * parts * nh * hs;
    for (long i = ops::first_index(); i < total; i += ops::stride()) out[i] = ops::to_bf16(heads_apart_at(in, i, b, t, nh, hs, parts));
}

}  // extern "C"
