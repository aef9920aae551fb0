// options: world=2 rank=1
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
module attributes {moec.ep = "{\"rank\": 1, \"world\": 2}"} {
  func.func @main(%x: tensor<?x2xf32, "T">) -> (tensor<?x2xf32, "T">) attributes {moec.inputs = ["x"], moec.outputs = ["y"]} {
    %wr = "moec.constant"() {value = dense<[[0.5, -0.5], [0.25, 1.0]]> : tensor<2x2xf32>} : () -> tensor<2x2xf32>
    %logits = "moec.matmul"(%x, %wr) : (tensor<?x2xf32, "T">, tensor<2x2xf32>) -> tensor<?x2xf32, "T">
    %r:2 = "moe.route"(%logits) {k = 1 : i64} : (tensor<?x2xf32, "T">) -> (tensor<?x1xf32, "T">, tensor<?x1xi64, "T">)
    %0:5 = "moe.ep_pack"(%x, %r#1, %r#0) {num_experts = 2 : i64, placement = array<i64: 0, 1>, rank = 1 : i64, slots = 1 : i64, world = 2 : i64} : (tensor<?x2xf32, "T">, tensor<?x1xi64, "T">, tensor<?x1xf32, "T">) -> (tensor<?x2xf32>, tensor<?x1xi64>, tensor<?x1xf32>, tensor<2xi64>, tensor<?xi64>)
    %1 = "moe.exchange_counts"(%0#3) {world = 2 : i64} : (tensor<2xi64>) -> tensor<2xi64>
    %2:3 = "moe.all_to_all"(%0#3, %1, %0#0, %0#1, %0#2) {world = 2 : i64} : (tensor<2xi64>, tensor<2xi64>, tensor<?x2xf32>, tensor<?x1xi64>, tensor<?x1xf32>) -> (tensor<?x2xf32>, tensor<?x1xi64>, tensor<?x1xf32>)
    %w_in.rank1 = "moec.constant"() {value = dense_resource<w_in.rank1> : tensor<1x2x2xf32>} : () -> tensor<1x2x2xf32>
    %w_out.rank1 = "moec.constant"() {value = dense_resource<w_out.rank1> : tensor<1x2x1xf32>} : () -> tensor<1x2x1xf32>
    %3:2 = "moe.dispatch"(%2#1) {num_experts = 1 : i64} : (tensor<?x1xi64>) -> (tensor<?xi64>, tensor<2xi64>)
    %4 = "moe.experts"(%2#0, %2#1, %3#0, %3#1, %w_in.rank1, %w_out.rank1) : (tensor<?x2xf32>, tensor<?x1xi64>, tensor<?xi64>, tensor<2xi64>, tensor<1x2x2xf32>, tensor<1x2x1xf32>) -> tensor<?x1x2xf32>
    %5 = "moe.combine"(%4, %2#2) {layer = "moe0"} : (tensor<?x1x2xf32>, tensor<?x1xf32>) -> tensor<?x2xf32>
    %6 = "moe.all_to_all"(%1, %0#3, %5) {world = 2 : i64} : (tensor<2xi64>, tensor<2xi64>, tensor<?x2xf32>) -> tensor<?x2xf32>
    %y = "moe.ep_unpack"(%6, %0#4, %x) : (tensor<?x2xf32>, tensor<?xi64>, tensor<?x2xf32, "T">) -> tensor<?x2xf32, "T">
    func.return %y : tensor<?x2xf32, "T">
  }
}
