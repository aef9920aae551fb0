// target: cpu
module {
  func.func @main(%x: tensor<?x?x4xf32>, %res: tensor<?x?x3xf32>, %wa: tensor<4x3xf32>, %mid: tensor<?x1x3xf32>) -> (tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>) attributes {moec.inputs = ["x", "res", "wa", "mid"], moec.outputs = ["biased", "residual", "shared", "not_constant", "middle"]} {
    %w = "moec.constant"() {value = dense<[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [0.5, 0.25, 0.125]]> : tensor<4x3xf32>} : () -> tensor<4x3xf32>
    %b = "moec.constant"() {value = dense<[0.5, -1.0, 2.0]> : tensor<3xf32>} : () -> tensor<3xf32>
    %m0 = "moec.matmul"(%x, %w) : (tensor<?x?x4xf32>, tensor<4x3xf32>) -> tensor<?x?x3xf32> loc("q_proj")
    %biased = "moec.add"(%m0, %b) : (tensor<?x?x3xf32>, tensor<3xf32>) -> tensor<?x?x3xf32> loc("q_proj_bias")
    %w2 = "moec.constant"() {value = dense<[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]> : tensor<3x3xf32>} : () -> tensor<3x3xf32>
    %m1 = "moec.matmul"(%biased, %w2) : (tensor<?x?x3xf32>, tensor<3x3xf32>) -> tensor<?x?x3xf32> loc("o_proj")
    %residual = "moec.add"(%res, %m1) : (tensor<?x?x3xf32>, tensor<?x?x3xf32>) -> tensor<?x?x3xf32> loc("residual_add")
    %m2 = "moec.matmul"(%x, %w) : (tensor<?x?x4xf32>, tensor<4x3xf32>) -> tensor<?x?x3xf32> loc("read_twice")
    %shared = "moec.add"(%m2, %b) : (tensor<?x?x3xf32>, tensor<3xf32>) -> tensor<?x?x3xf32>
    %m3 = "moec.matmul"(%x, %wa) : (tensor<?x?x4xf32>, tensor<4x3xf32>) -> tensor<?x?x3xf32> loc("activation_weight")
    %not_constant = "moec.add"(%m3, %b) : (tensor<?x?x3xf32>, tensor<3xf32>) -> tensor<?x?x3xf32>
    %m4 = "moec.matmul"(%x, %w) : (tensor<?x?x4xf32>, tensor<4x3xf32>) -> tensor<?x?x3xf32> loc("middle_broadcast")
    %middle = "moec.add"(%m4, %mid) : (tensor<?x?x3xf32>, tensor<?x1x3xf32>) -> tensor<?x?x3xf32>
    func.return %biased, %residual, %m2, %not_constant, %middle : tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>
  }
}
// ----- expected
module {
  func.func @main(%x: tensor<?x?x4xf32>, %res: tensor<?x?x3xf32>, %wa: tensor<4x3xf32>, %mid: tensor<?x1x3xf32>) -> (tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>) attributes {moec.inputs = ["x", "res", "wa", "mid"], moec.outputs = ["biased", "residual", "shared", "not_constant", "middle"]} {
    %w = "moec.constant"() {value = dense<[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [0.5, 0.25, 0.125]]> : tensor<4x3xf32>} : () -> tensor<4x3xf32>
    %b = "moec.constant"() {value = dense<[0.5, -1.0, 2.0]> : tensor<3xf32>} : () -> tensor<3xf32>
    %0 = "moec.linear"(%x, %w, %b) : (tensor<?x?x4xf32>, tensor<4x3xf32>, tensor<3xf32>) -> tensor<?x?x3xf32> loc("q_proj_bias")
    %w2 = "moec.constant"() {value = dense<[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]]> : tensor<3x3xf32>} : () -> tensor<3x3xf32>
    %1 = "moec.linear"(%0, %w2, %res) : (tensor<?x?x3xf32>, tensor<3x3xf32>, tensor<?x?x3xf32>) -> tensor<?x?x3xf32> loc("residual_add")
    %m2 = "moec.matmul"(%x, %w) : (tensor<?x?x4xf32>, tensor<4x3xf32>) -> tensor<?x?x3xf32> loc("read_twice")
    %shared = "moec.add"(%m2, %b) : (tensor<?x?x3xf32>, tensor<3xf32>) -> tensor<?x?x3xf32>
    %m3 = "moec.matmul"(%x, %wa) : (tensor<?x?x4xf32>, tensor<4x3xf32>) -> tensor<?x?x3xf32> loc("activation_weight")
    %not_constant = "moec.add"(%m3, %b) : (tensor<?x?x3xf32>, tensor<3xf32>) -> tensor<?x?x3xf32>
    %m4 = "moec.matmul"(%x, %w) : (tensor<?x?x4xf32>, tensor<4x3xf32>) -> tensor<?x?x3xf32> loc("middle_broadcast")
    %middle = "moec.add"(%m4, %mid) : (tensor<?x?x3xf32>, tensor<?x1x3xf32>) -> tensor<?x?x3xf32>
    func.return %0, %1, %m2, %not_constant, %middle : tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>
  }
}
