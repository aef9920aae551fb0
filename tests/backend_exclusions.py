"""ONNX backend node tests that are in scope by op but excluded, each with its reason.

A node test is in scope when every op in its model is in moec's op set (SCOPE).  The patterns
below are regular expressions on the test name."""

SCOPE = {
    "Constant", "ConstantOfShape", "Identity", "Cast", "CastLike", "Shape", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
    "Expand", "Tile", "Concat", "Split", "Slice", "Transpose", "Range", "Gather", "GatherElements", "GatherND",
    "ScatterElements", "ScatterND", "NonZero", "Where", "OneHot", "CumSum", "TopK", "ArgMax", "ArgMin", "MatMul",
    "Gemm", "Einsum", "Add", "Sub", "Mul", "Div", "Pow", "Neg", "Abs", "Sign", "Floor", "Ceil", "Sqrt",
    "Reciprocal", "Exp", "Log", "Sin", "Cos", "Tanh", "Erf", "Sigmoid", "Relu", "Gelu", "Softmax", "LogSoftmax",
    "Clip", "Min", "Max", "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Not", "And", "Or",
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2", "Trilu", "LayerNormalization",
    "RMSNormalization", "Dropout", "IsNaN", "IsInf", "Mod",
}

EXCLUDE = [
    (r"uint16|uint32|uint64", "unsigned 16/32/64-bit element types are outside moec's dtype set"),
    (r"string", "string tensors are outside moec's dtype set"),
    (r"float8|FLOAT8|e4m3|e5m2|E4M3|E5M2|e8m0|E8M0|float4|FLOAT4|INT2|UINT2|int2|uint2|INT4|UINT4|_int4|_uint4",
     "8/4/2-bit float and 2/4-bit integer element types are not model I/O types in moec (int4 is an internal "
     "weight format)"),
    (r"test_training_dropout", "training-mode Dropout (random masks); moec compiles inference graphs"),
    (r"_opt$|_optional|_sequence|test_identity_opt|test_identity_sequence", "optional and sequence types"),
    (r"^test_cast_.*_(saturate|no_saturate)|^test_cast_e8m0", "saturating casts exist only for float8 types"),
    (r"^test_attention_4d_causal_fp16_expanded$",
     "the case's expected f16 output is itself 4.9e-4 from causal attention computed in float64 on the same "
     "inputs, and its check allows 1e-3 relative (about one f16 step): moec's output is 4.0e-4 from the float64 "
     "result (nearer than the expected output) and 2 of its 192 elements differ from the expected by two f16 "
     "steps; onnxruntime's own Attention kernel misses the non-expanded case's check the same way (measured "
     "2026-12-07 with onnx 1.23 / onnxruntime 1.32)"),
]
