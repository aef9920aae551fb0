"""DType <-> C runtime codes and storage types (keep in sync with runtime/moec_rt.h)."""
from moec.ir import DType

# DType -> (enum name, enum value, C storage type)
C_DTYPE = {
    DType.F64: ("MOEC_F64", 0, "double"),
    DType.F32: ("MOEC_F32", 1, "float"),
    DType.F16: ("MOEC_F16", 2, "uint16_t"),
    DType.BF16: ("MOEC_BF16", 3, "uint16_t"),
    DType.I64: ("MOEC_I64", 4, "int64_t"),
    DType.I32: ("MOEC_I32", 5, "int32_t"),
    DType.I16: ("MOEC_I16", 6, "int16_t"),
    DType.I8: ("MOEC_I8", 7, "int8_t"),
    DType.U8: ("MOEC_U8", 8, "uint8_t"),
    DType.BOOL: ("MOEC_BOOL", 9, "uint8_t"),
    DType.I4: ("MOEC_I4", 10, "uint8_t"),
    DType.U4: ("MOEC_U4", 11, "uint8_t"),
}
CODE_TO_DTYPE = {v[1]: k for k, v in C_DTYPE.items()}
