// A decoder block of a Mixtral-like model with last-position logits (the export of transformers'
// logits_to_keep=1): the last row is taken after the final norm and again after the output layer.
// The selection moves to the MoE block's input, before o_proj, onto q and the mask's query rows.
module {
  func.func @main(%h: tensor<1x?x8xf32, "S">, %cos: tensor<1x1x?x4xf32, "S">, %sin: tensor<1x1x?x4xf32, "S">, %mask: tensor<1x1x?x?xf32, "S,S">) -> (tensor<1x10xf32>) attributes {moec.inputs = ["h", "cos", "sin", "mask"], moec.outputs = ["logits"]} {
    %nw = "moec.constant"() {value = dense<1.5> : tensor<8xf32>} : () -> tensor<8xf32>
    %wq = "moec.constant"() {value = dense<0.125> : tensor<8x8xf32>} : () -> tensor<8x8xf32>
    %wk = "moec.constant"() {value = dense<0.25> : tensor<8x8xf32>} : () -> tensor<8x8xf32>
    %wv = "moec.constant"() {value = dense<0.375> : tensor<8x8xf32>} : () -> tensor<8x8xf32>
    %wo = "moec.constant"() {value = dense<0.5> : tensor<8x8xf32>} : () -> tensor<8x8xf32>
    %gw = "moec.constant"() {value = dense<0.625> : tensor<4x8xf32>} : () -> tensor<4x8xf32>
    %w_in = "moec.constant"() {value = dense<0.75> : tensor<4x12x8xf32>} : () -> tensor<4x12x8xf32>
    %w_out = "moec.constant"() {value = dense<0.875> : tensor<4x8x6xf32>} : () -> tensor<4x8x6xf32>
    %lm = "moec.constant"() {value = dense<1.25> : tensor<8x10xf32>} : () -> tensor<8x10xf32>
    %s4 = "moec.constant"() {value = dense<[1, -1, 2, 4]> : tensor<4xi64>} : () -> tensor<4xi64>
    %s3 = "moec.constant"() {value = dense<[1, -1, 8]> : tensor<3xi64>} : () -> tensor<3xi64>
    %s2 = "moec.constant"() {value = dense<[-1, 8]> : tensor<2xi64>} : () -> tensor<2xi64>
    %m1 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %end = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %one = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %last = "moec.constant"() {value = dense<-1> : tensor<i64>} : () -> tensor<i64>
    %n1 = "moec.rms_norm"(%h, %nw) {axis = -1 : i64, epsilon = 1.0e-05 : f64} : (tensor<1x?x8xf32, "S">, tensor<8xf32>) -> tensor<1x?x8xf32, "S">
    %q = "moec.matmul"(%n1, %wq) : (tensor<1x?x8xf32, "S">, tensor<8x8xf32>) -> tensor<1x?x8xf32, "S">
    %qr = "moec.reshape"(%q, %s4) {allowzero = true} : (tensor<1x?x8xf32, "S">, tensor<4xi64>) -> tensor<1x?x2x4xf32>
    %qt = "moec.transpose"(%qr) {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x?x2x4xf32>) -> tensor<1x2x?x4xf32>
    %k = "moec.matmul"(%n1, %wk) : (tensor<1x?x8xf32, "S">, tensor<8x8xf32>) -> tensor<1x?x8xf32, "S">
    %kr = "moec.reshape"(%k, %s4) {allowzero = true} : (tensor<1x?x8xf32, "S">, tensor<4xi64>) -> tensor<1x?x2x4xf32>
    %kt = "moec.transpose"(%kr) {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x?x2x4xf32>) -> tensor<1x2x?x4xf32>
    %v = "moec.matmul"(%n1, %wv) : (tensor<1x?x8xf32, "S">, tensor<8x8xf32>) -> tensor<1x?x8xf32, "S">
    %vr = "moec.reshape"(%v, %s4) {allowzero = true} : (tensor<1x?x8xf32, "S">, tensor<4xi64>) -> tensor<1x?x2x4xf32>
    %vt = "moec.transpose"(%vr) {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x?x2x4xf32>) -> tensor<1x2x?x4xf32>
    %qrot = "moec.rotary"(%qt, %cos, %sin) : (tensor<1x2x?x4xf32>, tensor<1x1x?x4xf32, "S">, tensor<1x1x?x4xf32, "S">) -> tensor<1x2x?x4xf32>
    %krot = "moec.rotary"(%kt, %cos, %sin) : (tensor<1x2x?x4xf32>, tensor<1x1x?x4xf32, "S">, tensor<1x1x?x4xf32, "S">) -> tensor<1x2x?x4xf32>
    %att = "moec.attention"(%qrot, %krot, %vt, %mask) {causal = true, scale = 0.5 : f64} : (tensor<1x2x?x4xf32>, tensor<1x2x?x4xf32>, tensor<1x2x?x4xf32>, tensor<1x1x?x?xf32, "S,S">) -> tensor<1x2x?x4xf32>
    %at = "moec.transpose"(%att) {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x2x?x4xf32>) -> tensor<1x?x2x4xf32>
    %ar = "moec.reshape"(%at, %s3) {allowzero = true} : (tensor<1x?x2x4xf32>, tensor<3xi64>) -> tensor<1x?x8xf32>
    %o = "moec.matmul"(%ar, %wo) : (tensor<1x?x8xf32>, tensor<8x8xf32>) -> tensor<1x?x8xf32>
    %r1 = "moec.add"(%h, %o) : (tensor<1x?x8xf32, "S">, tensor<1x?x8xf32>) -> tensor<1x?x8xf32>
    %n2 = "moec.rms_norm"(%r1, %nw) {axis = -1 : i64, epsilon = 1.0e-05 : f64} : (tensor<1x?x8xf32>, tensor<8xf32>) -> tensor<1x?x8xf32>
    %flat = "moec.reshape"(%n2, %s2) {allowzero = true} : (tensor<1x?x8xf32>, tensor<2xi64>) -> tensor<?x8xf32>
    %gl = "moec.gemm"(%flat, %gw) {trans_b = true} : (tensor<?x8xf32>, tensor<4x8xf32>) -> tensor<?x4xf32>
    %rt:2 = "moe.route"(%gl) {k = 2 : i64, norm = "sum"} : (tensor<?x4xf32>) -> (tensor<?x2xf32>, tensor<?x2xi64>)
    %d:2 = "moe.dispatch"(%rt#1) {num_experts = 4 : i64} : (tensor<?x2xi64>) -> (tensor<?xi64>, tensor<5xi64>)
    %ex = "moe.experts"(%flat, %rt#1, %d#0, %d#1, %w_in, %w_out) {activation = "swiglu", gate_layout = "concat"} : (tensor<?x8xf32>, tensor<?x2xi64>, tensor<?xi64>, tensor<5xi64>, tensor<4x12x8xf32>, tensor<4x8x6xf32>) -> tensor<?x2x8xf32>
    %cb = "moe.combine"(%ex, %rt#0) {layer = "moe0"} : (tensor<?x2x8xf32>, tensor<?x2xf32>) -> tensor<?x8xf32>
    %cr = "moec.reshape"(%cb, %s3) {allowzero = true} : (tensor<?x8xf32>, tensor<3xi64>) -> tensor<1x?x8xf32>
    %r2 = "moec.add"(%r1, %cr) : (tensor<1x?x8xf32>, tensor<1x?x8xf32>) -> tensor<1x?x8xf32>
    %n3 = "moec.rms_norm"(%r2, %nw) {axis = -1 : i64, epsilon = 1.0e-05 : f64} : (tensor<1x?x8xf32>, tensor<8xf32>) -> tensor<1x?x8xf32>
    %sl = "moec.slice"(%n3, %m1, %end, %one, %one) : (tensor<1x?x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x?x8xf32>
    %lg = "moec.matmul"(%sl, %lm) : (tensor<1x?x8xf32>, tensor<8x10xf32>) -> tensor<1x?x10xf32>
    %y = "moec.gather"(%lg, %last) {axis = 1 : i64} : (tensor<1x?x10xf32>, tensor<i64>) -> tensor<1x10xf32>
    func.return %y : tensor<1x10xf32>
  }
}
// ----- expected
module {
  func.func @main(%h: tensor<1x?x8xf32, "S">, %cos: tensor<1x1x?x4xf32, "S">, %sin: tensor<1x1x?x4xf32, "S">, %mask: tensor<1x1x?x?xf32, "S,S">) -> (tensor<1x10xf32>) attributes {moec.inputs = ["h", "cos", "sin", "mask"], moec.outputs = ["logits"]} {
    %0 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %nw = "moec.constant"() {value = dense<1.5> : tensor<8xf32>} : () -> tensor<8xf32>
    %wq = "moec.constant"() {value = dense<0.125> : tensor<8x8xf32>} : () -> tensor<8x8xf32>
    %wk = "moec.constant"() {value = dense<0.25> : tensor<8x8xf32>} : () -> tensor<8x8xf32>
    %wv = "moec.constant"() {value = dense<0.375> : tensor<8x8xf32>} : () -> tensor<8x8xf32>
    %wo = "moec.constant"() {value = dense<0.5> : tensor<8x8xf32>} : () -> tensor<8x8xf32>
    %gw = "moec.constant"() {value = dense<0.625> : tensor<4x8xf32>} : () -> tensor<4x8xf32>
    %w_in = "moec.constant"() {value = dense<0.75> : tensor<4x12x8xf32>} : () -> tensor<4x12x8xf32>
    %w_out = "moec.constant"() {value = dense<0.875> : tensor<4x8x6xf32>} : () -> tensor<4x8x6xf32>
    %lm = "moec.constant"() {value = dense<1.25> : tensor<8x10xf32>} : () -> tensor<8x10xf32>
    %s4 = "moec.constant"() {value = dense<[1, -1, 2, 4]> : tensor<4xi64>} : () -> tensor<4xi64>
    %s3 = "moec.constant"() {value = dense<[1, -1, 8]> : tensor<3xi64>} : () -> tensor<3xi64>
    %s2 = "moec.constant"() {value = dense<[-1, 8]> : tensor<2xi64>} : () -> tensor<2xi64>
    %m1 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %end = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %one = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %n1 = "moec.rms_norm"(%h, %nw) : (tensor<1x?x8xf32, "S">, tensor<8xf32>) -> tensor<1x?x8xf32, "S">
    %k = "moec.matmul"(%n1, %wk) : (tensor<1x?x8xf32, "S">, tensor<8x8xf32>) -> tensor<1x?x8xf32, "S">
    %kr = "moec.reshape"(%k, %s4) {allowzero = true} : (tensor<1x?x8xf32, "S">, tensor<4xi64>) -> tensor<1x?x2x4xf32>
    %kt = "moec.transpose"(%kr) {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x?x2x4xf32>) -> tensor<1x2x?x4xf32>
    %v = "moec.matmul"(%n1, %wv) : (tensor<1x?x8xf32, "S">, tensor<8x8xf32>) -> tensor<1x?x8xf32, "S">
    %vr = "moec.reshape"(%v, %s4) {allowzero = true} : (tensor<1x?x8xf32, "S">, tensor<4xi64>) -> tensor<1x?x2x4xf32>
    %vt = "moec.transpose"(%vr) {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x?x2x4xf32>) -> tensor<1x2x?x4xf32>
    %krot = "moec.rotary"(%kt, %cos, %sin) : (tensor<1x2x?x4xf32>, tensor<1x1x?x4xf32, "S">, tensor<1x1x?x4xf32, "S">) -> tensor<1x2x?x4xf32>
    %1 = "moec.slice"(%h, %m1, %end, %one, %one) : (tensor<1x?x8xf32, "S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x?x8xf32>
    %2 = "moec.slice"(%n1, %m1, %end, %one, %one) : (tensor<1x?x8xf32, "S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x?x8xf32>
    %3 = "moec.matmul"(%2, %wq) : (tensor<1x?x8xf32>, tensor<8x8xf32>) -> tensor<1x?x8xf32>
    %4 = "moec.reshape"(%3, %s4) {allowzero = true} : (tensor<1x?x8xf32>, tensor<4xi64>) -> tensor<1x?x2x4xf32>
    %5 = "moec.transpose"(%4) {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x?x2x4xf32>) -> tensor<1x2x?x4xf32>
    %6 = "moec.slice"(%cos, %m1, %end, %0, %one) : (tensor<1x1x?x4xf32, "S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x1x?x4xf32>
    %7 = "moec.slice"(%sin, %m1, %end, %0, %one) : (tensor<1x1x?x4xf32, "S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x1x?x4xf32>
    %8 = "moec.rotary"(%5, %6, %7) : (tensor<1x2x?x4xf32>, tensor<1x1x?x4xf32>, tensor<1x1x?x4xf32>) -> tensor<1x2x?x4xf32>
    %9 = "moec.slice"(%mask, %m1, %end, %0, %one) : (tensor<1x1x?x?xf32, "S,S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x1x?x?xf32, "?,S">
    %10 = "moec.attention"(%8, %krot, %vt, %9) {causal = true, scale = 0.5 : f64} : (tensor<1x2x?x4xf32>, tensor<1x2x?x4xf32>, tensor<1x2x?x4xf32>, tensor<1x1x?x?xf32, "?,S">) -> tensor<1x2x?x4xf32>
    %11 = "moec.transpose"(%10) {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x2x?x4xf32>) -> tensor<1x?x2x4xf32>
    %12 = "moec.reshape"(%11, %s3) {allowzero = true} : (tensor<1x?x2x4xf32>, tensor<3xi64>) -> tensor<1x?x8xf32>
    %13 = "moec.matmul"(%12, %wo) : (tensor<1x?x8xf32>, tensor<8x8xf32>) -> tensor<1x?x8xf32>
    %14 = "moec.add"(%1, %13) : (tensor<1x?x8xf32>, tensor<1x?x8xf32>) -> tensor<1x?x8xf32>
    %15 = "moec.rms_norm"(%14, %nw) : (tensor<1x?x8xf32>, tensor<8xf32>) -> tensor<1x?x8xf32>
    %16 = "moec.reshape"(%15, %s2) {allowzero = true} : (tensor<1x?x8xf32>, tensor<2xi64>) -> tensor<?x8xf32>
    %17 = "moec.gemm"(%16, %gw) {trans_b = true} : (tensor<?x8xf32>, tensor<4x8xf32>) -> tensor<?x4xf32>
    %18:2 = "moe.route"(%17) {k = 2 : i64, norm = "sum"} : (tensor<?x4xf32>) -> (tensor<?x2xf32>, tensor<?x2xi64>)
    %19:2 = "moe.dispatch"(%18#1) {num_experts = 4 : i64} : (tensor<?x2xi64>) -> (tensor<?xi64>, tensor<5xi64>)
    %20 = "moe.experts"(%16, %18#1, %19#0, %19#1, %w_in, %w_out) : (tensor<?x8xf32>, tensor<?x2xi64>, tensor<?xi64>, tensor<5xi64>, tensor<4x12x8xf32>, tensor<4x8x6xf32>) -> tensor<?x2x8xf32>
    %21 = "moe.combine"(%20, %18#0) {layer = "moe0"} : (tensor<?x2x8xf32>, tensor<?x2xf32>) -> tensor<?x8xf32>
    %22 = "moec.reshape"(%21, %s3) {allowzero = true} : (tensor<?x8xf32>, tensor<3xi64>) -> tensor<1x?x8xf32>
    %23 = "moec.add"(%14, %22) : (tensor<1x?x8xf32>, tensor<1x?x8xf32>) -> tensor<1x?x8xf32>
    %24 = "moec.rms_norm"(%23, %nw) : (tensor<1x?x8xf32>, tensor<8xf32>) -> tensor<1x?x8xf32>
    %25 = "moec.matmul"(%24, %lm) : (tensor<1x?x8xf32>, tensor<8x10xf32>) -> tensor<1x?x10xf32>
    %26 = "moec.squeeze"(%25) {axes = array<i64: 1>} : (tensor<1x?x10xf32>) -> tensor<1x10xf32>
    func.return %26 : tensor<1x10xf32>
  }
}
