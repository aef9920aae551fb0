// Rows 1:3 of a causal attention's output projection: the selection moves through o_proj, the reshape and the
// transpose and stops at the attention (causal alignment is bottom-right: only a suffix keeps each row's keys).
module {
  func.func @main(%q: tensor<1x2x?x4xf32, "S">, %k: tensor<1x2x?x4xf32, "S">, %v: tensor<1x2x?x4xf32, "S">) -> (tensor<1x?x8xf32>) attributes {moec.inputs = ["q", "k", "v"], moec.outputs = ["y"]} {
    %wo = "moec.constant"() {value = dense<0.5> : tensor<8x8xf32>} : () -> tensor<8x8xf32>
    %s3 = "moec.constant"() {value = dense<[1, -1, 8]> : tensor<3xi64>} : () -> tensor<3xi64>
    %c1 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %c3 = "moec.constant"() {value = dense<[3]> : tensor<1xi64>} : () -> tensor<1xi64>
    %att = "moec.attention"(%q, %k, %v) {causal = true, scale = 0.5 : f64} : (tensor<1x2x?x4xf32, "S">, tensor<1x2x?x4xf32, "S">, tensor<1x2x?x4xf32, "S">) -> tensor<1x2x?x4xf32, "S">
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
    %att = "moec.attention"(%q, %k, %v) {causal = true, scale = 0.5 : f64} : (tensor<1x2x?x4xf32, "S">, tensor<1x2x?x4xf32, "S">, tensor<1x2x?x4xf32, "S">) -> tensor<1x2x?x4xf32, "S">
    %1 = "moec.slice"(%att, %c1, %c3, %0, %c1) : (tensor<1x2x?x4xf32, "S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x2x?x4xf32>
    %2 = "moec.transpose"(%1) {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x2x?x4xf32>) -> tensor<1x?x2x4xf32>
    %3 = "moec.reshape"(%2, %s3) {allowzero = true} : (tensor<1x?x2x4xf32>, tensor<3xi64>) -> tensor<1x?x8xf32>
    %4 = "moec.matmul"(%3, %wo) : (tensor<1x?x8xf32>, tensor<8x8xf32>) -> tensor<1x?x8xf32>
    func.return %4 : tensor<1x?x8xf32>
  }
}
