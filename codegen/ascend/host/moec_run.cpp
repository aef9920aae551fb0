// moec_run: runs a model compiled by moec for Ascend without Python.
//
//   moec_run ASCEND_DIR OUT_DIR INPUT0.npy [INPUT1.npy ...] [--device N]
//
// ASCEND_DIR is the compiled folder's ascend/ (the CANN project).  moec_run picks, from launch/index.txt, the
// launch plan written at compile time for the inputs' element types and shapes (codegen/ascend/launch_plan.py
// describes the format: device buffers, constants in launch/consts.bin or ../model.weights.bin, kernel launches with their block dims
// and tiling structs, run-time scalars read back from the device, host-side type conversions), sets up ACL
// (aclInit, aclrtSetDevice, a stream, device buffers), runs the plan's steps in order through moec_launch
// (host/launch.cpp: ACLRT_LAUNCH_KERNEL on a CANN machine, the emulator here), and writes the outputs as
// OUT_DIR/output<k>.npy.  A plan with host-fallback ops is refused, naming them (they run only in the Python
// artifact).  Exit status: 0 done, 1 a launch or ACL call failed, 2 bad input / no plan for these shapes.
#define MOEC_ACL_DECLARE_ONLY
#include "acl/acl.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

extern "C" int moec_launch(const char *name, uint32_t blockDim, void *stream, void **args, int nargs, void *ws,
                           void *tiling);
extern "C" const char *moec_last_error();
#ifdef MOEC_ACL_STANDIN
extern "C" void moec_register(void *p, size_t n);  // the emulator library's GM registry (host/launch.cpp)
extern "C" void moec_unregister(void *p);
#endif

namespace {

struct Fail : std::runtime_error {
  int code;
  Fail(int c, const std::string &m) : std::runtime_error(m), code(c) {}
};

// -- element types ---------------------------------------------------------------------------------------------
struct DType {
  const char *name, *descr;
  size_t size;
};
const DType kTypes[] = {{"f32", "<f4", 4}, {"f16", "<f2", 2}, {"bf16", "<V2", 2}, {"f64", "<f8", 8}, {"i64", "<i8", 8},
                        {"i32", "<i4", 4}, {"i16", "<i2", 2}, {"i8", "|i1", 1},  {"u8", "|u1", 1},  {"u16", "<u2", 2},
                        {"u32", "<u4", 4}, {"u64", "<u8", 8}, {"b1", "|b1", 1}};
const DType &dtype(const std::string &n) {
  for (const DType &t : kTypes)
    if (n == t.name) return t;
  throw Fail(2, "unknown element type " + n);
}

float half_to_float(uint16_t h) {
  uint32_t s = (h >> 15) & 1, e = (h >> 10) & 31, m = h & 1023;
  float v = e == 0 ? std::ldexp((float)m, -24) : e == 31 ? (m ? NAN : INFINITY) : std::ldexp((float)(m | 1024), (int)e - 25);
  return s ? -v : v;
}
uint16_t float_to_half(float f) {  // round to nearest even, as numpy's astype(float16)
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t s = (x >> 16) & 0x8000, e = (x >> 23) & 255, m = x & 0x7fffff;
  if (e == 255) return (uint16_t)(s | 0x7c00 | (m ? 0x200 : 0));
  int ee = (int)e - 127 + 15;
  if (ee >= 31) return (uint16_t)(s | 0x7c00);
  if (ee <= 0) {
    if (ee < -10) return (uint16_t)s;
    m |= 0x800000;
    int shift = 14 - ee;
    uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    return (uint16_t)(s | r);
  }
  uint32_t r = ((uint32_t)ee << 10) | (m >> 13), rem = m & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
  return (uint16_t)(s | r);
}
float bf16_to_float(uint16_t b) {
  uint32_t x = (uint32_t)b << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}
uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40);
  return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

// element i of a buffer of type t as double / int64, and back (host-side conversions, as numpy's astype)
bool is_float(const std::string &t) { return t[0] == 'f' || t == "bf16"; }
double get_f(const std::string &t, const uint8_t *p, size_t i) {
  if (t == "f32") return ((const float *)p)[i];
  if (t == "f64") return ((const double *)p)[i];
  if (t == "f16") return half_to_float(((const uint16_t *)p)[i]);
  if (t == "bf16") return bf16_to_float(((const uint16_t *)p)[i]);
  throw Fail(2, "not a float type " + t);
}
int64_t get_i(const std::string &t, const uint8_t *p, size_t i) {
  if (t == "i64") return ((const int64_t *)p)[i];
  if (t == "i32") return ((const int32_t *)p)[i];
  if (t == "i16") return ((const int16_t *)p)[i];
  if (t == "i8") return ((const int8_t *)p)[i];
  if (t == "u8" || t == "b1") return p[i];
  if (t == "u16") return ((const uint16_t *)p)[i];
  if (t == "u32") return ((const uint32_t *)p)[i];
  if (t == "u64") return (int64_t)((const uint64_t *)p)[i];
  return (int64_t)get_f(t, p, i);
}
void put(const std::string &t, uint8_t *p, size_t i, double f, int64_t v, bool from_float) {
  if (t == "f32") ((float *)p)[i] = from_float ? (float)f : (float)v;
  else if (t == "f64") ((double *)p)[i] = from_float ? f : (double)v;
  else if (t == "f16") ((uint16_t *)p)[i] = float_to_half(from_float ? (float)f : (float)v);
  else if (t == "bf16") ((uint16_t *)p)[i] = float_to_bf16(from_float ? (float)f : (float)v);
  else {
    int64_t x = from_float ? (int64_t)f : v;
    if (t == "b1") x = from_float ? (f != 0) : (v != 0);
    size_t s = dtype(t).size;
    if (s == 8) ((int64_t *)p)[i] = x;
    else if (s == 4) ((int32_t *)p)[i] = (int32_t)x;
    else if (s == 2) ((int16_t *)p)[i] = (int16_t)x;
    else p[i] = (uint8_t)x;
  }
}

// -- expressions -----------------------------------------------------------------------------------------------
struct Expr {
  std::string op;  // "" literal, "$" symbol, else + - * // min max
  int64_t v = 0;
  std::string sym;
  std::shared_ptr<Expr> a, b;
};
using ExprP = std::shared_ptr<Expr>;
ExprP parse_expr(const std::vector<std::string> &t, size_t &i) {
  if (i >= t.size()) throw Fail(2, "launch plan: expression cut short");
  auto e = std::make_shared<Expr>();
  const std::string &s = t[i++];
  if (s == "+" || s == "-" || s == "*" || s == "//" || s == "min" || s == "max") {
    e->op = s;
    e->a = parse_expr(t, i);
    e->b = parse_expr(t, i);
  } else if (s[0] == '$') {
    e->op = "$";
    e->sym = s.substr(1);
  } else {
    e->v = std::stoll(s);
  }
  return e;
}
int64_t eval(const ExprP &e, const std::map<std::string, int64_t> &env) {
  if (e->op.empty()) return e->v;
  if (e->op == "$") {
    auto it = env.find(e->sym);
    if (it == env.end()) throw Fail(2, "launch plan: run-time scalar $" + e->sym + " used before it is read");
    return it->second;
  }
  int64_t a = eval(e->a, env), b = eval(e->b, env);
  if (e->op == "+") return a + b;
  if (e->op == "-") return a - b;
  if (e->op == "*") return a * b;
  if (e->op == "min") return a < b ? a : b;
  if (e->op == "max") return a > b ? a : b;
  if (b == 0) return 0;
  int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;  // floor division, as Python's //
}

// -- the plan --------------------------------------------------------------------------------------------------
struct Step {
  std::string kind;
  std::vector<std::string> tok;  // the line's tokens
};

std::vector<std::string> split(const std::string &line) {
  std::istringstream is(line);
  std::vector<std::string> t;
  std::string w;
  while (is >> w) t.push_back(w);
  return t;
}

std::string read_file(const std::string &path, bool binary) {
  std::ifstream f(path, binary ? std::ios::binary : std::ios::in);
  if (!f) throw Fail(2, "cannot read " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int bid(const std::string &t) { return std::stoi(t.substr(1)); }

// -- .npy -----------------------------------------------------------------------------------------------------
struct Array {
  std::string type;
  std::vector<int64_t> shape;
  std::string data;
};
Array read_npy(const std::string &path) {
  std::string s = read_file(path, true);
  if (s.size() < 10 || s.compare(0, 6, "\x93NUMPY") != 0) throw Fail(2, path + ": not a .npy file");
  int major = (uint8_t)s[6];
  size_t hl = major == 1 ? (uint8_t)s[8] | ((uint8_t)s[9] << 8)
                         : (uint8_t)s[8] | ((uint8_t)s[9] << 8) | ((uint8_t)s[10] << 16) | ((size_t)(uint8_t)s[11] << 24);
  size_t off = major == 1 ? 10 : 12;
  std::string h = s.substr(off, hl);
  auto field = [&](const std::string &k) {
    size_t p = h.find("'" + k + "'");
    if (p == std::string::npos) throw Fail(2, path + ": .npy header without " + k);
    return h.substr(h.find(':', p) + 1);
  };
  std::string d = field("descr");
  d = d.substr(d.find('\'') + 1);
  d = d.substr(0, d.find('\''));
  if (field("fortran_order").find("True") < field("fortran_order").find(','))
    throw Fail(2, path + ": Fortran-ordered arrays are not read (save a C-ordered array)");
  Array a;
  for (const DType &t : kTypes)
    if (*t.descr && d == t.descr) a.type = t.name;
  if (d == "<b1") a.type = "b1";
  if (d == "|V2") a.type = "bf16";  // numpy has no bfloat16: np.save writes ml_dtypes' bfloat16 as 2-byte void
  if (a.type.empty()) throw Fail(2, path + ": element type " + d + " is not read by moec_run");
  std::string sh = field("shape");
  sh = sh.substr(sh.find('(') + 1, sh.find(')') - sh.find('(') - 1);
  std::istringstream is(sh);
  std::string w;
  while (std::getline(is, w, ','))
    if (w.find_first_of("0123456789") != std::string::npos) a.shape.push_back(std::stoll(w));
  int64_t n = 1;
  for (int64_t x : a.shape) n *= x;
  a.data = s.substr(off + hl);
  if (a.data.size() < (size_t)n * dtype(a.type).size) throw Fail(2, path + ": fewer bytes than its shape needs");
  a.data.resize((size_t)n * dtype(a.type).size);
  return a;
}
void write_npy(const std::string &path, const std::string &type, const std::vector<int64_t> &shape,
               const std::string &data) {
  const DType &t = dtype(type);
  if (!*t.descr) throw Fail(2, "output of type " + type + " cannot be written as .npy by moec_run");
  std::string sh = "(";
  for (int64_t d : shape) sh += std::to_string(d) + ", ";
  if (shape.size() > 1) sh.resize(sh.size() - 2);
  if (shape.size() == 1) sh.resize(sh.size() - 1);
  sh += ")";
  std::string h = std::string("{'descr': '") + t.descr + "', 'fortran_order': False, 'shape': " + sh + ", }";
  while ((10 + h.size() + 1) % 64) h += ' ';
  h += '\n';
  std::ofstream f(path, std::ios::binary);
  if (!f) throw Fail(2, "cannot write " + path);
  f.write("\x93NUMPY\x01\x00", 8);
  uint16_t hl = (uint16_t)h.size();
  f.put((char)(hl & 255));
  f.put((char)(hl >> 8));
  f << h;
  f.write(data.data(), (std::streamsize)data.size());
}

void acl(aclError e, const char *what) {
  if (e != ACL_SUCCESS) throw Fail(1, std::string(what) + " failed with ACL error " + std::to_string(e));
}

struct DevBuf {
  void *p = nullptr;
  size_t bytes = 0;
  std::string type;
};

struct Runner {
  std::map<int, DevBuf> mem;
  std::map<std::string, int64_t> env;
  aclrtStream stream = nullptr;
  std::map<void *, bool> owned;

  void *alloc(size_t bytes) {
    void *p = nullptr;
    acl(aclrtMalloc(&p, bytes ? bytes : 1, ACL_MEM_MALLOC_HUGE_FIRST), "aclrtMalloc");
    owned[p] = true;
    return p;
  }
  void release(void *p) {
    if (owned.erase(p)) aclrtFree(p);
  }
  std::vector<void *> borrowed;  // the caller's device memory (moec_run_device's inputs)
  void borrow(void *p, size_t bytes) {
#ifdef MOEC_ACL_STANDIN
    moec_register(p, bytes ? bytes : 1);  // the emulator checks every GM access against registered memory
#endif
    (void)bytes;
    borrowed.push_back(p);
  }
  std::string to_host(const DevBuf &b, size_t bytes) {
    std::string h(bytes, '\0');
    acl(aclrtSynchronizeStream(stream), "aclrtSynchronizeStream");
    if (bytes) acl(aclrtMemcpy(&h[0], bytes, b.p, bytes, ACL_MEMCPY_DEVICE_TO_HOST), "aclrtMemcpy D2H");
    return h;
  }
  void to_dev(DevBuf &b, const std::string &h) {
    if (!h.empty()) acl(aclrtMemcpy(b.p, b.bytes, h.data(), h.size(), ACL_MEMCPY_HOST_TO_DEVICE), "aclrtMemcpy H2D");
  }
  DevBuf &buf(int id) {
    auto it = mem.find(id);
    if (it == mem.end()) throw Fail(2, "launch plan: buffer b" + std::to_string(id) + " used before it is made");
    return it->second;
  }
  ~Runner() {
    for (auto &o : owned) aclrtFree(o.first);
#ifdef MOEC_ACL_STANDIN
    for (void *p : borrowed) moec_unregister(p);
#endif
  }
};

std::vector<std::string> split_on(const std::string &s, char c) {
  std::vector<std::string> out;
  std::string w;
  std::istringstream is(s);
  while (std::getline(is, w, c)) out.push_back(w);
  if (!s.empty() && s.back() == c) out.push_back("");
  return out;
}

// whether concrete key (type:d0xd1,...) is one of the shapes a symbolic key covers: its dims {name=lo..hi} (hi empty:
// unbounded) take any value in the range, one value per name (codegen/ascend/launch_plan.py match_key)
bool match_key(const std::string &pattern, const std::string &key) {
  std::vector<std::string> pi = split_on(pattern, ','), ki = split_on(key, ',');
  if (pi.size() != ki.size()) return false;
  std::map<std::string, int64_t> env;
  for (size_t i = 0; i < pi.size(); i++) {
    size_t pc = pi[i].find(':'), kc = ki[i].find(':');
    if (pc == std::string::npos || kc == std::string::npos || pi[i].substr(0, pc) != ki[i].substr(0, kc)) return false;
    std::string pd = pi[i].substr(pc + 1), kd = ki[i].substr(kc + 1);
    std::vector<std::string> pds = pd.empty() ? std::vector<std::string>() : split_on(pd, 'x');
    std::vector<std::string> kds = kd.empty() ? std::vector<std::string>() : split_on(kd, 'x');
    if (pds.size() != kds.size()) return false;
    for (size_t d = 0; d < pds.size(); d++) {
      int64_t v = std::stoll(kds[d]);
      if (!pds[d].empty() && pds[d][0] == '{') {
        std::string body = pds[d].substr(1, pds[d].size() - 2);
        size_t eq = body.find('='), dots = body.find("..");
        if (eq == std::string::npos || dots == std::string::npos) return false;
        std::string name = body.substr(0, eq), hi = body.substr(dots + 2);
        int64_t lo = std::stoll(body.substr(eq + 1, dots - eq - 1));
        if (v < lo || (!hi.empty() && v > std::stoll(hi))) return false;
        auto it = env.find(name);
        if (it != env.end() && it->second != v) return false;
        env[name] = v;
      } else if (std::stoll(pds[d]) != v) {
        return false;
      }
    }
  }
  return true;
}

// a model input: host bytes (.npy: copied to the device) or a device pointer (used in place, not freed)
struct Input {
  std::string type;
  std::vector<int64_t> shape;
  std::string data;     // host bytes
  void *dev = nullptr;  // device memory (moec_run_device)
  size_t bytes = 0;
};
// what happens to the k-th output (a device buffer of n elements, its type and shape)
struct OutputSink {
  virtual void put(int k, struct Runner &r, const DevBuf &b, size_t n, const std::vector<int64_t> &shape) = 0;
  virtual ~OutputSink() {}
};

// own_acl: moec_run sets ACL up and tears it down (aclInit ... aclFinalize); a caller that already runs ACL (torch_npu,
// moec_run_device) keeps it: only its device is selected for this thread and a stream of the plan's own is made
int run_plan(const std::string &dir, std::vector<Input> &inputs, int device, OutputSink &sink, bool own_acl = true);

struct NpySink : OutputSink {
  std::string out;
  void put(int k, Runner &r, const DevBuf &b, size_t n, const std::vector<int64_t> &shape) override;
};

int run(int argc, char **argv) {
  std::vector<std::string> pos;
  int device = 0;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--device" && i + 1 < argc) device = std::stoi(argv[++i]);
    else pos.push_back(a);
  }
  if (pos.size() < 2)
    throw Fail(2, "usage: moec_run ASCEND_DIR OUT_DIR INPUT0.npy [INPUT1.npy ...] [--device N]");
  std::vector<Input> inputs;
  for (size_t i = 2; i < pos.size(); i++) {
    Array a = read_npy(pos[i]);
    Input in;
    in.type = a.type;
    in.shape = a.shape;
    in.bytes = a.data.size();
    in.data = std::move(a.data);
    inputs.push_back(std::move(in));
  }
  NpySink sink;
  sink.out = pos[1];
  return run_plan(pos[0], inputs, device, sink);
}

int run_plan(const std::string &dir, std::vector<Input> &inputs, int device, OutputSink &sink, bool own_acl) {
  // the plan for these inputs: its key is "type:d0xd1x...,type:..." (codegen/ascend/launch_plan.py plan_key), or
  // a symbolic plan's key covers it (one plan for a range of values of the model's symbolic dims)
  std::string key;
  for (size_t i = 0; i < inputs.size(); i++) {
    key += (i ? "," : "") + inputs[i].type + ":";
    for (size_t d = 0; d < inputs[i].shape.size(); d++) key += (d ? "x" : "") + std::to_string(inputs[i].shape[d]);
  }
  std::istringstream idx(read_file(dir + "/launch/index.txt", false));
  std::string line, file, known, sym_file;
  while (std::getline(idx, line)) {
    size_t sp = line.rfind(' ');
    if (sp == std::string::npos) continue;
    known += "\n  " + line.substr(0, sp);
    if (line.substr(0, sp) == key) file = line.substr(sp + 1);
    else if (sym_file.empty() && line.find('{') != std::string::npos && match_key(line.substr(0, sp), key))
      sym_file = line.substr(sp + 1);
  }
  if (file.empty()) file = sym_file;
  if (file.empty())
    throw Fail(2, "no launch plan for inputs " + key + " (compile-time plans:" + known +
                      "); plans for other shapes are made by the Python artifact");
  std::string text = read_file(dir + "/launch/plan" + file + ".txt", false);
  std::string blob = read_file(dir + "/launch/consts.bin", true);  // the plans' constants not in the weights file
  std::string weights;  // model.weights.bin, read when a constant lies there
  bool weights_read = false;
  std::vector<Step> steps;
  std::istringstream ts(text);
  std::getline(ts, line);
  if (line != "moec-ascend-launch-plan 1") throw Fail(2, "not a moec launch plan (format 1): " + dir);
  std::string host_ops;
  while (std::getline(ts, line)) {
    Step s;
    s.tok = split(line);
    if (s.tok.empty()) continue;
    s.kind = s.tok[0];
    if (s.kind == "host" && host_ops.find(" " + s.tok[2] + ",") == std::string::npos) host_ops += " " + s.tok[2] + ",";
    steps.push_back(s);
  }
  if (!host_ops.empty()) {
    host_ops.pop_back();
    throw Fail(2, "the launch plan runs these ops on the host:" + host_ops +
                      "; moec_run runs NPU kernels only (the Python artifact runs host-fallback ops)");
  }

  if (own_acl) acl(aclInit(nullptr), "aclInit");
  acl(aclrtSetDevice(device), "aclrtSetDevice");
  int rc = 0;
  {
    Runner r;
    acl(aclrtCreateStream(&r.stream), "aclrtCreateStream");
    void *ws = r.alloc(64);
    for (const Step &s : steps) {
      const std::vector<std::string> &t = s.tok;
      if (s.kind == "bind") {  // bind NAME K AXIS: a symbolic dim's value from an input's shape
        size_t k = std::stoul(t[2]), ax = std::stoul(t[3]);
        if (k >= inputs.size() || ax >= inputs[k].shape.size())
          throw Fail(2, "the plan binds $" + t[1] + " to a dim the inputs do not have");
        r.env[t[1]] = inputs[k].shape[ax];
      } else if (s.kind == "seti") {  // seti B I EXPR: one int32 element set from the host
        DevBuf &b = r.buf(bid(t[1]));
        size_t i = 3, at = std::stoul(t[2]);
        int32_t v = (int32_t)eval(parse_expr(t, i), r.env);
        if ((at + 1) * 4 > b.bytes) throw Fail(2, "launch plan: seti outside its buffer");
        acl(aclrtSynchronizeStream(r.stream), "aclrtSynchronizeStream");
        acl(aclrtMemcpy((char *)b.p + at * 4, 4, &v, 4, ACL_MEMCPY_HOST_TO_DEVICE), "aclrtMemcpy H2D");
      } else if (s.kind == "input") {
        size_t k = std::stoul(t[1]);
        if (k >= inputs.size()) throw Fail(2, "the plan needs input " + std::to_string(k));
        if (inputs[k].type != t[3]) throw Fail(2, "input " + std::to_string(k) + " is " + inputs[k].type + ", the plan takes " + t[3]);
        DevBuf b;
        b.type = t[3];
        b.bytes = inputs[k].bytes;
        if (inputs[k].dev) {  // already on the device: used in place (the caller's memory: never freed here)
          b.p = inputs[k].dev;
          r.borrow(b.p, b.bytes);
        } else {
          b.p = r.alloc(b.bytes);
          r.to_dev(b, inputs[k].data);
        }
        r.mem[bid(t[2])] = b;
      } else if (s.kind == "const") {
        DevBuf b;
        b.type = t[2];
        size_t off = std::stoul(t[4]), nb = std::stoul(t[5]);
        const std::string *src = &blob;
        if (t.size() > 6) {  // "weights": the artifact's model.weights.bin, above this folder (weights stored once)
          if (t[6] != "weights") throw Fail(2, "launch plan: a constant in an unknown file '" + t[6] + "'");
          if (!weights_read) {
            weights = read_file(dir + "/../model.weights.bin", true);
            weights_read = true;
          }
          src = &weights;
        }
        if (off + nb > src->size()) throw Fail(2, "launch plan: a constant lies outside its file");
        b.bytes = nb;
        b.p = r.alloc(nb);
        r.to_dev(b, src->substr(off, nb));
        r.mem[bid(t[1])] = b;
      } else if (s.kind == "alloc") {
        size_t i = 3;
        int64_t n = eval(parse_expr(t, i), r.env);
        DevBuf b;
        b.type = t[2];
        b.bytes = (size_t)(n > 0 ? n : 0) * dtype(b.type).size;
        b.p = r.alloc(b.bytes);
        const std::string &fill = t[i];
        if (fill == "zero") {
          if (b.bytes) acl(aclrtMemset(b.p, b.bytes, 0, b.bytes), "aclrtMemset");
        } else {
          std::string h(b.bytes, '\0');
          for (size_t e = 0; e < (size_t)(n > 0 ? n : 0); e++)
            put(b.type, (uint8_t *)&h[0], e, NAN, fill == "nan" ? 0 : std::stoll(fill), fill == "nan");
          r.to_dev(b, h);
        }
        r.mem[bid(t[1])] = b;
      } else if (s.kind == "launch") {
        size_t i = 4;
        int64_t gate = eval(parse_expr(t, i), r.env);
        i++;  // "bd"
        int64_t bd = eval(parse_expr(t, i), r.env);
        i++;  // "args"
        int n = std::stoi(t[i++]);
        std::vector<void *> args;
        for (int a = 0; a < n; a++, i++) args.push_back(t[i] == "-" ? nullptr : r.buf(bid(t[i])).p);
        i++;  // "tiling"
        int nf = std::stoi(t[i++]);
        std::string tl;
        for (int f = 0; f < nf; f++) {
          std::string kind = t[i++];
          if (kind == "f") {
            float v = (float)std::strtod(t[i++].c_str(), nullptr);
            tl.append((const char *)&v, 4);
          } else if (kind == "q") {
            int64_t v = eval(parse_expr(t, i), r.env);
            tl.append((const char *)&v, 8);
          } else {
            int32_t v = (int32_t)eval(parse_expr(t, i), r.env);
            tl.append((const char *)&v, 4);
          }
        }
        if (gate == 0) continue;
        DevBuf tb;
        tb.bytes = tl.size();
        tb.p = r.alloc(tb.bytes);
        r.to_dev(tb, tl);
        acl(aclrtMemset(ws, 64, 0, 64), "aclrtMemset");
        int lrc = moec_launch(t[1].c_str(), (uint32_t)bd, r.stream, args.data(), n, ws, tb.p);
        if (lrc) throw Fail(1, "kernel " + t[1] + " (" + t[2] + ") failed: " + moec_last_error());
        acl(aclrtSynchronizeStream(r.stream), "aclrtSynchronizeStream");
        r.release(tb.p);
      } else if (s.kind == "sym") {
        DevBuf &b = r.buf(bid(t[3]));
        size_t i = 4;
        int64_t x = eval(parse_expr(t, i), r.env);
        if (t[2] == "read") {
          if ((size_t)(x + 1) * 4 > b.bytes || x < 0) throw Fail(2, "launch plan: a read outside its buffer");
          std::string h = r.to_host(b, (size_t)(x + 1) * 4);
          r.env[t[1]] = ((const int32_t *)h.data())[x];
        } else {  // nonempty: groups g < E with offsets[g] < offsets[g + 1]
          std::string h = r.to_host(b, (size_t)(x + 1) * 4);
          const int32_t *o = (const int32_t *)h.data();
          int64_t c = 0;
          for (int64_t g = 0; g < x; g++) c += o[g] < o[g + 1];
          r.env[t[1]] = c;
        }
      } else if (s.kind == "cast") {
        DevBuf &src = r.buf(bid(t[1]));
        DevBuf &dst = r.buf(bid(t[2]));
        size_t i = 3;
        int64_t n = eval(parse_expr(t, i), r.env);
        std::string h = r.to_host(src, (size_t)n * dtype(src.type).size);
        std::string o(dst.bytes, '\0');
        bool ff = is_float(src.type);
        for (int64_t e = 0; e < n; e++)
          put(dst.type, (uint8_t *)&o[0], (size_t)e, ff ? get_f(src.type, (const uint8_t *)h.data(), e) : 0,
              ff ? 0 : get_i(src.type, (const uint8_t *)h.data(), e), ff);
        o.resize((size_t)n * dtype(dst.type).size);
        r.to_dev(dst, o);
      } else if (s.kind == "check") {  // check STATUS IDS|- LO HI N message: '{}' = the first id outside [LO, HI)
        std::string h = r.to_host(r.buf(bid(t[1])), 4);
        size_t i = 5;
        int64_t n = eval(parse_expr(t, i), r.env);
        std::string msg;
        for (size_t j = i; j < t.size(); j++) msg += (j > i ? " " : "") + t[j];
        if (*(const int32_t *)h.data()) {
          if (t[2] != "-") {
            DevBuf &ids = r.buf(bid(t[2]));
            int64_t lo = std::stoll(t[3]), hi = std::stoll(t[4]);
            std::string d = r.to_host(ids, (size_t)n * dtype(ids.type).size);
            std::string bad = "?";
            for (int64_t e = 0; e < n; e++) {
              int64_t v = get_i(ids.type, (const uint8_t *)d.data(), (size_t)e);
              if (v < lo || v >= hi) { bad = std::to_string(v); break; }
            }
            size_t p = msg.find("{}");
            if (p != std::string::npos) msg.replace(p, 2, bad);
          }
          throw Fail(1, msg);
        }
      } else if (s.kind == "output") {
        DevBuf &b = r.buf(bid(t[2]));
        size_t i = 3;
        int64_t n = eval(parse_expr(t, i), r.env);
        int rank = std::stoi(t[i++]);
        std::vector<int64_t> shape;
        for (int d = 0; d < rank; d++) shape.push_back(eval(parse_expr(t, i), r.env));
        sink.put(std::stoi(t[1]), r, b, (size_t)n, shape);
      } else if (s.kind == "free") {
        r.release(r.buf(bid(t[1])).p);
        r.mem.erase(bid(t[1]));
      } else if (s.kind == "key" || s.kind == "end" || s.kind == "hostshape") {
      } else {
        throw Fail(2, "launch plan: unknown step " + s.kind);
      }
    }
    acl(aclrtDestroyStream(r.stream), "aclrtDestroyStream");
  }
  if (own_acl) {
    aclrtResetDevice(device);
    aclFinalize();
  }
  return rc;
}

void NpySink::put(int k, Runner &r, const DevBuf &b, size_t n, const std::vector<int64_t> &shape) {
  std::string h = r.to_host(b, n * dtype(b.type).size);
  write_npy(out + "/output" + std::to_string(k) + ".npy", b.type, shape, h);
}

// moec_run_device: outputs copied device to device into the caller's buffers (no host round trip)
struct DeviceSink : OutputSink {
  void **outs = nullptr;
  const uint64_t *out_bytes = nullptr;
  int n_out = 0;
  void put(int k, Runner &r, const DevBuf &b, size_t n, const std::vector<int64_t> &) override {
    size_t bytes = n * dtype(b.type).size;
    if (k >= n_out) throw Fail(2, "the plan has more outputs than buffers were given");
    if (bytes != out_bytes[k])
      throw Fail(2, "output " + std::to_string(k) + " has " + std::to_string(bytes) + " bytes, its buffer " +
                        std::to_string(out_bytes[k]));
    acl(aclrtSynchronizeStream(r.stream), "aclrtSynchronizeStream");
    if (bytes) acl(aclrtMemcpy(outs[k], bytes, b.p, bytes, ACL_MEMCPY_DEVICE_TO_DEVICE), "aclrtMemcpy D2D");
  }
};

}  // namespace

// The same plans on device memory, for a caller that holds its tensors on the NPU (moec.compile's torch_npu path,
// targets/ascend_backend.py): inputs k = device pointers with their element type name (f32, bf16, ...), rank and
// dims (concatenated); outputs written into the caller's device buffers of out_bytes[k] bytes (allocated for the
// plan's output shapes).  Returns 0, else the exit status of moec_run with the message in err.
extern "C" int moec_run_device(const char *ascend_dir, int device, int n_in, void **ins, const char **types,
                               const int *ranks, const int64_t *dims, int n_out, void **outs, const uint64_t *out_bytes,
                               char *err, size_t err_len) {
  try {
    std::vector<Input> inputs;
    size_t at = 0;
    for (int k = 0; k < n_in; k++) {
      Input in;
      in.type = types[k];
      int64_t n = 1;
      for (int d = 0; d < ranks[k]; d++) {
        in.shape.push_back(dims[at + d]);
        n *= dims[at + d];
      }
      at += (size_t)ranks[k];
      in.dev = ins[k];
      in.bytes = (size_t)n * dtype(in.type).size;
      inputs.push_back(std::move(in));
    }
    DeviceSink sink;
    sink.outs = outs;
    sink.out_bytes = out_bytes;
    sink.n_out = n_out;
    return run_plan(ascend_dir, inputs, device, sink, false);  // the caller's process runs ACL (torch_npu)
  } catch (const Fail &e) {
    if (err && err_len) std::snprintf(err, err_len, "%s", e.what());
    return e.code;
  } catch (const std::exception &e) {
    if (err && err_len) std::snprintf(err, err_len, "%s", e.what());
    return 2;
  }
}

#ifndef MOEC_RUN_LIBRARY
int main(int argc, char **argv) {
  try {
    return run(argc, argv);
  } catch (const Fail &e) {
    std::fprintf(stderr, "moec_run: %s\n", e.what());
    return e.code;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "moec_run: %s\n", e.what());
    return 2;
  }
}
#endif  // MOEC_RUN_LIBRARY
