module {
  func.func @main(%x: tensor<?x?x4xf32>, %bs: tensor<1xi64>, %wb: tensor<?x4x3xf32>) -> (tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>) attributes {moec.inputs = ["x", "bs", "wb"], moec.outputs = ["y", "z", "u"]} {
    %w = "moec.constant"() {value = dense<[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [0.5, 0.25, 0.125]]> : tensor<4x3xf32>} : () -> tensor<4x3xf32>
    %col = "moec.constant"() {value = dense<[[1.0], [2.0], [3.0], [4.0]]> : tensor<4x1xf32>} : () -> tensor<4x1xf32>
    %k = "moec.constant"() {value = dense<[4, 3]> : tensor<2xi64>} : () -> tensor<2xi64>
    %s = "moec.concat"(%bs, %k) {axis = 0 : i64} : (tensor<1xi64>, tensor<2xi64>) -> tensor<3xi64>
    %e = "moec.expand"(%col, %s) : (tensor<4x1xf32>, tensor<3xi64>) -> tensor<?x4x3xf32> loc("column_stretched")
    %y = "moec.matmul"(%x, %e) : (tensor<?x?x4xf32>, tensor<?x4x3xf32>) -> tensor<?x?x3xf32>
    %e2 = "moec.expand"(%wb, %s) : (tensor<?x4x3xf32>, tensor<3xi64>) -> tensor<?x4x3xf32> loc("not_constant")
    %z = "moec.matmul"(%x, %e2) : (tensor<?x?x4xf32>, tensor<?x4x3xf32>) -> tensor<?x?x3xf32>
    %r = "moec.constant"() {value = dense<[0, 3, 4]> : tensor<3xi64>} : () -> tensor<3xi64>
    %e3 = "moec.expand"(%w, %s) : (tensor<4x3xf32>, tensor<3xi64>) -> tensor<?x4x3xf32>
    %v = "moec.reshape"(%e3, %r) {allowzero = false} : (tensor<?x4x3xf32>, tensor<3xi64>) -> tensor<?x3x4xf32> loc("reshaped_not_kept")
    %t = "moec.transpose"(%v) {perm = array<i64: 0, 2, 1>} : (tensor<?x3x4xf32>) -> tensor<?x4x3xf32>
    %u = "moec.matmul"(%x, %t) : (tensor<?x?x4xf32>, tensor<?x4x3xf32>) -> tensor<?x?x3xf32>
    func.return %y, %z, %u : tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>
  }
}
// ----- expected
module {
  func.func @main(%x: tensor<?x?x4xf32>, %bs: tensor<1xi64>, %wb: tensor<?x4x3xf32>) -> (tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>) attributes {moec.inputs = ["x", "bs", "wb"], moec.outputs = ["y", "z", "u"]} {
    %w = "moec.constant"() {value = dense<[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [0.5, 0.25, 0.125]]> : tensor<4x3xf32>} : () -> tensor<4x3xf32>
    %col = "moec.constant"() {value = dense<[[1.0], [2.0], [3.0], [4.0]]> : tensor<4x1xf32>} : () -> tensor<4x1xf32>
    %k = "moec.constant"() {value = dense<[4, 3]> : tensor<2xi64>} : () -> tensor<2xi64>
    %s = "moec.concat"(%bs, %k) {axis = 0 : i64} : (tensor<1xi64>, tensor<2xi64>) -> tensor<3xi64>
    %e = "moec.expand"(%col, %s) : (tensor<4x1xf32>, tensor<3xi64>) -> tensor<?x4x3xf32> loc("column_stretched")
    %y = "moec.matmul"(%x, %e) : (tensor<?x?x4xf32>, tensor<?x4x3xf32>) -> tensor<?x?x3xf32>
    %e2 = "moec.expand"(%wb, %s) : (tensor<?x4x3xf32>, tensor<3xi64>) -> tensor<?x4x3xf32> loc("not_constant")
    %z = "moec.matmul"(%x, %e2) : (tensor<?x?x4xf32>, tensor<?x4x3xf32>) -> tensor<?x?x3xf32>
    %r = "moec.constant"() {value = dense<[0, 3, 4]> : tensor<3xi64>} : () -> tensor<3xi64>
    %e3 = "moec.expand"(%w, %s) : (tensor<4x3xf32>, tensor<3xi64>) -> tensor<?x4x3xf32>
    %v = "moec.reshape"(%e3, %r) : (tensor<?x4x3xf32>, tensor<3xi64>) -> tensor<?x3x4xf32> loc("reshaped_not_kept")
    %t = "moec.transpose"(%v) {perm = array<i64: 0, 2, 1>} : (tensor<?x3x4xf32>) -> tensor<?x4x3xf32>
    %u = "moec.matmul"(%x, %t) : (tensor<?x?x4xf32>, tensor<?x4x3xf32>) -> tensor<?x?x3xf32>
    func.return %y, %z, %u : tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>
  }
}
