module {
  func.func @main(%x: tensor<2x5x2xf32>) -> (tensor<2x5x2xf32>) attributes {moec.inputs = ["x"], moec.outputs = ["y"]} {
    %w = "moec.constant"() {value = dense<[[[1.0, -1.0], [0.5, 2.0]]]> : tensor<1x2x2xf32>} : () -> tensor<1x2x2xf32>
    %reps = "moec.constant"() {value = dense<[2, 1, 1]> : tensor<3xi64>} : () -> tensor<3xi64>
    %t = "moec.tile"(%w, %reps) : (tensor<1x2x2xf32>, tensor<3xi64>) -> tensor<2x2x2xf32>
    %y = "moec.matmul"(%x, %t) : (tensor<2x5x2xf32>, tensor<2x2x2xf32>) -> tensor<2x5x2xf32>
    func.return %y : tensor<2x5x2xf32>
  }
}
// ----- expected
module {
  func.func @main(%x: tensor<2x5x2xf32>) -> (tensor<2x5x2xf32>) attributes {moec.inputs = ["x"], moec.outputs = ["y"]} {
    %w = "moec.constant"() {value = dense<[[[1.0, -1.0], [0.5, 2.0]]]> : tensor<1x2x2xf32>} : () -> tensor<1x2x2xf32>
    %reps = "moec.constant"() {value = dense<[2, 1, 1]> : tensor<3xi64>} : () -> tensor<3xi64>
    %t = "moec.tile"(%w, %reps) : (tensor<1x2x2xf32>, tensor<3xi64>) -> tensor<2x2x2xf32>
    %0 = "moec.constant"() {value = dense<2> : tensor<2xi64>} : () -> tensor<2xi64>
    %1 = "moec.reshape"(%w, %0) : (tensor<1x2x2xf32>, tensor<2xi64>) -> tensor<2x2xf32>
    %2 = "moec.matmul"(%x, %1) : (tensor<2x5x2xf32>, tensor<2x2xf32>) -> tensor<2x5x2xf32>
    %3 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %4 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %5 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %6 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %7 = "moec.slice"(%reps, %3, %4, %5, %6) : (tensor<3xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64>
    %8 = "moec.constant"() {value = dense<1> : tensor<2xi64>} : () -> tensor<2xi64>
    %9 = "moec.concat"(%7, %8) {axis = 0 : i64} : (tensor<1xi64>, tensor<2xi64>) -> tensor<3xi64>
    %10 = "moec.expand"(%2, %9) : (tensor<2x5x2xf32>, tensor<3xi64>) -> tensor<2x5x2xf32>
    func.return %10 : tensor<2x5x2xf32>
  }
}
