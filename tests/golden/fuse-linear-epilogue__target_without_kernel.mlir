// target: triton
module {
  func.func @main(%x: tensor<?x4xf32>) -> (tensor<?x3xf32>) attributes {moec.inputs = ["x"], moec.outputs = ["y"]} {
    %w = "moec.constant"() {value = dense<[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [0.5, 0.25, 0.125]]> : tensor<4x3xf32>} : () -> tensor<4x3xf32>
    %b = "moec.constant"() {value = dense<[0.5, -1.0, 2.0]> : tensor<3xf32>} : () -> tensor<3xf32>
    %m = "moec.matmul"(%x, %w) : (tensor<?x4xf32>, tensor<4x3xf32>) -> tensor<?x3xf32>
    %y = "moec.add"(%b, %m) : (tensor<3xf32>, tensor<?x3xf32>) -> tensor<?x3xf32>
    func.return %y : tensor<?x3xf32>
  }
}
// ----- expected
// CHECK: "moec.matmul"
// CHECK-NEXT: "moec.add"
// CHECK-NOT: moec.linear
