// Rows 1:3 of a non-causal attention: every query row is independent, so any selection reaches q (never k / v).
module {
  func.func @main(%q: tensor<1x2x?x4xf32, "S">, %k: tensor<1x2x?x4xf32, "S">, %v: tensor<1x2x?x4xf32, "S">) -> (tensor<1x?x8xf32>) attributes {moec.inputs = ["q", "k", "v"], moec.outputs = ["y"]} {
    %wo = "moec.constant"() {value = dense<0.5> : tensor<8x8xf32>} : () -> tensor<8x8xf32>
    %s3 = "moec.constant"() {value = dense<[1, -1, 8]> : tensor<3xi64>} : () -> tensor<3xi64>
    %c1 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %c3 = "moec.constant"() {value = dense<[3]> : tensor<1xi64>} : () -> tensor<1xi64>
    %att = "moec.attention"(%q, %k, %v) {causal = false, scale = 0.5 : f64} : (tensor<1x2x?x4xf32, "S">, tensor<1x2x?x4xf32, "S">, tensor<1x2x?x4xf32, "S">) -> tensor<1x2x?x4xf32, "S">
    %at = "moec.transpose"(%att) {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x2x?x4xf32, "S">) -> tensor<1x?x2x4xf32, "S">
    %ar = "moec.reshape"(%at, %s3) {allowzero = true} : (tensor<1x?x2x4xf32, "S">, tensor<3xi64>) -> tensor<1x?x8xf32>
    %o = "moec.matmul"(%ar, %wo) : (tensor<1x?x8xf32>, tensor<8x8xf32>) -> tensor<1x?x8xf32>
    %y = "moec.slice"(%o, %c1, %c3, %c1, %c1) : (tensor<1x?x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x?x8xf32>
    func.return %y : tensor<1x?x8xf32>
  }
}
// ----- expected
module {
  func.func @main(%q: tensor<1x2x?x4xf32, "S">, %k: tensor<1x2x?x4xf32, "S">, %v: tensor<1x2x?x4xf32, "S">) -> (tensor<1x?x8xf32>) attributes {moec.inputs = ["q", "k", "v"], moec.outputs = ["y"]} {
    %0 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %wo = "moec.constant"() {value = dense<0.5> : tensor<8x8xf32>} : () -> tensor<8x8xf32>
    %s3 = "moec.constant"() {value = dense<[1, -1, 8]> : tensor<3xi64>} : () -> tensor<3xi64>
    %c1 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %c3 = "moec.constant"() {value = dense<[3]> : tensor<1xi64>} : () -> tensor<1xi64>
    %1 = "moec.slice"(%q, %c1, %c3, %0, %c1) : (tensor<1x2x?x4xf32, "S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x2x?x4xf32>
    %2 = "moec.attention"(%1, %k, %v) {scale = 0.5 : f64} : (tensor<1x2x?x4xf32>, tensor<1x2x?x4xf32, "S">, tensor<1x2x?x4xf32, "S">) -> tensor<1x2x?x4xf32>
    %3 = "moec.transpose"(%2) {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x2x?x4xf32>) -> tensor<1x?x2x4xf32>
    %4 = "moec.reshape"(%3, %s3) {allowzero = true} : (tensor<1x?x2x4xf32>, tensor<3xi64>) -> tensor<1x?x8xf32>
    %5 = "moec.matmul"(%4, %wo) : (tensor<1x?x8xf32>, tensor<8x8xf32>) -> tensor<1x?x8xf32>
    func.return %5 : tensor<1x?x8xf32>
  }
}
