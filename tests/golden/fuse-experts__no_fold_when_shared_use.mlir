module {
  func.func @main(%x: tensor<?x2xf32, "T">) -> (tensor<?x2xf32, "T">, tensor<?x1x2xf32, "T">) attributes {moec.inputs = ["x"], moec.outputs = ["y", "per_slot"]} {
    %wr = "moec.constant"() {value = dense<[[0.5, -0.5], [0.25, 1.0]]> : tensor<2x2xf32>} : () -> tensor<2x2xf32>
    %w_in = "moec.constant"() {value = dense<[[[0.1, 0.2], [0.3, 0.4]], [[0.5, 0.6], [0.7, 0.8]]]> : tensor<2x2x2xf32>} : () -> tensor<2x2x2xf32>
    %w_out = "moec.constant"() {value = dense<[[[1.0], [2.0]], [[3.0], [4.0]]]> : tensor<2x2x1xf32>} : () -> tensor<2x2x1xf32>
    %logits = "moec.matmul"(%x, %wr) : (tensor<?x2xf32, "T">, tensor<2x2xf32>) -> tensor<?x2xf32, "T">
    %r:2 = "moe.route"(%logits) {k = 1 : i64} : (tensor<?x2xf32, "T">) -> (tensor<?x1xf32, "T">, tensor<?x1xi64, "T">)
    %p:2 = "moe.dispatch"(%r#1) {num_experts = 2 : i64} : (tensor<?x1xi64, "T">) -> (tensor<?xi64>, tensor<3xi64>)
    %ye = "moe.experts"(%x, %r#1, %p#0, %p#1, %w_in, %w_out) {activation = "swiglu"} : (tensor<?x2xf32, "T">, tensor<?x1xi64, "T">, tensor<?xi64>, tensor<3xi64>, tensor<2x2x2xf32>, tensor<2x2x1xf32>) -> tensor<?x1x2xf32, "T">
    %y = "moe.combine"(%ye, %r#0) : (tensor<?x1x2xf32, "T">, tensor<?x1xf32, "T">) -> tensor<?x2xf32, "T">
    func.return %y, %ye : tensor<?x2xf32, "T">, tensor<?x1x2xf32, "T">
  }
}
// ----- expected
module {
  func.func @main(%x: tensor<?x2xf32, "T">) -> (tensor<?x2xf32, "T">, tensor<?x1x2xf32, "T">) attributes {moec.inputs = ["x"], moec.outputs = ["y", "per_slot"]} {
    %wr = "moec.constant"() {value = dense<[[0.5, -0.5], [0.25, 1.0]]> : tensor<2x2xf32>} : () -> tensor<2x2xf32>
    %w_in = "moec.constant"() {value = dense<[[[0.1, 0.2], [0.3, 0.4]], [[0.5, 0.6], [0.7, 0.8]]]> : tensor<2x2x2xf32>} : () -> tensor<2x2x2xf32>
    %w_out = "moec.constant"() {value = dense<[[[1.0], [2.0]], [[3.0], [4.0]]]> : tensor<2x2x1xf32>} : () -> tensor<2x2x1xf32>
    %logits = "moec.matmul"(%x, %wr) : (tensor<?x2xf32, "T">, tensor<2x2xf32>) -> tensor<?x2xf32, "T">
    %r:2 = "moe.route"(%logits) {capacity = 0 : i64, drop = false, group_fill = 0xFFF0000000000000 : f64, group_score = "max", jitter_eps = 0.0 : f64, k = 1 : i64, min_weight = 0.0 : f64, n_group = 1 : i64, norm = "none", norm_eps = 0.0 : f64, norm_min = 0.0 : f64, post = "none", scale = 1.0 : f64, scoring = "softmax", tie = "low", topk_group = 1 : i64} : (tensor<?x2xf32, "T">) -> (tensor<?x1xf32, "T">, tensor<?x1xi64, "T">)
    %p:2 = "moe.dispatch"(%r#1) {block = 1 : i64, col_block = 0 : i64, cores = 0 : i64, gemv_max_slots = 0 : i64, num_experts = 2 : i64, strategy = "sort_pad"} : (tensor<?x1xi64, "T">) -> (tensor<?xi64>, tensor<3xi64>)
    %ye = "moe.experts"(%x, %r#1, %p#0, %p#1, %w_in, %w_out) {activation = "swiglu", alpha = 1.0 : f64, aq = "none", beta = 0.0 : f64, gate_layout = "concat", has_b_in = false, has_b_out = false, limit = 0x7FF0000000000000 : f64, weights_at = "none", wq = "none", wq_group = 0 : i64, wq_zp = false} : (tensor<?x2xf32, "T">, tensor<?x1xi64, "T">, tensor<?xi64>, tensor<3xi64>, tensor<2x2x2xf32>, tensor<2x2x1xf32>) -> tensor<?x1x2xf32, "T">
    %y = "moe.combine"(%ye, %r#0) {has_shared = false, layer = "", passthrough = false, weighted = true} : (tensor<?x1x2xf32, "T">, tensor<?x1xf32, "T">) -> tensor<?x2xf32, "T">
    func.return %y, %ye : tensor<?x2xf32, "T">, tensor<?x1x2xf32, "T">
  }
}
