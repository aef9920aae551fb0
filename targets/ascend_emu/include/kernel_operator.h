// moec's clean-room emulation of the subset of the AscendC kernel API that moec emits.
//
// Written from the public description of the programming model (moec/shared design notes: queues,
// positions, DataCopy granularity, buffer capacities) -- no code or text of Huawei's headers.  Each
// block of a kernel runs on the CPU (GetBlockIdx over blockDim); every hardware rule moec relies on
// is checked and a violation throws, naming the kernel, the block, the API call and the rule.
//
// Rules enforced: per-position capacity (UB = VECIN+VECOUT+VECCALC 192 KiB, L1 512 KiB, L0A/L0B
// 64 KiB, L0C 128 KiB); buffer lengths rounded to 32 B (L0A/L0B 512 B, L0C 64 B) and 32 B aligned;
// at most 64 buffers per kernel and 8 per queue; queue protocol (AllocTensor -> EnQue -> DeQue ->
// FreeTensor, no more live tensors than buffers, no use of a freed or still-enqueued tensor,
// nothing left allocated when the block ends); DataCopy moves whole 32-byte blocks (count*sizeof(T)
// % 32 == 0, else use DataCopyPad); GM accesses inside SetGlobalBuffer's size and inside a
// registered device allocation; vector APIs only on vector positions (VECIN/VECOUT/VECCALC) and
// within the tensor; count-form vector APIs with count <= the tensors' sizes; repeat-form limits
// (repeatTimes <= 255, 256 B per repeat); blockDim <= the SoC's core count for the kernel type.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#define __global__
#define __aicore__
#define __gm__
typedef uint8_t *GM_ADDR;
#define KERNEL_TYPE_AIV_ONLY 1
#define KERNEL_TYPE_AIC_ONLY 2
#define KERNEL_TYPE_MIX_AIC_1_2 3
#define KERNEL_TASK_TYPE_DEFAULT(x) ::moec_emu::set_kernel_type(x)

namespace moec_emu {

struct Violation : std::runtime_error {
  explicit Violation(const std::string &m) : std::runtime_error(m) {}
};

struct Soc {
  const char *name;
  int aic, aiv;
};

struct State {
  const char *kernel = "?";
  int64_t block = 0, block_num = 1;
  int kernel_type = 1;
  size_t used[5] = {0, 0, 0, 0, 0};  // UB, L1, L0A, L0B, L0C
  int nbuf = 0;
  Soc soc{"Ascend910B2", 24, 48};
  std::vector<std::pair<const uint8_t *, size_t>> gm;  // registered device allocations
  std::string last_error;
};

inline State &st() {
  static thread_local State s;
  return s;
}

[[noreturn]] inline void fail(const char *call, const std::string &rule) {
  char head[256];
  snprintf(head, sizeof head, "[moec-ascend-emu] kernel '%s' block %lld: %s: ", st().kernel,
           (long long)st().block, call);
  throw Violation(std::string(head) + rule);
}

inline void set_kernel_type(int t) { st().kernel_type = t; }

inline void SetSoc(const char *name) {
  static const Soc socs[] = {{"Ascend910B1", 24, 48}, {"Ascend910B2", 24, 48}, {"Ascend910B3", 20, 40},
                             {"Ascend910B4", 20, 40}, {"Ascend910_93", 24, 48}};
  for (const Soc &s : socs)
    if (!strcmp(s.name, name)) { st().soc = s; return; }
  throw Violation(std::string("[moec-ascend-emu] unknown SoC '") + name + "'");
}

inline void RegisterGM(const void *p, size_t bytes) { st().gm.push_back({(const uint8_t *)p, bytes}); }
inline void UnregisterGM(const void *p) {
  auto &g = st().gm;
  g.erase(std::remove_if(g.begin(), g.end(), [p](auto &e) { return e.first == p; }), g.end());
}

inline void check_gm(const void *p, size_t bytes, const char *call) {
  const uint8_t *a = (const uint8_t *)p;
  for (auto &e : st().gm)
    if (a >= e.first && a + bytes <= e.first + e.second) return;
  fail(call, "global memory access of " + std::to_string(bytes) +
                 " bytes outside every device allocation (out-of-bounds GM access)");
}

inline const std::string &LastError() { return st().last_error; }

// Runs every block of a kernel; returns 0, or 1 with LastError() set on a rule violation.
template <typename F, typename... A>
int Launch(const char *name, uint32_t blockDim, F kernel, A... args) {
  State &s = st();
  s.kernel = name;
  s.last_error.clear();
  try {
    s.kernel_type = 1;
    int limit = s.soc.aiv;
    if (blockDim == 0) fail("<<<>>>", "blockDim must be >= 1");
    for (uint32_t b = 0; b < blockDim; b++) {
      s.block = b;
      s.block_num = blockDim;
      for (size_t &u : s.used) u = 0;
      s.nbuf = 0;
      kernel(args...);
      limit = s.kernel_type == KERNEL_TYPE_AIC_ONLY ? s.soc.aic : s.soc.aiv;
      if ((int)blockDim > limit)
        fail("<<<>>>", "blockDim " + std::to_string(blockDim) + " exceeds the " + std::to_string(limit) +
                           " cores of " + s.soc.name + " for this kernel type");
    }
  } catch (const Violation &v) {
    s.last_error = v.what();
    return 1;
  }
  return 0;
}

}  // namespace moec_emu

#define MOEC_EMU_LAUNCH(kernel, blockDim, stream, ...) ::moec_emu::Launch(#kernel, blockDim, kernel, __VA_ARGS__)

namespace AscendC {

enum class TPosition { GM, VECIN, VECOUT, VECCALC, A1, B1, A2, B2, CO1, CO2 };
using QuePosition = TPosition;
enum class RoundMode { CAST_NONE, CAST_RINT, CAST_ROUND, CAST_FLOOR, CAST_CEIL, CAST_TRUNC };
enum class HardEvent { MTE2_V, V_MTE3, MTE3_V, V_MTE2, MTE2_MTE3, MTE3_MTE2, S_V, V_S };
enum PipeType { PIPE_V, PIPE_MTE2, PIPE_MTE3, PIPE_S, PIPE_ALL };

inline int64_t GetBlockIdx() { return moec_emu::st().block; }
inline int64_t GetBlockNum() { return moec_emu::st().block_num; }

inline int phys_of(TPosition p) {
  switch (p) {
    case TPosition::VECIN: case TPosition::VECOUT: case TPosition::VECCALC: case TPosition::CO2: return 0;
    case TPosition::A1: case TPosition::B1: return 1;
    case TPosition::A2: return 2;
    case TPosition::B2: return 3;
    case TPosition::CO1: return 4;
    default: return -1;
  }
}
inline size_t capacity_of(int phys) {
  static const size_t cap[5] = {192 * 1024, 512 * 1024, 64 * 1024, 64 * 1024, 128 * 1024};
  return cap[phys];
}
inline size_t granule_of(int phys) {
  static const size_t g[5] = {32, 32, 512, 512, 64};
  return g[phys];
}
inline const char *pos_name(TPosition p) {
  static const char *n[] = {"GM", "VECIN", "VECOUT", "VECCALC", "A1", "B1", "A2", "B2", "CO1", "CO2"};
  return n[(int)p];
}

// one physical buffer handed out by TPipe
struct BufRec {
  std::vector<uint8_t> mem;  // over-allocated for 32-byte alignment
  uint8_t *base = nullptr;
  uint32_t len = 0;
  TPosition pos = TPosition::VECCALC;
  int state = 0;  // 0 free, 1 allocated, 2 enqueued, 3 dequeued (TBuf: always 1)
  uint32_t gen = 0;
};

template <typename T>
class LocalTensor {
 public:
  LocalTensor() = default;
  LocalTensor(BufRec *b, uint32_t off, uint32_t n) : buf_(b), off_(off), n_(n), gen_(b ? b->gen : 0) {}
  T *addr(const char *call, uint32_t count = 0) const {
    if (!buf_) moec_emu::fail(call, "use of an empty LocalTensor (never allocated)");
    if (buf_->gen != gen_ || buf_->state == 0) moec_emu::fail(call, "use of a LocalTensor after FreeTensor");
    if (count > n_)
      moec_emu::fail(call, "count " + std::to_string(count) + " exceeds the tensor's " + std::to_string(n_) +
                               " elements (local buffer overflow)");
    return reinterpret_cast<T *>(buf_->base + off_ * sizeof(T));
  }
  T *vec(const char *call, uint32_t count) const {
    T *p = addr(call, count);
    int ph = phys_of(buf_->pos);
    if (ph != 0)
      moec_emu::fail(call, std::string("vector instruction on a tensor in position ") + pos_name(buf_->pos) +
                               " (vector units only reach the Unified Buffer: VECIN/VECOUT/VECCALC)");
    if (buf_->state == 2) moec_emu::fail(call, "tensor is enqueued: DeQue it before computing on it");
    return p;
  }
  T GetValue(uint32_t i) const { return addr("LocalTensor::GetValue", i + 1)[i]; }
  void SetValue(uint32_t i, T v) const { addr("LocalTensor::SetValue", i + 1)[i] = v; }
  LocalTensor operator[](uint32_t off) const {
    if (off > n_) moec_emu::fail("LocalTensor::operator[]", "offset beyond the tensor");
    LocalTensor t(*this);
    t.off_ += off;
    t.n_ -= off;
    return t;
  }
  uint32_t GetSize() const { return n_; }
  BufRec *rec() const { return buf_; }
  uint32_t gen() const { return gen_; }
  TPosition GetPosition() const { return buf_ ? buf_->pos : TPosition::GM; }

 private:
  BufRec *buf_ = nullptr;
  uint32_t off_ = 0, n_ = 0, gen_ = 0;
};

template <typename T>
class GlobalTensor {
 public:
  void SetGlobalBuffer(__gm__ T *p, uint64_t n) {
    p_ = p;
    n_ = n;
    moec_emu::check_gm(p, n * sizeof(T), "GlobalTensor::SetGlobalBuffer");
  }
  GlobalTensor operator[](uint64_t off) const {
    if (off > n_) moec_emu::fail("GlobalTensor::operator[]", "offset " + std::to_string(off) + " beyond the "
                                 + std::to_string(n_) + " elements given to SetGlobalBuffer");
    GlobalTensor g(*this);
    g.p_ += off;
    g.n_ -= off;
    return g;
  }
  T *span(const char *call, uint64_t count) const {
    if (count > n_)
      moec_emu::fail(call, "access of " + std::to_string(count) + " elements beyond the " + std::to_string(n_) +
                               " left in the GlobalTensor (out-of-bounds GM access)");
    moec_emu::check_gm(p_, count * sizeof(T), call);
    return p_;
  }
  T GetValue(uint64_t i) const { return span("GlobalTensor::GetValue", i + 1)[i]; }
  void SetValue(uint64_t i, T v) const { span("GlobalTensor::SetValue", i + 1)[i] = v; }
  uint64_t GetSize() const { return n_; }

 private:
  T *p_ = nullptr;
  uint64_t n_ = 0;
};

class TPipe;

template <TPosition P, int DEPTH = 1>
class TQue {
 public:
  template <typename T>
  LocalTensor<T> AllocTensor() {
    for (BufRec *b : bufs_)
      if (b->state == 0) {
        b->state = 1;
        b->gen++;
        return LocalTensor<T>(b, 0, b->len / sizeof(T));
      }
    if (bufs_.empty()) moec_emu::fail("TQue::AllocTensor", "queue has no buffers (call TPipe::InitBuffer first)");
    moec_emu::fail("TQue::AllocTensor", "all " + std::to_string(bufs_.size()) +
                                            " buffers of the queue are in use (FreeTensor one first)");
  }
  template <typename T>
  bool EnQue(const LocalTensor<T> &t) {
    BufRec *b = own(t, "TQue::EnQue");
    if (b->state != 1) moec_emu::fail("TQue::EnQue", "only a freshly allocated tensor can be enqueued");
    if ((int)fifo_.size() >= std::max(DEPTH, 1) * (int)bufs_.size())
      moec_emu::fail("TQue::EnQue", "queue depth exceeded");
    b->state = 2;
    fifo_.push_back(b);
    return true;
  }
  template <typename T>
  LocalTensor<T> DeQue() {
    if (fifo_.empty()) moec_emu::fail("TQue::DeQue", "queue is empty (DeQue before EnQue)");
    BufRec *b = fifo_.front();
    fifo_.erase(fifo_.begin());
    b->state = 3;
    return LocalTensor<T>(b, 0, b->len / sizeof(T));
  }
  template <typename T>
  void FreeTensor(const LocalTensor<T> &t) {
    BufRec *b = own(t, "TQue::FreeTensor");
    if (b->state == 2) moec_emu::fail("TQue::FreeTensor", "tensor is still enqueued (DeQue it first)");
    b->state = 0;
    b->gen++;
  }
  std::vector<BufRec *> bufs_;
  std::vector<BufRec *> fifo_;

 private:
  template <typename T>
  BufRec *own(const LocalTensor<T> &t, const char *call) {
    BufRec *b = t.rec();
    if (!b || std::find(bufs_.begin(), bufs_.end(), b) == bufs_.end())
      moec_emu::fail(call, "tensor does not belong to this queue");
    if (b->gen != t.gen() || b->state == 0) moec_emu::fail(call, "tensor was already freed");
    return b;
  }
};

template <TPosition P>
class TBuf {
 public:
  template <typename T>
  LocalTensor<T> Get() {
    if (!rec_) moec_emu::fail("TBuf::Get", "TBuf has no memory (call TPipe::InitBuffer first)");
    return LocalTensor<T>(rec_, 0, rec_->len / sizeof(T));
  }
  template <typename T>
  LocalTensor<T> Get(uint32_t n) {
    LocalTensor<T> t = Get<T>();
    if (n > t.GetSize()) moec_emu::fail("TBuf::Get", "requested more elements than the buffer holds");
    return LocalTensor<T>(rec_, 0, n);
  }
  BufRec *rec_ = nullptr;
};

class TPipe {
 public:
  TPipe() = default;
  TPipe(const TPipe &) = delete;
  template <TPosition P, int D>
  void InitBuffer(TQue<P, D> &q, uint32_t num, uint32_t len) {
    if (num < 1 || num > 8) moec_emu::fail("TPipe::InitBuffer", "a queue holds 1..8 buffers, got " + std::to_string(num));
    for (uint32_t i = 0; i < num; i++) {
      q.bufs_.push_back(alloc(P, len));
      qbufs_.push_back(q.bufs_.back());  // owned here: queues may be destroyed before the pipe
    }
  }
  template <TPosition P>
  void InitBuffer(TBuf<P> &b, uint32_t len) {
    b.rec_ = alloc(P, len);
    b.rec_->state = 1;
  }
  // end of the block: nothing may remain allocated or enqueued
  ~TPipe() noexcept(false) {
    bool unwinding = std::uncaught_exceptions() > 0;
    std::vector<BufRec *> recs;
    recs.swap(recs_);
    struct Cleanup {
      std::vector<BufRec *> &r;
      ~Cleanup() { for (BufRec *b : r) delete b; }
    } cleanup{recs};
    for (BufRec *b : qbufs_)
      if (b->state != 0 && !unwinding)
        moec_emu::fail("kernel end", std::string("a tensor of a ") + pos_name(b->pos) +
                                         " queue is still allocated or enqueued (missing FreeTensor: leak)");
  }
  void Destroy() {}

 private:
  BufRec *alloc(TPosition p, uint32_t len) {
    int ph = phys_of(p);
    if (ph < 0) moec_emu::fail("TPipe::InitBuffer", "GM is not an on-chip position");
    moec_emu::State &s = moec_emu::st();
    if (++s.nbuf > 64) moec_emu::fail("TPipe::InitBuffer", "more than 64 buffers in one kernel");
    size_t g = granule_of(ph);
    size_t rounded = (len + g - 1) / g * g;
    if (s.used[ph] + rounded > capacity_of(ph))
      moec_emu::fail("TPipe::InitBuffer", std::string("capacity of ") + pos_name(p) + " exceeded: " +
                                              std::to_string(s.used[ph] + rounded) + " bytes requested in total, the "
                                              "physical buffer holds " + std::to_string(capacity_of(ph)));
    s.used[ph] += rounded;
    BufRec *b = new BufRec();
    b->mem.assign(rounded + 64, 0);
    uintptr_t a = ((uintptr_t)b->mem.data() + 31) & ~(uintptr_t)31;
    b->base = (uint8_t *)a;
    b->len = (uint32_t)rounded;
    b->pos = p;
    recs_.push_back(b);
    return b;
  }
  std::vector<BufRec *> recs_;
  std::vector<BufRec *> qbufs_;
};

// ---- data movement ------------------------------------------------------------------------------
struct DataCopyParams {
  uint16_t blockCount = 1, blockLen = 0, srcStride = 0, dstStride = 0;  // blockLen/strides: 32-byte units
};
struct DataCopyExtParams {
  uint16_t blockCount = 1;
  uint32_t blockLen = 0;  // bytes
  uint32_t srcStride = 0, dstStride = 0;
  uint32_t rsv = 0;
};
template <typename T>
struct DataCopyPadExtParams {
  bool isPad = false;
  uint8_t leftPadding = 0, rightPadding = 0;
  T paddingValue = T();
};

template <typename T>
inline void check_granule(uint32_t count, const char *call) {
  if ((count * sizeof(T)) % 32)
    moec_emu::fail(call, "count*sizeof(T)=" + std::to_string(count * sizeof(T)) +
                             " bytes is not a multiple of 32 (DataCopy moves whole 32-byte blocks; use DataCopyPad)");
}

template <typename T>
inline void DataCopy(const LocalTensor<T> &dst, const GlobalTensor<T> &src, uint32_t count) {
  check_granule<T>(count, "DataCopy(GM->local)");
  memcpy(dst.addr("DataCopy(GM->local)", count), src.span("DataCopy(GM->local)", count), count * sizeof(T));
}
template <typename T>
inline void DataCopy(const GlobalTensor<T> &dst, const LocalTensor<T> &src, uint32_t count) {
  check_granule<T>(count, "DataCopy(local->GM)");
  memcpy(dst.span("DataCopy(local->GM)", count), src.addr("DataCopy(local->GM)", count), count * sizeof(T));
}
template <typename T>
inline void DataCopy(const LocalTensor<T> &dst, const LocalTensor<T> &src, uint32_t count) {
  check_granule<T>(count, "DataCopy(local->local)");
  memmove(dst.addr("DataCopy(local->local)", count), src.addr("DataCopy(local->local)", count), count * sizeof(T));
}
// GM -> UB, rows of blockLen bytes (any length; the UB side of each row is padded to 32 bytes)
template <typename T>
inline void DataCopyPad(const LocalTensor<T> &dst, const GlobalTensor<T> &src, const DataCopyExtParams &p,
                        const DataCopyPadExtParams<T> &pad) {
  const char *call = "DataCopyPad(GM->local)";
  if (p.blockLen % sizeof(T)) moec_emu::fail(call, "blockLen must be a whole number of elements");
  uint32_t row = p.blockLen / sizeof(T);
  uint32_t ub_row = (p.blockLen + 31) / 32 * 32 / sizeof(T) + p.dstStride * 32 / sizeof(T);
  uint64_t g_row = row + p.srcStride / sizeof(T);
  T *d = dst.addr(call, (p.blockCount - 1) * ub_row + (p.blockLen + 31) / 32 * 32 / sizeof(T));
  const T *s = src.span(call, (p.blockCount - 1) * g_row + row);
  for (uint32_t r = 0; r < p.blockCount; r++) {
    memcpy(d + r * ub_row, s + r * g_row, p.blockLen);
    if (pad.isPad)
      for (uint32_t i = row; i < (p.blockLen + 31) / 32 * 32 / sizeof(T); i++) d[r * ub_row + i] = pad.paddingValue;
  }
}
// UB -> GM, rows of blockLen bytes
template <typename T>
inline void DataCopyPad(const GlobalTensor<T> &dst, const LocalTensor<T> &src, const DataCopyExtParams &p) {
  const char *call = "DataCopyPad(local->GM)";
  if (p.blockLen % sizeof(T)) moec_emu::fail(call, "blockLen must be a whole number of elements");
  uint32_t row = p.blockLen / sizeof(T);
  uint32_t ub_row = (p.blockLen + 31) / 32 * 32 / sizeof(T) + p.srcStride * 32 / sizeof(T);
  uint64_t g_row = row + p.dstStride / sizeof(T);
  const T *s = src.addr(call, (p.blockCount - 1) * ub_row + row);
  T *d = dst.span(call, (p.blockCount - 1) * g_row + row);
  for (uint32_t r = 0; r < p.blockCount; r++) memcpy(d + r * g_row, s + r * ub_row, p.blockLen);
}

// ---- vector instructions (count form) --------------------------------------------------------------
#define MOEC_EMU_BIN(NAME, EXPR)                                                                       \
  template <typename T>                                                                                \
  inline void NAME(const LocalTensor<T> &dst, const LocalTensor<T> &a, const LocalTensor<T> &b,        \
                   int32_t count) {                                                                    \
    T *d = dst.vec(#NAME, count);                                                                      \
    const T *x = a.vec(#NAME, count), *y = b.vec(#NAME, count);                                        \
    for (int32_t i = 0; i < count; i++) d[i] = (EXPR);                                                 \
  }
MOEC_EMU_BIN(Add, x[i] + y[i])
MOEC_EMU_BIN(Sub, x[i] - y[i])
MOEC_EMU_BIN(Mul, x[i] * y[i])
MOEC_EMU_BIN(Div, x[i] / y[i])
MOEC_EMU_BIN(Max, x[i] > y[i] ? x[i] : y[i])
MOEC_EMU_BIN(Min, x[i] < y[i] ? x[i] : y[i])
#define MOEC_EMU_SCALAR(NAME, EXPR)                                                                    \
  template <typename T>                                                                                \
  inline void NAME(const LocalTensor<T> &dst, const LocalTensor<T> &a, T s, int32_t count) {           \
    T *d = dst.vec(#NAME, count);                                                                      \
    const T *x = a.vec(#NAME, count);                                                                  \
    for (int32_t i = 0; i < count; i++) d[i] = (EXPR);                                                 \
  }
MOEC_EMU_SCALAR(Adds, x[i] + s)
MOEC_EMU_SCALAR(Muls, x[i] * s)
MOEC_EMU_SCALAR(Maxs, x[i] > s ? x[i] : s)
MOEC_EMU_SCALAR(Mins, x[i] < s ? x[i] : s)
#define MOEC_EMU_UN(NAME, EXPR)                                                                        \
  template <typename T>                                                                                \
  inline void NAME(const LocalTensor<T> &dst, const LocalTensor<T> &a, int32_t count) {                \
    T *d = dst.vec(#NAME, count);                                                                      \
    const T *x = a.vec(#NAME, count);                                                                  \
    for (int32_t i = 0; i < count; i++) d[i] = (EXPR);                                                 \
  }
MOEC_EMU_UN(Exp, (T)std::exp((double)x[i]))
MOEC_EMU_UN(Ln, (T)std::log((double)x[i]))
MOEC_EMU_UN(Abs, x[i] < 0 ? -x[i] : x[i])
MOEC_EMU_UN(Sqrt, (T)std::sqrt((double)x[i]))
MOEC_EMU_UN(Reciprocal, (T)1 / x[i])
MOEC_EMU_UN(Relu, x[i] > 0 ? x[i] : (T)0)

template <typename T>
inline void Duplicate(const LocalTensor<T> &dst, T v, int32_t count) {
  T *d = dst.vec("Duplicate", count);
  for (int32_t i = 0; i < count; i++) d[i] = v;
}
// result in dst[0]; the work tensor must hold at least count elements
template <typename T>
inline void ReduceSum(const LocalTensor<T> &dst, const LocalTensor<T> &src, const LocalTensor<T> &work, int32_t count) {
  const T *x = src.vec("ReduceSum", count);
  work.vec("ReduceSum", count);
  double s = 0;
  for (int32_t i = 0; i < count; i++) s += x[i];
  dst.vec("ReduceSum", 1)[0] = (T)s;
}
template <typename T>
inline void ReduceMax(const LocalTensor<T> &dst, const LocalTensor<T> &src, const LocalTensor<T> &work, int32_t count,
                      bool calIndex = false) {
  const T *x = src.vec("ReduceMax", count);
  work.vec("ReduceMax", count);
  if (count < 1) moec_emu::fail("ReduceMax", "count must be >= 1");
  int32_t best = 0;
  for (int32_t i = 1; i < count; i++)
    if (x[i] > x[best]) best = i;
  T *d = dst.vec("ReduceMax", calIndex ? 2 : 1);
  d[0] = x[best];
  if (calIndex) {
    uint32_t u = (uint32_t)best;
    memcpy(&d[1], &u, sizeof(u) < sizeof(T) ? sizeof(u) : sizeof(T));
  }
}
// repeat form: repeatTimes repeats of 256 bytes each, strides in 32-byte blocks (only the limits are
// modelled beyond the arithmetic: repeatTimes <= 255)
template <typename T>
inline void Add(const LocalTensor<T> &dst, const LocalTensor<T> &a, const LocalTensor<T> &b, uint64_t mask,
                uint8_t repeatTimes, int /*params*/) {
  (void)mask;
  if (repeatTimes == 0) moec_emu::fail("Add(repeat)", "repeatTimes must be 1..255");
  Add(dst, a, b, (int32_t)(repeatTimes * 256 / sizeof(T)));
}
inline void check_repeat(int repeatTimes, const char *call) {
  if (repeatTimes < 1 || repeatTimes > 255)
    moec_emu::fail(call, "repeatTimes " + std::to_string(repeatTimes) + " outside 1..255 (one repeat is 256 bytes)");
}
enum class CMPMODE { LT, GT, EQ, LE, GE, NE };
// Compare: one bit per element into dst (uint8), count*sizeof(T) must be a multiple of 256 bytes
template <typename T>
inline void Compare(const LocalTensor<uint8_t> &dst, const LocalTensor<T> &a, const LocalTensor<T> &b, CMPMODE m,
                    uint32_t count) {
  if ((count * sizeof(T)) % 256)
    moec_emu::fail("Compare", "count*sizeof(T)=" + std::to_string(count * sizeof(T)) +
                                  " bytes is not a multiple of 256 (Compare works on whole repeats)");
  const T *x = a.vec("Compare", count), *y = b.vec("Compare", count);
  uint8_t *d = dst.vec("Compare", (count + 7) / 8);
  for (uint32_t i = 0; i < count; i++) {
    bool r = m == CMPMODE::LT ? x[i] < y[i] : m == CMPMODE::GT ? x[i] > y[i] : m == CMPMODE::EQ ? x[i] == y[i]
           : m == CMPMODE::LE ? x[i] <= y[i] : m == CMPMODE::GE ? x[i] >= y[i] : x[i] != y[i];
    d[i / 8] = (uint8_t)((d[i / 8] & ~(1u << (i % 8))) | ((r ? 1u : 0u) << (i % 8)));
  }
}

template <PipeType P>
inline void PipeBarrier() {}
template <HardEvent E>
inline void SetFlag(int) {}
template <HardEvent E>
inline void WaitFlag(int) {}

// ---- cube (limits only: moec's kernels do not use the cube yet) -----------------------------------
struct MmadParams {
  uint16_t m = 0, n = 0, k = 0;
};
template <typename C, typename A, typename B>
inline void Mmad(const LocalTensor<C> &c, const LocalTensor<A> &a, const LocalTensor<B> &b, const MmadParams &p) {
  if (p.m > 4095 || p.n > 4095 || p.k > 4095)
    moec_emu::fail("Mmad", "m, n, k must be <= 4095 (got " + std::to_string(p.m) + ", " + std::to_string(p.n) + ", " +
                               std::to_string(p.k) + ")");
  if (a.GetPosition() != TPosition::A2 || b.GetPosition() != TPosition::B2 || c.GetPosition() != TPosition::CO1)
    moec_emu::fail("Mmad", "operands must be in A2 (L0A), B2 (L0B) and CO1 (L0C)");
  // plain row-major model of the fractal layouts (see README): c[m][n] += a[m][k] * b[k][n]
  const A *x = a.addr("Mmad", (uint32_t)p.m * p.k);
  const B *y = b.addr("Mmad", (uint32_t)p.k * p.n);
  C *z = c.addr("Mmad", (uint32_t)p.m * p.n);
  for (int i = 0; i < p.m; i++)
    for (int j = 0; j < p.n; j++) {
      C s = z[i * p.n + j];
      for (int q = 0; q < p.k; q++) s += (C)x[i * p.k + q] * (C)y[q * p.n + j];
      z[i * p.n + j] = s;
    }
}

}  // namespace AscendC
