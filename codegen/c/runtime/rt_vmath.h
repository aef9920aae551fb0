/* Vector math for the runtime's f32 kernels (GCC vector extensions): e^x, the sigmoid, erfc and the
 * activations built on them.  The vector width is MV_BYTES (define it before including; default
 * MOEC_VBYTES, the target's: 64 on AVX-512, 32 on AVX2, 16 otherwise).  Every function is the same
 * formula in every lane (no lane-dependent paths), so a result does not depend on where its element
 * falls in a row.  Errors against float64 (math.erf / numpy) are measured by
 * tests/test_dense_gemm.py::test_vector_activations_accuracy over the whole float range that matters:
 * exp and silu within a few ulp, gelu (erf form) and gelu_tanh within a few 1e-7 relative (gelu_tanh's
 * argument v + 0.044715 v^3 is rounded in f32, as the scalar form's).  NaN propagates, +-inf give the
 * limits the scalar forms give. */
#ifndef MOEC_RT_VMATH_H
#define MOEC_RT_VMATH_H
#include <stdint.h>

#ifndef MOEC_VBYTES
#define MOEC_VBYTES 16
#endif
#ifndef MV_BYTES
#define MV_BYTES MOEC_VBYTES
#endif
#define MV_L (MV_BYTES / 4)

typedef float mvf __attribute__((vector_size(MV_BYTES), aligned(4)));
typedef int32_t mvi __attribute__((vector_size(MV_BYTES)));

static inline mvf mv_splat(float v) { return __builtin_shuffle((mvf){v}, (mvi){0}); }
static inline mvf mv_ld(const float *p) { mvf v; __builtin_memcpy(&v, p, sizeof v); return v; }
static inline void mv_st(float *p, mvf v) { __builtin_memcpy(p, &v, sizeof v); }
/* m ? a : b per lane (m from a vector comparison: all ones or zero) */
static inline mvf mv_sel(mvi m, mvf a, mvf b) { return (mvf)((m & (mvi)a) | (~m & (mvi)b)); }

/* e^x.  x = n ln2 + r, n = round(x / ln2) by the 1.5 * 2^23 trick, r = x - n ln2 with ln2 split in a
 * 16-bit head (n * head exact) and a tail, |r| <= ln2 / 2; e^r by its degree-7 Taylor polynomial
 * (truncation below r^8 / 8! = 5e-9 relative); times 2^n put in the exponent field (as 2^(n-s) 2^s,
 * s = [n > 0], so that n = 128 near the top of the range stays finite).  x above ln(FLT_MAX) gives +inf,
 * x below -87.34 (where e^x leaves the normal range; -inf included) gives 0: an absolute error under
 * 1.2e-38. */
static inline mvf mv_exp(mvf x) {
  const mvi big = x > mv_splat(88.7228317f), small = x < mv_splat(-87.3365447504f);
  const mvf xc = mv_sel(big | small, mv_splat(0.0f), x); /* (NaN compares false: kept) */
  const mvf magic = mv_splat(12582912.0f);
  const mvf t = xc * mv_splat(1.44269504088896341f) + magic;
  const mvf n = t - magic;
  const mvi ni = (mvi)t - (mvi)magic;
  mvf r = xc - n * mv_splat(0.693145751953125f);
  r = r - n * mv_splat(1.42860682030941723212e-6f);
  mvf q = mv_splat(1.0f / 5040.0f);
  q = q * r + mv_splat(1.0f / 720.0f);
  q = q * r + mv_splat(1.0f / 120.0f);
  q = q * r + mv_splat(1.0f / 24.0f);
  q = q * r + mv_splat(1.0f / 6.0f);
  q = q * r + mv_splat(0.5f);
  q = q * r + mv_splat(1.0f);
  q = q * r + mv_splat(1.0f);
  const mvi s = (ni > 0) & 1;
  mvf y = q * (mvf)((ni - s + 127) << 23) * (mvf)((s + 127) << 23);
  y = mv_sel(small, mv_splat(0.0f), y);
  return mv_sel(big, mv_splat(__builtin_inff()), y);
}

/* 1 / (1 + e^-x), as e / (1 + e) with e = e^x for x < 0 (no overflow: relative error a few ulp down to
 * x = -87.3, where e^x leaves the normal range; 0 at -inf, 1 at +inf) */
static inline mvf mv_sigmoid(mvf x) {
  const mvi neg = x < mv_splat(0.0f);
  const mvf e = mv_exp(mv_sel(neg, x, -x));
  return mv_sel(neg, e, mv_splat(1.0f)) / (mv_splat(1.0f) + e);
}

/* erfc(a / sqrt(2)) for a >= 0 (a NaN stays NaN), relative error a few 1e-7 wherever the result is a
 * normal float.  With x = a / sqrt(2) and t = 1 / (1 + x / 2):  erfc(x) = t e^(-x^2) e^P(t), P a degree-10
 * polynomial in u = t - 7/12 fitted (minimax, by Lawson's iteration over 3000 Chebyshev points of
 * x in [0, 10]) to log(erfc(x) / t) + x^2 with a maximum error of 5.7e-9.  -x^2 = -a^2 / 2 is kept exact:
 * a = ah + al with ah's significand 12 bits, so ah^2 / 2 is exact and the rest al (a + ah) / 2 small;
 * e^(-ah^2/2) and e^(P - al (a + ah) / 2) are taken separately (one rounded sum would lose the rest's
 * bits).  a is clamped to 10 sqrt(2), where erfc is below the smallest float. */
static inline mvf mv_erfc_scaled(mvf a) {
  const mvf amax = mv_splat(14.142135f);
  a = mv_sel(a > amax, amax, a);
  const mvf x = a * mv_splat(0.70710678118654752f);
  const mvf t = mv_splat(1.0f) / (mv_splat(1.0f) + mv_splat(0.5f) * x);
  const mvf u = t - mv_splat(0.58333333333333337f);
  mvf p = mv_splat(-0.13821962403796734f);
  p = p * u + mv_splat(0.14555157337742158f);
  p = p * u + mv_splat(0.1400891929570192f);
  p = p * u + mv_splat(-0.24530451072348378f);
  p = p * u + mv_splat(-0.05230991376188333f);
  p = p * u + mv_splat(0.2952431901667466f);
  p = p * u + mv_splat(-0.034714747087134325f);
  p = p * u + mv_splat(-0.40739938898131856f);
  p = p * u + mv_splat(0.09069216919390913f);
  p = p * u + mv_splat(1.3687370654845927f);
  p = p * u + mv_splat(-0.5585953555230501f);
  const mvf ah = (mvf)((mvi)a & (int32_t)-4096);
  const mvf al = a - ah;
  return t * mv_exp(-(ah * ah) * mv_splat(0.5f)) * mv_exp(p - al * (a + ah) * mv_splat(0.5f));
}

/* silu: y * sigmoid(y) (the sigmoid rounded first, as the separate ops) */
static inline mvf mv_silu(mvf y) { return y * mv_sigmoid(y); }

/* gelu, erf form: y (1 + erf(y / sqrt 2)) / 2, with 1 + erf(-x) = erfc(x) for y < 0 (no cancellation in
 * the negative tail) and 2 - erfc(x) for y >= 0 */
static inline mvf mv_gelu(mvf y) {
  const mvi neg = y < mv_splat(0.0f);
  const mvf e = mv_erfc_scaled(mv_sel(neg, -y, y));
  return mv_splat(0.5f) * y * mv_sel(neg, e, mv_splat(2.0f) - e);
}

/* gelu, tanh form: v (1 + tanh(c (v + 0.044715 v^3))) / 2 = v sigmoid(2 c (v + 0.044715 v^3)) */
static inline mvf mv_gelu_tanh(mvf v) {
  return v * mv_sigmoid(mv_splat(1.5957691216057308f) * (v + mv_splat(0.044715f) * v * v * v));
}
#endif
