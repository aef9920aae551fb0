"""Op tables shared by the emitter (no triton import) and the runtime."""
BINARY = {"moec.add": 0, "moec.sub": 1, "moec.mul": 2, "moec.div": 3, "moec.min": 4, "moec.max": 5,
          "moec.equal": 6, "moec.greater": 7, "moec.greater_equal": 8, "moec.less": 9, "moec.less_equal": 10,
          "moec.and": 11, "moec.or": 12}
UNARY = {"moec.relu": 0, "moec.neg": 1, "moec.abs": 2, "moec.sqrt": 3, "moec.reciprocal": 4, "moec.exp": 5,
         "moec.log": 6, "moec.tanh": 7, "moec.erf": 8, "moec.sigmoid": 9, "moec.gelu": 10, "moec.silu": 11}
REDUCE = {"moec.reduce_sum": 0, "moec.reduce_max": 1, "moec.reduce_min": 2, "moec.reduce_mean": 3}
# weight modes of the grouped GEMMs (none/bf16: plain tiles; int8, fp8 e4m3fn codes: per-channel scale; int4: groups)
WQ_CODES = {"none": 0, "bf16": 0, "int8": 2, "int4": 3, "fp8": 4}
# element types the runtime holds as torch tensors (runtime.TORCH_DTYPE has exactly these keys)
TORCH_DTYPE_NAMES = ("f32", "f64", "f16", "bf16", "i64", "i32", "i16", "i8", "ui8", "i1")
