// options: mode=int8 scope=experts
module {
  func.func @main(%x: tensor<?x2xf32, "T">) -> (tensor<?x2xf32, "T">) attributes {moec.inputs = ["x"], moec.outputs = ["y"]} {
    %wr = "moec.constant"() {value = dense<[[0.5, -0.5], [0.25, 1.0]]> : tensor<2x2xf32>} : () -> tensor<2x2xf32>
    %w_in = "moec.constant"() {value = dense<[[[0.1, 0.2], [0.3, 0.4]], [[0.5, 0.6], [0.7, 0.8]]]> : tensor<2x2x2xf32>} : () -> tensor<2x2x2xf32>
    %w_out = "moec.constant"() {value = dense<[[[1.0], [2.0]], [[3.0], [4.0]]]> : tensor<2x2x1xf32>} : () -> tensor<2x2x1xf32>
    %logits = "moec.matmul"(%x, %wr) : (tensor<?x2xf32, "T">, tensor<2x2xf32>) -> tensor<?x2xf32, "T">
    %r:2 = "moe.route"(%logits) {k = 1 : i64} : (tensor<?x2xf32, "T">) -> (tensor<?x1xf32, "T">, tensor<?x1xi64, "T">)
    %p:2 = "moe.dispatch"(%r#1) {num_experts = 2 : i64} : (tensor<?x1xi64, "T">) -> (tensor<?xi64>, tensor<3xi64>)
    %ye = "moe.experts"(%x, %r#1, %p#0, %p#1, %w_in, %w_out) {activation = "swiglu"} : (tensor<?x2xf32, "T">, tensor<?x1xi64, "T">, tensor<?xi64>, tensor<3xi64>, tensor<2x2x2xf32>, tensor<2x2x1xf32>) -> tensor<?x1x2xf32, "T">
    %y = "moe.combine"(%ye, %r#0) {layer = "moe0"} : (tensor<?x1x2xf32, "T">, tensor<?x1xf32, "T">) -> tensor<?x2xf32, "T">
    func.return %y : tensor<?x2xf32, "T">
  }
}
// ----- expected
module attributes {moec.moe_layers = array<i64>, moec.quantized_weights = ["{\"bytes_after\": 44, \"bytes_before\": 48, \"layer\": \"moe0\", \"mode\": \"int8\", \"scope\": \"experts\", \"tensors\": 2}"]} {
  func.func @main(%x: tensor<?x2xf32, "T">) -> (tensor<?x2xf32, "T">) attributes {moec.inputs = ["x"], moec.outputs = ["y"]} {
    %wr = "moec.constant"() {value = dense<[[0.5, -0.5], [0.25, 1.0]]> : tensor<2x2xf32>} : () -> tensor<2x2xf32>
    %w_in = "moec.constant"() {value = dense<[[[0.1, 0.2], [0.3, 0.4]], [[0.5, 0.6], [0.7, 0.8]]]> : tensor<2x2x2xf32>} : () -> tensor<2x2x2xf32>
    %w_out = "moec.constant"() {value = dense<[[[1.0], [2.0]], [[3.0], [4.0]]]> : tensor<2x2x1xf32>} : () -> tensor<2x2x1xf32>
    %logits = "moec.matmul"(%x, %wr) : (tensor<?x2xf32, "T">, tensor<2x2xf32>) -> tensor<?x2xf32, "T">
    %r:2 = "moe.route"(%logits) {k = 1 : i64} : (tensor<?x2xf32, "T">) -> (tensor<?x1xf32, "T">, tensor<?x1xi64, "T">)
    %p:2 = "moe.dispatch"(%r#1) {num_experts = 2 : i64} : (tensor<?x1xi64, "T">) -> (tensor<?xi64>, tensor<3xi64>)
    %experts_w_in_int8 = "moec.constant"() {value = dense_resource<experts_w_in_int8> : tensor<2x2x2xi8>} : () -> tensor<2x2x2xi8>
    %experts_w_out_int8 = "moec.constant"() {value = dense_resource<experts_w_out_int8> : tensor<2x2x1xi8>} : () -> tensor<2x2x1xi8>
    %experts_s_w_in = "moec.constant"() {value = dense_resource<experts_s_w_in> : tensor<2x2xf32>} : () -> tensor<2x2xf32>
    %experts_s_w_out = "moec.constant"() {value = dense_resource<experts_s_w_out> : tensor<2x2xf32>} : () -> tensor<2x2xf32>
    %ye = "moe.experts"(%x, %r#1, %p#0, %p#1, %experts_w_in_int8, %experts_w_out_int8, %experts_s_w_in, %experts_s_w_out) {wq = "int8"} : (tensor<?x2xf32, "T">, tensor<?x1xi64, "T">, tensor<?xi64>, tensor<3xi64>, tensor<2x2x2xi8>, tensor<2x2x1xi8>, tensor<2x2xf32>, tensor<2x2xf32>) -> tensor<?x1x2xf32, "T">
    %y = "moe.combine"(%ye, %r#0) {layer = "moe0"} : (tensor<?x1x2xf32, "T">, tensor<?x1xf32, "T">) -> tensor<?x2xf32, "T">
    func.return %y : tensor<?x2xf32, "T">
  }
}
