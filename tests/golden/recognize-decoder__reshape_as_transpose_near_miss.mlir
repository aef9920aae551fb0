module {
  func.func @main(%q: tensor<1x?x4x8xf32, "S">, %k: tensor<1x4x?x8xf32, "S">, %v: tensor<1x4x?x8xf32, "S">) -> (tensor<1x4x?x8xf32>) attributes {moec.inputs = ["q", "k", "v"], moec.outputs = ["y"]} {
    %r4 = "moec.constant"() {value = dense<[1, 4, -1, 8]> : tensor<4xi64>} : () -> tensor<4xi64>
    %qh = "moec.reshape"(%q, %r4) {allowzero = false} : (tensor<1x?x4x8xf32, "S">, tensor<4xi64>) -> tensor<1x4x?x8xf32> loc("reshape_not_transpose")
    %kt = "moec.transpose"(%k) {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x4x?x8xf32, "S">) -> tensor<1x4x8x?xf32>
    %s = "moec.matmul"(%qh, %kt) : (tensor<1x4x?x8xf32>, tensor<1x4x8x?xf32>) -> tensor<1x4x?x?xf32>
    %c = "moec.constant"() {value = dense<0.35355339> : tensor<f32>} : () -> tensor<f32>
    %z = "moec.mul"(%s, %c) : (tensor<1x4x?x?xf32>, tensor<f32>) -> tensor<1x4x?x?xf32>
    %p = "moec.softmax"(%z) {axis = -1 : i64} : (tensor<1x4x?x?xf32>) -> tensor<1x4x?x?xf32>
    %y = "moec.matmul"(%p, %v) : (tensor<1x4x?x?xf32>, tensor<1x4x?x8xf32, "S">) -> tensor<1x4x?x8xf32>
    func.return %y : tensor<1x4x?x8xf32>
  }
}
// ----- expected
module {
  func.func @main(%q: tensor<1x?x4x8xf32, "S">, %k: tensor<1x4x?x8xf32, "S">, %v: tensor<1x4x?x8xf32, "S">) -> (tensor<1x4x?x8xf32>) attributes {moec.inputs = ["q", "k", "v"], moec.outputs = ["y"]} {
    %r4 = "moec.constant"() {value = dense<[1, 4, -1, 8]> : tensor<4xi64>} : () -> tensor<4xi64>
    %qh = "moec.reshape"(%q, %r4) {allowzero = false} : (tensor<1x?x4x8xf32, "S">, tensor<4xi64>) -> tensor<1x4x?x8xf32> loc("reshape_not_transpose")
    %kt = "moec.transpose"(%k) {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x4x?x8xf32, "S">) -> tensor<1x4x8x?xf32>
    %s = "moec.matmul"(%qh, %kt) : (tensor<1x4x?x8xf32>, tensor<1x4x8x?xf32>) -> tensor<1x4x?x?xf32>
    %c = "moec.constant"() {value = dense<0.35355338> : tensor<f32>} : () -> tensor<f32>
    %z = "moec.mul"(%s, %c) : (tensor<1x4x?x?xf32>, tensor<f32>) -> tensor<1x4x?x?xf32>
    %p = "moec.softmax"(%z) {axis = -1 : i64} : (tensor<1x4x?x?xf32>) -> tensor<1x4x?x?xf32>
    %y = "moec.matmul"(%p, %v) : (tensor<1x4x?x?xf32>, tensor<1x4x?x8xf32, "S">) -> tensor<1x4x?x8xf32>
    func.return %y : tensor<1x4x?x8xf32>
  }
}
