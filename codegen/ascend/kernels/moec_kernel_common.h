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
// one pipe waits for another (the producer's writes before the consumer's accesses): a flag on an event id
// the pipe hands out (FetchEventID: free now, not held), never a hard-coded id that a queue may hold
template <HardEvent E>
__aicore__ inline void moec_sync() {
  const TEventID id = GetTPipePtr()->FetchEventID(E);
  SetFlag<E>(id);
  WaitFlag<E>(id);
}
__aicore__ inline uint32_t bytes32(uint32_t n) { return (n + 31) / 32 * 32; }
__aicore__ inline uint32_t pad8(uint32_t n) { return (n + 7) / 8 * 8; }

// a kernel's tiling struct (int32/float fields only), read from GM word by word
template <typename S>
__aicore__ inline void load_tiling(GM_ADDR tiling, S &t) {
  static_assert(sizeof(S) % 4 == 0, "tiling structs hold 4-byte fields only");
  GlobalTensor<int32_t> g;
  g.SetGlobalBuffer((__gm__ int32_t *)tiling, sizeof(S) / 4);
  int32_t *dst = reinterpret_cast<int32_t *>(&t);
  for (uint32_t i = 0; i < sizeof(S) / 4; i++) dst[i] = g.GetValue(i);
}
#endif  // MOEC_KERNEL_COMMON_H
