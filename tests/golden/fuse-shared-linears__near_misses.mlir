// different inputs (%a, %b); the same source reshaped to different shapes; a bias add after the linear (quantize-weights
// folds it); a result that is a function output; a bf16 weight beside f32 ones (one group per dtype: the two
// f32 linears of %a fuse, the bf16 one stays)
module {
  func.func @main(%a: tensor<?x8xf32, "T">, %b: tensor<?x8xf32, "T">, %c: tensor<?x8xbf16, "T">) -> (tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xbf16, "T">, tensor<?x4xbf16, "T">, tensor<?x4xf32>) attributes {moec.inputs = ["a", "b", "c"], moec.outputs = ["ya", "yb", "yb2", "yout", "ya2", "yc", "yc2", "yr"]} {
    %w1 = "moec.constant"() {value = dense<0.5> : tensor<8x4xf32>} : () -> tensor<8x4xf32>
    %w2 = "moec.constant"() {value = dense<0.25> : tensor<8x4xf32>} : () -> tensor<8x4xf32>
    %w3 = "moec.constant"() {value = dense<1.5> : tensor<8x4xf32>} : () -> tensor<8x4xf32>
    %w4 = "moec.constant"() {value = dense<3.0> : tensor<8x4xf32>} : () -> tensor<8x4xf32>
    %w5 = "moec.constant"() {value = dense<1.0> : tensor<8x4xbf16>} : () -> tensor<8x4xbf16>
    %w6 = "moec.constant"() {value = dense<2.0> : tensor<8x4xf32>} : () -> tensor<8x4xf32>
    %w7 = "moec.constant"() {value = dense<2.0> : tensor<4x4xf32>} : () -> tensor<4x4xf32>
    %w8 = "moec.constant"() {value = dense<4.0> : tensor<8x4xbf16>} : () -> tensor<8x4xbf16>
    %bias = "moec.constant"() {value = dense<1.0> : tensor<4xf32>} : () -> tensor<4xf32>
    %ma = "moec.matmul"(%a, %w1) : (tensor<?x8xf32, "T">, tensor<8x4xf32>) -> tensor<?x4xf32, "T">
    %mb = "moec.matmul"(%b, %w2) : (tensor<?x8xf32, "T">, tensor<8x4xf32>) -> tensor<?x4xf32, "T">
    %mbb = "moec.matmul"(%b, %w3) : (tensor<?x8xf32, "T">, tensor<8x4xf32>) -> tensor<?x4xf32, "T">
    %yb2 = "moec.add"(%mbb, %bias) : (tensor<?x4xf32, "T">, tensor<4xf32>) -> tensor<?x4xf32, "T">
    %yout = "moec.matmul"(%a, %w4) : (tensor<?x8xf32, "T">, tensor<8x4xf32>) -> tensor<?x4xf32, "T">
    %ma2 = "moec.matmul"(%a, %w6) : (tensor<?x8xf32, "T">, tensor<8x4xf32>) -> tensor<?x4xf32, "T">
    %mc = "moec.matmul"(%c, %w5) : (tensor<?x8xbf16, "T">, tensor<8x4xbf16>) -> tensor<?x4xbf16, "T">
    %s = "moec.constant"() {value = dense<[-1, 4]> : tensor<2xi64>} : () -> tensor<2xi64>
    %ar = "moec.reshape"(%a, %s) : (tensor<?x8xf32, "T">, tensor<2xi64>) -> tensor<?x4xf32>
    %mr = "moec.matmul"(%ar, %w7) : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32>
    %yr = "moec.neg"(%mr) : (tensor<?x4xf32>) -> tensor<?x4xf32>
    %ya = "moec.neg"(%ma) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T">
    %yb = "moec.neg"(%mb) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T">
    %ya2 = "moec.neg"(%ma2) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T">
    %yc = "moec.neg"(%mc) : (tensor<?x4xbf16, "T">) -> tensor<?x4xbf16, "T">
    %mc2 = "moec.matmul"(%c, %w8) : (tensor<?x8xbf16, "T">, tensor<8x4xbf16>) -> tensor<?x4xbf16, "T">
    %yc2 = "moec.neg"(%mc2) : (tensor<?x4xbf16, "T">) -> tensor<?x4xbf16, "T">
    func.return %ya, %yb, %yb2, %yout, %ya2, %yc, %yc2, %yr : tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xbf16, "T">, tensor<?x4xbf16, "T">, tensor<?x4xf32>
  }
}
// ----- expected
module {
  func.func @main(%a: tensor<?x8xf32, "T">, %b: tensor<?x8xf32, "T">, %c: tensor<?x8xbf16, "T">) -> (tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xbf16, "T">, tensor<?x4xbf16, "T">, tensor<?x4xf32>) attributes {moec.inputs = ["a", "b", "c"], moec.outputs = ["ya", "yb", "yb2", "yout", "ya2", "yc", "yc2", "yr"]} {
    %w1 = "moec.constant"() {value = dense<0.5> : tensor<8x4xf32>} : () -> tensor<8x4xf32>
    %w2 = "moec.constant"() {value = dense<0.25> : tensor<8x4xf32>} : () -> tensor<8x4xf32>
    %w3 = "moec.constant"() {value = dense<1.5> : tensor<8x4xf32>} : () -> tensor<8x4xf32>
    %w4 = "moec.constant"() {value = dense<3.0> : tensor<8x4xf32>} : () -> tensor<8x4xf32>
    %w5 = "moec.constant"() {value = dense<1.0> : tensor<8x4xbf16>} : () -> tensor<8x4xbf16>
    %w6 = "moec.constant"() {value = dense<2.0> : tensor<8x4xf32>} : () -> tensor<8x4xf32>
    %w7 = "moec.constant"() {value = dense<2.0> : tensor<4x4xf32>} : () -> tensor<4x4xf32>
    %w8 = "moec.constant"() {value = dense<4.0> : tensor<8x4xbf16>} : () -> tensor<8x4xbf16>
    %bias = "moec.constant"() {value = dense<1.0> : tensor<4xf32>} : () -> tensor<4xf32>
    %fused_w1 = "moec.constant"() {value = dense_resource<fused_w1> : tensor<8x8xf32>} : () -> tensor<8x8xf32>
    %0 = "moec.matmul"(%a, %fused_w1) : (tensor<?x8xf32, "T">, tensor<8x8xf32>) -> tensor<?x8xf32, "T">
    %1 = "moec.constant"() {value = dense<4> : tensor<2xi64>} : () -> tensor<2xi64>
    %ma:2 = "moec.split"(%0, %1) {axis = -1 : i64} : (tensor<?x8xf32, "T">, tensor<2xi64>) -> (tensor<?x4xf32, "T">, tensor<?x4xf32, "T">)
    %mb = "moec.matmul"(%b, %w2) : (tensor<?x8xf32, "T">, tensor<8x4xf32>) -> tensor<?x4xf32, "T">
    %mbb = "moec.matmul"(%b, %w3) : (tensor<?x8xf32, "T">, tensor<8x4xf32>) -> tensor<?x4xf32, "T">
    %yb2 = "moec.add"(%mbb, %bias) : (tensor<?x4xf32, "T">, tensor<4xf32>) -> tensor<?x4xf32, "T">
    %yout = "moec.matmul"(%a, %w4) : (tensor<?x8xf32, "T">, tensor<8x4xf32>) -> tensor<?x4xf32, "T">
    %fused_w5 = "moec.constant"() {value = dense_resource<fused_w5> : tensor<8x8xbf16>} : () -> tensor<8x8xbf16>
    %2 = "moec.matmul"(%c, %fused_w5) : (tensor<?x8xbf16, "T">, tensor<8x8xbf16>) -> tensor<?x8xbf16, "T">
    %3 = "moec.constant"() {value = dense<4> : tensor<2xi64>} : () -> tensor<2xi64>
    %mc:2 = "moec.split"(%2, %3) {axis = -1 : i64} : (tensor<?x8xbf16, "T">, tensor<2xi64>) -> (tensor<?x4xbf16, "T">, tensor<?x4xbf16, "T">)
    %s = "moec.constant"() {value = dense<[-1, 4]> : tensor<2xi64>} : () -> tensor<2xi64>
    %ar = "moec.reshape"(%a, %s) : (tensor<?x8xf32, "T">, tensor<2xi64>) -> tensor<?x4xf32>
    %mr = "moec.matmul"(%ar, %w7) : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32>
    %yr = "moec.neg"(%mr) : (tensor<?x4xf32>) -> tensor<?x4xf32>
    %ya = "moec.neg"(%ma#0) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T">
    %yb = "moec.neg"(%mb) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T">
    %ya2 = "moec.neg"(%ma#1) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T">
    %yc = "moec.neg"(%mc#0) : (tensor<?x4xbf16, "T">) -> tensor<?x4xbf16, "T">
    %yc2 = "moec.neg"(%mc#1) : (tensor<?x4xbf16, "T">) -> tensor<?x4xbf16, "T">
    func.return %ya, %yb, %yb2, %yout, %ya2, %yc, %yc2, %yr : tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xbf16, "T">, tensor<?x4xbf16, "T">, tensor<?x4xf32>
  }
}
