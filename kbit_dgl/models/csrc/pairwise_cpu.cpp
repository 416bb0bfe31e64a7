// Pairwise L1 and RotatE (sum of complex moduli) distances on the CPU, forward and backward.
//
// Queries q (C, B, D) against candidates c (C, N, D): chunk x of B queries shares its N candidates
// (the trainer's shared negatives; evaluation is C = 1). out[x, i, j] = sum_k dist(q[x, i, k], c[x, j, k]).
//
// Why hand-written: inductor's code for these reductions (torch 2.2) saves the (C, B, N, D) moduli
// for the backward (RotatE) or accumulates one vector per reduction with a strided inner loop, and
// recomputes an exact sqrt and a division per number; this is several times slower than the
// arithmetic needs (measured: pipelines/bench_kernels.py). Here every loop runs over k, contiguous,
// vectorized by the compiler (-O3 -ffast-math: 1/sqrt becomes rsqrt plus a Newton step), each backward
// pass writes rows that only one thread owns, and nothing of size C x B x N x D is ever stored.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace {

constexpr float kEps = 1e-12f;  // inside the square root, as the Python expression has it

// Grain: about 8k (query, candidate) pairs of work per task.
inline int64_t grain(int64_t inner) { return std::max<int64_t>(1, 8192 / std::max<int64_t>(inner, 1)); }

// Forward rows: sum over k of f(a[k], b[k]). Fixed-width blocks (one vector register of 16, then 4,
// then single numbers) so that the compiler vectorizes the tail as well; a runtime-length loop would
// leave it to scalar code with an exact square root and a division per number.
template <int64_t W, typename F>
inline float row_sum(int64_t& k, int64_t d, F f) {
  float acc[W] = {0.f};
  for (; k + W <= d; k += W)
    for (int64_t kk = 0; kk < W; ++kk) acc[kk] += f(k + kk);
  float s = 0.f;
  for (int64_t kk = 0; kk < W; ++kk) s += acc[kk];
  return s;
}

template <typename F>
inline float row(int64_t d, F f) {
  int64_t k = 0;
  float s = row_sum<16>(k, d, f);
  s += row_sum<4>(k, d, f);
  return s + row_sum<1>(k, d, f);
}

inline float l1_row(const float* __restrict a, const float* __restrict b, int64_t d) {
  return row(d, [=](int64_t k) { return std::fabs(a[k] - b[k]); });
}

inline float complex_row(const float* __restrict ar, const float* __restrict ai, const float* __restrict br,
                         const float* __restrict bi, int64_t d) {
  return row(d, [=](int64_t k) {
    const float x = ar[k] - br[k], y = ai[k] - bi[k];
    const float m = x * x + y * y + kEps;
    return m / std::sqrt(m);  // sqrt(m) by a reciprocal square root: no exact sqrt on the fast path
  });
}

// The backward passes: out[k] += sum_j w[j] * f(a[k], b_j[k]) over the n rows b_j = b + j * stride,
// for one row a. Blocks of kBlock numbers of k are accumulated in registers over all j (a block of a
// fixed width vectorizes and stays in registers), the rest of the row one number at a time.
constexpr int64_t kBlock = 32;

template <int64_t W>
inline void l1_grad_block(float* __restrict out, const float* __restrict a, const float* __restrict b,
                          const float* __restrict w, int64_t n, int64_t stride) {
  float acc[W] = {0.f};
  for (int64_t j = 0; j < n; ++j) {
    const float wj = w[j];
    const float* __restrict bj = b + j * stride;
    for (int64_t k = 0; k < W; ++k) {
      const float x = a[k] - bj[k];
      acc[k] += (static_cast<float>(x > 0.f) - static_cast<float>(x < 0.f)) * wj;  // branch-free sign
    }
  }
  for (int64_t k = 0; k < W; ++k) out[k] += acc[k];
}

inline void l1_grad_row(float* out, const float* a, const float* b, const float* w, int64_t n, int64_t d) {
  int64_t k = 0;
  for (; k + kBlock <= d; k += kBlock) l1_grad_block<kBlock>(out + k, a + k, b + k, w, n, d);
  for (; k + 8 <= d; k += 8) l1_grad_block<8>(out + k, a + k, b + k, w, n, d);
  for (; k < d; ++k) l1_grad_block<1>(out + k, a + k, b + k, w, n, d);
}

// (gr, gi)[k] += sum_j w[j] * (a - b_j)[k] / |a - b_j|[k], complex numbers by parts
template <int64_t W>
inline void complex_grad_block(float* __restrict gr, float* __restrict gi, const float* __restrict ar,
                               const float* __restrict ai, const float* __restrict br, const float* __restrict bi,
                               const float* __restrict w, int64_t n, int64_t stride) {
  float accr[W] = {0.f}, acci[W] = {0.f};
  for (int64_t j = 0; j < n; ++j) {
    const float wj = w[j];
    const float* __restrict brj = br + j * stride;
    const float* __restrict bij = bi + j * stride;
    for (int64_t k = 0; k < W; ++k) {
      const float x = ar[k] - brj[k], y = ai[k] - bij[k];
      const float u = wj / std::sqrt(x * x + y * y + kEps);
      accr[k] += u * x;
      acci[k] += u * y;
    }
  }
  for (int64_t k = 0; k < W; ++k) {
    gr[k] += accr[k];
    gi[k] += acci[k];
  }
}

inline void complex_grad_row(float* gr, float* gi, const float* ar, const float* ai, const float* br,
                             const float* bi, const float* w, int64_t n, int64_t d) {
  constexpr int64_t W = kBlock / 2;  // two accumulators per number
  int64_t k = 0;
  for (; k + W <= d; k += W) complex_grad_block<W>(gr + k, gi + k, ar + k, ai + k, br + k, bi + k, w, n, d);
  for (; k + 4 <= d; k += 4) complex_grad_block<4>(gr + k, gi + k, ar + k, ai + k, br + k, bi + k, w, n, d);
  for (; k < d; ++k) complex_grad_block<1>(gr + k, gi + k, ar + k, ai + k, br + k, bi + k, w, n, d);
}

// Both gradients in one pass over the pairs, for one chunk and one block of W numbers of k: each query
// row's block is accumulated in registers over the chunk's N candidates, while each candidate's block
// takes its share in memory (N x W floats, 32 KiB at N = 256 and W = 32: cache-resident), so the sign
// (RotatE: the unit complex number) of each pair's number is computed once instead of once per pass.
// q, gq: the chunk's (B, D) rows, c, gc: its (N, D) rows, all at the block's first k; g: its (B, N).
template <int64_t W>
inline void l1_fused_block(float* __restrict gq, float* __restrict gc, const float* __restrict q,
                           const float* __restrict c, const float* __restrict g, int64_t B, int64_t N, int64_t D) {
  for (int64_t i = 0; i < B; ++i) {
    const float* __restrict qi = q + i * D;
    const float* __restrict gi = g + i * N;
    float acc[W] = {0.f};
    for (int64_t j = 0; j < N; ++j) {
      const float w = gi[j];
      const float* __restrict cj = c + j * D;
      float* __restrict gcj = gc + j * D;
      for (int64_t k = 0; k < W; ++k) {
        const float x = qi[k] - cj[k];
        const float t = (static_cast<float>(x > 0.f) - static_cast<float>(x < 0.f)) * w;
        acc[k] += t;
        gcj[k] -= t;
      }
    }
    for (int64_t k = 0; k < W; ++k) gq[i * D + k] += acc[k];
  }
}

template <int64_t W>
inline void complex_fused_block(float* __restrict gqr, float* __restrict gqi, float* __restrict gcr,
                                float* __restrict gci, const float* __restrict qr, const float* __restrict qi,
                                const float* __restrict cr, const float* __restrict ci, const float* __restrict g,
                                int64_t B, int64_t N, int64_t D) {
  for (int64_t i = 0; i < B; ++i) {
    const float* __restrict ar = qr + i * D;
    const float* __restrict ai = qi + i * D;
    const float* __restrict gi = g + i * N;
    float accr[W] = {0.f}, acci[W] = {0.f};
    for (int64_t j = 0; j < N; ++j) {
      const float w = gi[j];
      const float* __restrict br = cr + j * D;
      const float* __restrict bi = ci + j * D;
      float* __restrict hr = gcr + j * D;
      float* __restrict hi = gci + j * D;
      for (int64_t k = 0; k < W; ++k) {
        const float x = ar[k] - br[k], y = ai[k] - bi[k];
        const float u = w / std::sqrt(x * x + y * y + kEps);
        accr[k] += u * x;
        acci[k] += u * y;
        hr[k] -= u * x;
        hi[k] -= u * y;
      }
    }
    for (int64_t k = 0; k < W; ++k) {
      gqr[i * D + k] += accr[k];
      gqi[i * D + k] += acci[k];
    }
  }
}

// The blocks of k the fused passes split a row of D into: (first k, width) with widths wide, 4 or 1.
inline std::vector<std::pair<int64_t, int64_t>> k_blocks(int64_t D, int64_t wide) {
  std::vector<std::pair<int64_t, int64_t>> blocks;
  int64_t k = 0;
  for (; k + wide <= D; k += wide) blocks.emplace_back(k, wide);
  for (; k + 4 <= D; k += 4) blocks.emplace_back(k, 4);
  for (; k < D; ++k) blocks.emplace_back(k, 1);
  return blocks;
}

void check(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous() && t.dim() == 3,
              name, ": expected a contiguous float32 CPU tensor (C, rows, D)");
}

}  // namespace

torch::Tensor l1_forward(torch::Tensor q, torch::Tensor c) {
  check(q, "q"); check(c, "c");
  const int64_t C = q.size(0), B = q.size(1), N = c.size(1), D = q.size(2);
  auto out = torch::empty({C, B, N}, q.options());
  const float* qp = q.data_ptr<float>(); const float* cp = c.data_ptr<float>(); float* op = out.data_ptr<float>();
  at::parallel_for(0, C * B, grain(N * D / 16), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* cand = cp + (r / B) * N * D;
      for (int64_t j = 0; j < N; ++j) op[r * N + j] = l1_row(qp + r * D, cand + j * D, D);
    }
  });
  return out;
}

// grad (C, B, N) -> (grad_q (C, B, D), grad_c (C, N, D)); each pass recomputes the signs
std::vector<torch::Tensor> l1_backward(torch::Tensor grad, torch::Tensor q, torch::Tensor c, bool need_q,
                                       bool need_c) {
  check(grad, "grad"); check(q, "q"); check(c, "c");
  const int64_t C = q.size(0), B = q.size(1), N = c.size(1), D = q.size(2);
  auto gq = need_q ? torch::zeros_like(q) : torch::Tensor();
  auto gc = need_c ? torch::zeros_like(c) : torch::Tensor();
  const float* qp = q.data_ptr<float>(); const float* cp = c.data_ptr<float>();
  if (need_q && need_c) {  // one pass: a task per (chunk, block of k), each owning its slices of both outputs
    const auto blocks = k_blocks(D, kBlock);
    const int64_t nb = static_cast<int64_t>(blocks.size());
    const float* g = grad.data_ptr<float>(); float* oq = gq.data_ptr<float>(); float* oc = gc.data_ptr<float>();
    at::parallel_for(0, C * nb, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t x = t / nb, k0 = blocks[t % nb].first, w = blocks[t % nb].second;
        float* a = oq + x * B * D + k0; float* b = oc + x * N * D + k0;
        const float* qx = qp + x * B * D + k0; const float* cx = cp + x * N * D + k0; const float* gx = g + x * B * N;
        if (w == kBlock) l1_fused_block<kBlock>(a, b, qx, cx, gx, B, N, D);
        else if (w == 4) l1_fused_block<4>(a, b, qx, cx, gx, B, N, D);
        else l1_fused_block<1>(a, b, qx, cx, gx, B, N, D);
      }
    });
    return {gq, gc};
  }
  if (need_q) {
    const float* g = grad.data_ptr<float>(); float* out = gq.data_ptr<float>();
    at::parallel_for(0, C * B, grain(N * D / 16), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        l1_grad_row(out + r * D, qp + r * D, cp + (r / B) * N * D, g + r * N, N, D);
      }
    });
  }
  if (need_c) {
    auto gt = grad.transpose(1, 2).contiguous();  // (C, N, B): a candidate's weights in a row
    const float* g = gt.data_ptr<float>(); float* out = gc.data_ptr<float>();
    at::parallel_for(0, C * N, grain(B * D / 16), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        l1_grad_row(out + r * D, cp + r * D, qp + (r / N) * B * D, g + r * B, B, D);
      }
    });
  }
  return {gq, gc};
}

torch::Tensor complex_l1_forward(torch::Tensor qr, torch::Tensor qi, torch::Tensor cr, torch::Tensor ci) {
  check(qr, "q_re"); check(qi, "q_im"); check(cr, "c_re"); check(ci, "c_im");
  const int64_t C = qr.size(0), B = qr.size(1), N = cr.size(1), D = qr.size(2);
  auto out = torch::empty({C, B, N}, qr.options());
  const float* a = qr.data_ptr<float>(); const float* b = qi.data_ptr<float>();
  const float* x = cr.data_ptr<float>(); const float* y = ci.data_ptr<float>(); float* op = out.data_ptr<float>();
  at::parallel_for(0, C * B, grain(N * D / 8), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t base = (r / B) * N * D;
      for (int64_t j = 0; j < N; ++j)
        op[r * N + j] = complex_row(a + r * D, b + r * D, x + base + j * D, y + base + j * D, D);
    }
  });
  return out;
}

std::vector<torch::Tensor> complex_l1_backward(torch::Tensor grad, torch::Tensor qr, torch::Tensor qi,
                                               torch::Tensor cr, torch::Tensor ci, bool need_q, bool need_c) {
  check(grad, "grad"); check(qr, "q_re"); check(qi, "q_im"); check(cr, "c_re"); check(ci, "c_im");
  const int64_t C = qr.size(0), B = qr.size(1), N = cr.size(1), D = qr.size(2);
  auto gqr = need_q ? torch::zeros_like(qr) : torch::Tensor(), gqi = need_q ? torch::zeros_like(qi) : torch::Tensor();
  auto gcr = need_c ? torch::zeros_like(cr) : torch::Tensor(), gci = need_c ? torch::zeros_like(ci) : torch::Tensor();
  const float* a = qr.data_ptr<float>(); const float* b = qi.data_ptr<float>();
  const float* x = cr.data_ptr<float>(); const float* y = ci.data_ptr<float>();
  if (need_q && need_c) {  // one pass, as l1_backward's
    constexpr int64_t W = kBlock / 2;
    const auto blocks = k_blocks(D, W);
    const int64_t nb = static_cast<int64_t>(blocks.size());
    const float* g = grad.data_ptr<float>();
    float* oqr = gqr.data_ptr<float>(); float* oqi = gqi.data_ptr<float>();
    float* ocr = gcr.data_ptr<float>(); float* oci = gci.data_ptr<float>();
    at::parallel_for(0, C * nb, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t h = t / nb, k0 = blocks[t % nb].first, w = blocks[t % nb].second;
        const int64_t qo = h * B * D + k0, co = h * N * D + k0;
        const float* gx = g + h * B * N;
        if (w == W)
          complex_fused_block<W>(oqr + qo, oqi + qo, ocr + co, oci + co, a + qo, b + qo, x + co, y + co, gx, B, N, D);
        else if (w == 4)
          complex_fused_block<4>(oqr + qo, oqi + qo, ocr + co, oci + co, a + qo, b + qo, x + co, y + co, gx, B, N, D);
        else
          complex_fused_block<1>(oqr + qo, oqi + qo, ocr + co, oci + co, a + qo, b + qo, x + co, y + co, gx, B, N, D);
      }
    });
    return {gqr, gqi, gcr, gci};
  }
  if (need_q) {
    const float* g = grad.data_ptr<float>(); float* outr = gqr.data_ptr<float>(); float* outi = gqi.data_ptr<float>();
    at::parallel_for(0, C * B, grain(N * D / 8), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t base = (r / B) * N * D;
        complex_grad_row(outr + r * D, outi + r * D, a + r * D, b + r * D, x + base, y + base, g + r * N, N, D);
      }
    });
  }
  if (need_c) {
    auto gt = grad.transpose(1, 2).contiguous();
    const float* g = gt.data_ptr<float>(); float* outr = gcr.data_ptr<float>(); float* outi = gci.data_ptr<float>();
    at::parallel_for(0, C * N, grain(B * D / 8), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t base = (r / N) * B * D;
        complex_grad_row(outr + r * D, outi + r * D, x + r * D, y + r * D, a + base, b + base, g + r * B, B, D);
      }
    });
  }
  return {gqr, gqi, gcr, gci};
}

// One Adam step (Kingma & Ba; torch.optim.Adam's update without weight decay, amsgrad or maximize) over
// a dense float32 parameter, in one pass: torch's CPU Adam makes six passes over the table and its
// moments (lerp, mul, addcmul, sqrt, div, addcdiv), which at a 14.5k x 200 table cost more than the
// scoring. ``step`` is the step count after this update (bias correction).
void adam_step(torch::Tensor param, torch::Tensor grad, torch::Tensor exp_avg, torch::Tensor exp_avg_sq, double lr,
               double beta1, double beta2, double eps, int64_t step) {
  for (const auto* t : {&param, &grad, &exp_avg, &exp_avg_sq})
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == torch::kFloat32 && t->is_contiguous() &&
                    t->numel() == param.numel(), "adam_step: expected contiguous float32 CPU tensors of one size");
  const float step_size = static_cast<float>(lr / (1.0 - std::pow(beta1, static_cast<double>(step))));
  const float correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(beta2, static_cast<double>(step))));
  const float b1 = static_cast<float>(beta1), b2 = static_cast<float>(beta2), e = static_cast<float>(eps);
  float* pp = param.data_ptr<float>();
  const float* gp = grad.data_ptr<float>();
  float* mp = exp_avg.data_ptr<float>();
  float* vp = exp_avg_sq.data_ptr<float>();
  at::parallel_for(0, param.numel(), 1 << 14, [=](int64_t begin, int64_t end) {
    float* __restrict p = pp;  // restrict-qualified locals: captured pointers lose it, and the loop its vectors
    const float* __restrict g = gp;
    float* __restrict m = mp;
    float* __restrict v = vp;
    for (int64_t i = begin; i < end; ++i) {
      const float gi = g[i];
      const float mi = m[i] + (1.f - b1) * (gi - m[i]);
      const float vi = b2 * v[i] + (1.f - b2) * gi * gi;
      m[i] = mi;
      v[i] = vi;
      p[i] -= step_size * mi / (std::sqrt(vi) / correction2_sqrt + e);
    }
  });
}

// The arguments of the row-sparse Adam updates: a 2-D float32 table, its two moments, and one int64 row
// id per row of values.
static void check_row_update(const char* name, const torch::Tensor& param, const torch::Tensor& rows,
                             const torch::Tensor& values, const torch::Tensor& exp_avg, const torch::Tensor& exp_avg_sq) {
  for (const auto* t : {&param, &values, &exp_avg, &exp_avg_sq})
    TORCH_CHECK(t->device().is_cpu() && t->scalar_type() == torch::kFloat32 && t->is_contiguous() && t->dim() == 2 &&
                    t->size(1) == param.size(1), name, ": expected contiguous 2-D float32 CPU tensors");
  TORCH_CHECK(exp_avg.sizes() == param.sizes() && exp_avg_sq.sizes() == param.sizes(),
              name, ": state of another shape than the parameter");
  TORCH_CHECK(rows.device().is_cpu() && rows.scalar_type() == torch::kInt64 && rows.dim() == 1 &&
                  rows.is_contiguous() && rows.numel() == values.size(0),
              name, ": expected one int64 row id per row of values");
}

// adam_step for a 2-D parameter whose gradient is zero outside `rows` (values (n, D); a row id may come
// more than once, its values summed in order): what nn.Embedding(sparse=True) gives a dense Adam. Every
// row is updated, as with the dense gradient, but the (num_rows, D) gradient is never made: no zero
// fill of the table's size, no scatter into it, and one stream less to read in the update.
void adam_step_rows(torch::Tensor param, torch::Tensor rows, torch::Tensor values, torch::Tensor exp_avg,
                    torch::Tensor exp_avg_sq, double lr, double beta1, double beta2, double eps, int64_t step) {
  check_row_update("adam_step_rows", param, rows, values, exp_avg, exp_avg_sq);
  const int64_t n = rows.numel(), width = param.size(1), num_rows = param.size(0);
  const int64_t* r = rows.data_ptr<int64_t>();
  // each row's occurrences as a list in ascending order: first[row], then next[i] (-1 ends it)
  std::vector<int64_t> first(num_rows, -1), next(n, -1);
  for (int64_t i = n - 1; i >= 0; --i) {
    TORCH_CHECK(r[i] >= 0 && r[i] < num_rows, "adam_step_rows: row id ", r[i], " out of range [0, ", num_rows, ")");
    next[i] = first[r[i]];
    first[r[i]] = i;
  }
  const float step_size = static_cast<float>(lr / (1.0 - std::pow(beta1, static_cast<double>(step))));
  const float correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(beta2, static_cast<double>(step))));
  const float b1 = static_cast<float>(beta1), b2 = static_cast<float>(beta2), e = static_cast<float>(eps);
  float* pp = param.data_ptr<float>();
  float* mp = exp_avg.data_ptr<float>();
  float* vp = exp_avg_sq.data_ptr<float>();
  const float* vals = values.data_ptr<float>();
  const int64_t* fp = first.data();
  const int64_t* np = next.data();
  at::parallel_for(0, num_rows, std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(width, 1)),
                   [=](int64_t begin, int64_t end) {
    std::vector<float> summed;  // a row that occurs more than once: its values added up in order
    for (int64_t row = begin; row < end; ++row) {
      float* __restrict p = pp + row * width;
      float* __restrict m = mp + row * width;
      float* __restrict v = vp + row * width;
      const int64_t at = fp[row];
      if (at >= 0) {  // adam_step's arithmetic, number for number
        const float* __restrict g = vals + at * width;
        if (np[at] >= 0) {
          summed.assign(g, g + width);
          for (int64_t i = np[at]; i >= 0; i = np[i]) {
            const float* __restrict more = vals + i * width;
            for (int64_t j = 0; j < width; ++j) summed[j] += more[j];
          }
          g = summed.data();
        }
        for (int64_t j = 0; j < width; ++j) {
          const float gj = g[j];
          const float mj = m[j] + (1.f - b1) * (gj - m[j]);
          const float vj = b2 * v[j] + (1.f - b2) * gj * gj;
          m[j] = mj;
          v[j] = vj;
          p[j] -= step_size * mj / (std::sqrt(vj) / correction2_sqrt + e);
        }
      } else {  // the same with a zero gradient
        for (int64_t j = 0; j < width; ++j) {
          const float mj = m[j] + (1.f - b1) * (0.f - m[j]);
          const float vj = b2 * v[j];
          m[j] = mj;
          v[j] = vj;
          p[j] -= step_size * mj / (std::sqrt(vj) / correction2_sqrt + e);
        }
      }
    }
  });
}

// torch.optim.SparseAdam's update of the rows of a coalesced row-sparse gradient (`rows` unique, values
// (n, D)) in one pass over each row, where torch makes a dozen sparse and dense passes: the same math
// (m += (1 - b1)(g - m); v += (1 - b2)(g^2 - v); p -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)).
void sparse_adam_rows(torch::Tensor param, torch::Tensor rows, torch::Tensor values, torch::Tensor exp_avg,
                      torch::Tensor exp_avg_sq, double lr, double beta1, double beta2, double eps, int64_t step) {
  check_row_update("sparse_adam_rows", param, rows, values, exp_avg, exp_avg_sq);
  const int64_t n = rows.numel(), width = param.size(1), num_rows = param.size(0);
  const int64_t* r = rows.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i)
    TORCH_CHECK(r[i] >= 0 && r[i] < num_rows, "sparse_adam_rows: row id ", r[i], " out of range [0, ", num_rows, ")");
  const float step_size = static_cast<float>(lr * std::sqrt(1.0 - std::pow(beta2, static_cast<double>(step))) /
                                             (1.0 - std::pow(beta1, static_cast<double>(step))));
  const float b1 = static_cast<float>(beta1), b2 = static_cast<float>(beta2), e = static_cast<float>(eps);
  float* pp = param.data_ptr<float>();
  const float* gp = values.data_ptr<float>();
  float* mp = exp_avg.data_ptr<float>();
  float* vp = exp_avg_sq.data_ptr<float>();
  at::parallel_for(0, n, std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(width, 1)), [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float* __restrict p = pp + r[i] * width;
      const float* __restrict g = gp + i * width;
      float* __restrict m = mp + r[i] * width;
      float* __restrict v = vp + r[i] * width;
      for (int64_t j = 0; j < width; ++j) {
        const float gj = g[j];
        const float mj = m[j] + (1.f - b1) * (gj - m[j]);
        const float vj = v[j] + (1.f - b2) * (gj * gj - v[j]);
        m[j] = mj;
        v[j] = vj;
        p[j] -= step_size * mj / (std::sqrt(vj) + e);
      }
    }
  });
}

// Distances between query rows (B, D) and candidates given by id (B, K), the candidates decoded from
// k-bit codes (1, 2, 4 or 8 bits: whole codes per byte) on the fly: row = codebook[code] * scale
// (+ offset) per block of `width` numbers, as PackedRows.rows decodes them. OGB's protocol scores each
// query against its own 1,001 candidates; inductor's code for the gather-decode-distance expression is
// a scalar loop (indirect loads), about 3x slower than the float table's. Here a byte table maps each
// byte to its decoded codes, a row is decoded into a buffer of D floats (L1-resident) and the distance
// runs over it vectorized. kind: 0 = L1, 1 = L2 (sqrt of the sum of squares), 2 = dot product.
// Each byte of a row's codes to its PB decoded values through the byte table (PB values per entry).
template <int64_t PB>
inline void decode_bytes(float* __restrict out, const uint8_t* __restrict bytes, const float* __restrict lut,
                         int64_t nbytes) {
  for (int64_t t = 0; t < nbytes; ++t) {
    const float* __restrict entry = lut + static_cast<int64_t>(bytes[t]) * PB;
    for (int64_t s = 0; s < PB; ++s) out[t * PB + s] = entry[s];
  }
}

torch::Tensor packed_ids_distance(int64_t kind, torch::Tensor query, torch::Tensor ids, torch::Tensor codes,
                                  torch::Tensor codebook, torch::Tensor scales, torch::Tensor offsets,
                                  int64_t bits, int64_t width) {
  TORCH_CHECK(query.device().is_cpu() && query.scalar_type() == torch::kFloat32 && query.is_contiguous() &&
              query.dim() == 2, "query: expected a contiguous float32 CPU tensor (B, D)");
  TORCH_CHECK(ids.scalar_type() == torch::kInt64 && ids.is_contiguous() && ids.dim() == 2 &&
              ids.size(0) == query.size(0), "ids: expected a contiguous int64 tensor (B, K)");
  TORCH_CHECK(codes.scalar_type() == torch::kUInt8 && codes.is_contiguous() && codes.dim() == 2,
              "codes: expected (N, bytes) uint8");
  TORCH_CHECK(bits == 1 || bits == 2 || bits == 4 || bits == 8, "bits must be 1, 2, 4 or 8");
  TORCH_CHECK(codebook.scalar_type() == torch::kFloat32 && codebook.is_contiguous() &&
              codebook.numel() >= (int64_t{1} << bits), "codebook: float32 with 2**bits entries");
  const int64_t b = query.size(0), k = ids.size(1), d = query.size(1), n = codes.size(0), nbytes = codes.size(1);
  const int64_t per_byte = 8 / bits;
  TORCH_CHECK(nbytes * per_byte >= d, "codes: too few bytes per row for ", d, " numbers");
  const bool has_scales = scales.numel() > 0, has_offsets = offsets.numel() > 0;
  const int64_t nblocks = has_scales ? scales.size(1) : 0;
  if (has_scales) {
    TORCH_CHECK(scales.scalar_type() == torch::kFloat32 && scales.is_contiguous() && scales.dim() == 2 &&
                scales.size(0) == n && width > 0 && nblocks * width >= d, "scales: float32 (N, blocks) covering a row");
    TORCH_CHECK(!has_offsets || (offsets.scalar_type() == torch::kFloat32 && offsets.is_contiguous() &&
                                 offsets.sizes() == scales.sizes()), "offsets: expected the shape of scales");
  }
  // byte -> its per_byte decoded codes (code s of a byte sits at bit s * bits, as PackedRows unpacks)
  std::vector<float> table(256 * per_byte);
  const float* cb = codebook.data_ptr<float>();
  for (int64_t v = 0; v < 256; ++v)
    for (int64_t s = 0; s < per_byte; ++s) table[v * per_byte + s] = cb[(v >> (s * bits)) & ((1 << bits) - 1)];
  auto out = torch::empty({b, k}, query.options());
  const float* q = query.data_ptr<float>();
  const int64_t* id = ids.data_ptr<int64_t>();
  const uint8_t* c = codes.data_ptr<uint8_t>();
  const float* sc = has_scales ? scales.data_ptr<float>() : nullptr;
  const float* of = has_offsets ? offsets.data_ptr<float>() : nullptr;
  float* o = out.data_ptr<float>();
  const float* lut = table.data();
  for (int64_t pair = 0; pair < b * k; ++pair)
    TORCH_CHECK(id[pair] >= 0 && id[pair] < n, "candidate id ", id[pair], " out of range [0, ", n, ")");
  at::parallel_for(0, b * k, grain(d), [&](int64_t lo, int64_t hi) {
    std::vector<float> buffer(nbytes * per_byte);
    float* row_buf = buffer.data();
    for (int64_t pair = lo; pair < hi; ++pair) {
      const int64_t r = id[pair];
      if (pair + 4 < hi) {  // the row four pairs ahead: all its codes and its scales (every line of an
        const int64_t ahead = id[pair + 4];  // 8-bit row: 1.35x over its first two lines, A/B at 1M x 500)
        for (int64_t line = 0; line < nbytes; line += 64) __builtin_prefetch(c + ahead * nbytes + line);
        if (sc) __builtin_prefetch(sc + ahead * nblocks);
      }
      const uint8_t* bytes = c + r * nbytes;
      switch (per_byte) {
        case 2: decode_bytes<2>(row_buf, bytes, lut, nbytes); break;
        case 1: decode_bytes<1>(row_buf, bytes, lut, nbytes); break;
        case 4: decode_bytes<4>(row_buf, bytes, lut, nbytes); break;
        default: decode_bytes<8>(row_buf, bytes, lut, nbytes); break;
      }
      for (int64_t blk = 0; blk < nblocks; ++blk) {
        const int64_t start = blk * width, stop = std::min(d, start + width);
        const float scale = sc[r * nblocks + blk];
        if (of) {
          const float offset = of[r * nblocks + blk];
          for (int64_t x = start; x < stop; ++x) row_buf[x] = row_buf[x] * scale + offset;
        } else {
          for (int64_t x = start; x < stop; ++x) row_buf[x] *= scale;
        }
      }
      const float* __restrict qi = q + (pair / k) * d;
      const float* __restrict rb = row_buf;
      if (kind == 0) {
        o[pair] = l1_row(qi, rb, d);
      } else if (kind == 1) {
        o[pair] = std::sqrt(row(d, [=](int64_t x) { const float t = qi[x] - rb[x]; return t * t; }));
      } else {
        o[pair] = row(d, [=](int64_t x) { return qi[x] * rb[x]; });
      }
    }
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("packed_ids_distance", &packed_ids_distance);
  m.def("adam_step", &adam_step);
  m.def("sparse_adam_rows", &sparse_adam_rows);
  m.def("adam_step_rows", &adam_step_rows);
  m.def("l1_forward", &l1_forward);
  m.def("l1_backward", &l1_backward);
  m.def("complex_l1_forward", &complex_l1_forward);
  m.def("complex_l1_backward", &complex_l1_backward);
}
