// target: cpu
module {
  func.func @main(%x: tensor<?x?x4xf32>, %wa: tensor<4x3xf32>) -> (tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>) attributes {moec.inputs = ["x", "wa"], moec.outputs = ["relu_bias", "silu", "gelu", "sigmoid_kept", "other_sigmoid", "not_constant"]} {
    %w = "moec.constant"() {value = dense<[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [0.5, 0.25, 0.125]]> : tensor<4x3xf32>} : () -> tensor<4x3xf32>
    %b = "moec.constant"() {value = dense<[0.5, -1.0, 2.0]> : tensor<3xf32>} : () -> tensor<3xf32>
    %m0 = "moec.matmul"(%x, %w) : (tensor<?x?x4xf32>, tensor<4x3xf32>) -> tensor<?x?x3xf32>
    %a0 = "moec.add"(%m0, %b) : (tensor<?x?x3xf32>, tensor<3xf32>) -> tensor<?x?x3xf32>
    %relu_bias = "moec.relu"(%a0) : (tensor<?x?x3xf32>) -> tensor<?x?x3xf32> loc("fc1_relu")
    %m1 = "moec.matmul"(%x, %w) : (tensor<?x?x4xf32>, tensor<4x3xf32>) -> tensor<?x?x3xf32>
    %s1 = "moec.sigmoid"(%m1) : (tensor<?x?x3xf32>) -> tensor<?x?x3xf32>
    %silu = "moec.mul"(%s1, %m1) : (tensor<?x?x3xf32>, tensor<?x?x3xf32>) -> tensor<?x?x3xf32> loc("gate_silu")
    %m2 = "moec.matmul"(%x, %w) : (tensor<?x?x4xf32>, tensor<4x3xf32>) -> tensor<?x?x3xf32>
    %gelu = "moec.gelu"(%m2) : (tensor<?x?x3xf32>) -> tensor<?x?x3xf32> loc("fc_gelu")
    %m3 = "moec.matmul"(%x, %w) : (tensor<?x?x4xf32>, tensor<4x3xf32>) -> tensor<?x?x3xf32>
    %s3 = "moec.sigmoid"(%m3) : (tensor<?x?x3xf32>) -> tensor<?x?x3xf32> loc("sigmoid_read_twice")
    %k3 = "moec.mul"(%m3, %s3) : (tensor<?x?x3xf32>, tensor<?x?x3xf32>) -> tensor<?x?x3xf32>
    %sigmoid_kept = "moec.add"(%k3, %s3) : (tensor<?x?x3xf32>, tensor<?x?x3xf32>) -> tensor<?x?x3xf32>
    %m4 = "moec.matmul"(%x, %w) : (tensor<?x?x4xf32>, tensor<4x3xf32>) -> tensor<?x?x3xf32>
    %m5 = "moec.matmul"(%x, %wa) : (tensor<?x?x4xf32>, tensor<4x3xf32>) -> tensor<?x?x3xf32>
    %s5 = "moec.sigmoid"(%m5) : (tensor<?x?x3xf32>) -> tensor<?x?x3xf32>
    %other_sigmoid = "moec.mul"(%m4, %s5) : (tensor<?x?x3xf32>, tensor<?x?x3xf32>) -> tensor<?x?x3xf32> loc("sigmoid_of_another")
    %m6 = "moec.matmul"(%x, %wa) : (tensor<?x?x4xf32>, tensor<4x3xf32>) -> tensor<?x?x3xf32>
    %not_constant = "moec.relu"(%m6) : (tensor<?x?x3xf32>) -> tensor<?x?x3xf32> loc("activation_weight")
    func.return %relu_bias, %silu, %gelu, %sigmoid_kept, %other_sigmoid, %not_constant : tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>
  }
}
// ----- expected
module {
  func.func @main(%x: tensor<?x?x4xf32>, %wa: tensor<4x3xf32>) -> (tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>) attributes {moec.inputs = ["x", "wa"], moec.outputs = ["relu_bias", "silu", "gelu", "sigmoid_kept", "other_sigmoid", "not_constant"]} {
    %w = "moec.constant"() {value = dense<[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [0.5, 0.25, 0.125]]> : tensor<4x3xf32>} : () -> tensor<4x3xf32>
    %b = "moec.constant"() {value = dense<[0.5, -1.0, 2.0]> : tensor<3xf32>} : () -> tensor<3xf32>
    %0 = "moec.linear"(%x, %w, %b) {activation = "relu"} : (tensor<?x?x4xf32>, tensor<4x3xf32>, tensor<3xf32>) -> tensor<?x?x3xf32> loc("fc1_relu")
    %1 = "moec.linear"(%x, %w) {activation = "silu"} : (tensor<?x?x4xf32>, tensor<4x3xf32>) -> tensor<?x?x3xf32> loc("gate_silu")
    %2 = "moec.linear"(%x, %w) {activation = "gelu"} : (tensor<?x?x4xf32>, tensor<4x3xf32>) -> tensor<?x?x3xf32> loc("fc_gelu")
    %m3 = "moec.matmul"(%x, %w) : (tensor<?x?x4xf32>, tensor<4x3xf32>) -> tensor<?x?x3xf32>
    %s3 = "moec.sigmoid"(%m3) : (tensor<?x?x3xf32>) -> tensor<?x?x3xf32> loc("sigmoid_read_twice")
    %k3 = "moec.mul"(%m3, %s3) : (tensor<?x?x3xf32>, tensor<?x?x3xf32>) -> tensor<?x?x3xf32>
    %sigmoid_kept = "moec.add"(%k3, %s3) : (tensor<?x?x3xf32>, tensor<?x?x3xf32>) -> tensor<?x?x3xf32>
    %m4 = "moec.matmul"(%x, %w) : (tensor<?x?x4xf32>, tensor<4x3xf32>) -> tensor<?x?x3xf32>
    %m5 = "moec.matmul"(%x, %wa) : (tensor<?x?x4xf32>, tensor<4x3xf32>) -> tensor<?x?x3xf32>
    %s5 = "moec.sigmoid"(%m5) : (tensor<?x?x3xf32>) -> tensor<?x?x3xf32>
    %other_sigmoid = "moec.mul"(%m4, %s5) : (tensor<?x?x3xf32>, tensor<?x?x3xf32>) -> tensor<?x?x3xf32> loc("sigmoid_of_another")
    %m6 = "moec.matmul"(%x, %wa) : (tensor<?x?x4xf32>, tensor<4x3xf32>) -> tensor<?x?x3xf32>
    %not_constant = "moec.relu"(%m6) : (tensor<?x?x3xf32>) -> tensor<?x?x3xf32> loc("activation_weight")
    func.return %0, %1, %2, %sigmoid_kept, %other_sigmoid, %not_constant : tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>, tensor<?x?x3xf32>
  }
}
