// Helpers shared by moec's AscendC kernel files (each is its own translation unit under CANN's
// ascendc_library; the emulator build includes them all into host/launch.cpp, hence the guard).
#ifndef MOEC_KERNEL_COMMON_H
#define MOEC_KERNEL_COMMON_H
#include "kernel_operator.h"
using namespace AscendC;

template <typename A, typename B> struct moec_same { static constexpr bool value = false; };
template <typename A> struct moec_same<A, A> { static constexpr bool value = true; };

// f = (float) v, exact (half/bfloat16_t -> float); returns f.  For float it returns v itself, no instruction.
template <typename T>
__aicore__ inline LocalTensor<float> widen(const LocalTensor<T> &v, const LocalTensor<float> &f, uint32_t n) {
  if constexpr (moec_same<T, float>::value) {
    return v;
  } else {
    Cast(f, v, RoundMode::CAST_NONE, n);
    return f;
  }
}
// o = v as T: a copy for float, round to nearest even for half/bfloat16_t
template <typename T>
__aicore__ inline void narrow(const LocalTensor<T> &o, const LocalTensor<float> &v, uint32_t n) {
  if constexpr (moec_same<T, float>::value) Muls(o, v, 1.0f, n);  // keeps -0 and NaN
  else Cast(o, v, RoundMode::CAST_RINT, n);
}
__aicore__ inline uint32_t bytes32(uint32_t n) { return (n + 31) / 32 * 32; }
#endif  // MOEC_KERNEL_COMMON_H
