module {
  func.func @main(%x: tensor<?x?x4xf32, "B,S">, %bs: tensor<1xi64>) -> (tensor<?x?x3xf32>) attributes {moec.inputs = ["x", "bs"], moec.outputs = ["y"]} {
    %w = "moec.constant"() {value = dense<[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [0.5, 0.25, 0.125]]> : tensor<4x3xf32>} : () -> tensor<4x3xf32>
    %k = "moec.constant"() {value = dense<[4, 3]> : tensor<2xi64>} : () -> tensor<2xi64>
    %s = "moec.concat"(%bs, %k) {axis = 0 : i64} : (tensor<1xi64>, tensor<2xi64>) -> tensor<3xi64>
    %e = "moec.expand"(%w, %s) : (tensor<4x3xf32>, tensor<3xi64>) -> tensor<?x4x3xf32> loc("expand_10")
    %r = "moec.constant"() {value = dense<[0, 4, 3]> : tensor<3xi64>} : () -> tensor<3xi64>
    %v = "moec.reshape"(%e, %r) {allowzero = false} : (tensor<?x4x3xf32>, tensor<3xi64>) -> tensor<?x4x3xf32> loc("view_20")
    %y = "moec.matmul"(%x, %v) : (tensor<?x?x4xf32, "B,S">, tensor<?x4x3xf32>) -> tensor<?x?x3xf32> loc("bmm_2")
    func.return %y : tensor<?x?x3xf32>
  }
}
// ----- expected
module {
  func.func @main(%x: tensor<?x?x4xf32, "B,S">, %bs: tensor<1xi64>) -> (tensor<?x?x3xf32>) attributes {moec.inputs = ["x", "bs"], moec.outputs = ["y"]} {
    %w = "moec.constant"() {value = dense<[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [0.5, 0.25, 0.125]]> : tensor<4x3xf32>} : () -> tensor<4x3xf32>
    %k = "moec.constant"() {value = dense<[4, 3]> : tensor<2xi64>} : () -> tensor<2xi64>
    %s = "moec.concat"(%bs, %k) {axis = 0 : i64} : (tensor<1xi64>, tensor<2xi64>) -> tensor<3xi64>
    %e = "moec.expand"(%w, %s) : (tensor<4x3xf32>, tensor<3xi64>) -> tensor<?x4x3xf32> loc("expand_10")
    %r = "moec.constant"() {value = dense<[0, 4, 3]> : tensor<3xi64>} : () -> tensor<3xi64>
    %v = "moec.reshape"(%e, %r) : (tensor<?x4x3xf32>, tensor<3xi64>) -> tensor<?x4x3xf32> loc("view_20")
    %0 = "moec.matmul"(%x, %w) : (tensor<?x?x4xf32, "B,S">, tensor<4x3xf32>) -> tensor<?x?x3xf32, "B,S"> loc("bmm_2")
    %1 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("bmm_2")
    %2 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("bmm_2")
    %3 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("bmm_2")
    %4 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("bmm_2")
    %5 = "moec.slice"(%s, %1, %2, %3, %4) : (tensor<3xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("bmm_2")
    %6 = "moec.constant"() {value = dense<1> : tensor<2xi64>} : () -> tensor<2xi64> loc("bmm_2")
    %7 = "moec.concat"(%5, %6) {axis = 0 : i64} : (tensor<1xi64>, tensor<2xi64>) -> tensor<3xi64> loc("bmm_2")
    %8 = "moec.expand"(%0, %7) : (tensor<?x?x3xf32, "B,S">, tensor<3xi64>) -> tensor<?x?x3xf32> loc("bmm_2")
    func.return %8 : tensor<?x?x3xf32>
  }
}
