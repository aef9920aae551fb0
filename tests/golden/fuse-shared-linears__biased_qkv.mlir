// q/k/v each with a constant bias (Qwen2): fused with the biases concatenated, the add before the split (either
// operand order); the two linears of %b, one bias an input (computed at run time), stay apart
module {
  func.func @main(%a: tensor<?x8xf32, "T">, %b: tensor<?x8xf32, "T">, %rb: tensor<4xf32>) -> (tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">) attributes {moec.inputs = ["a", "b", "rb"], moec.outputs = ["q", "k", "v", "u", "w"]} {
    %wq = "moec.constant"() {value = dense<0.5> : tensor<8x4xf32>} : () -> tensor<8x4xf32>
    %wk = "moec.constant"() {value = dense<0.25> : tensor<8x4xf32>} : () -> tensor<8x4xf32>
    %wv = "moec.constant"() {value = dense<2.0> : tensor<8x4xf32>} : () -> tensor<8x4xf32>
    %bq = "moec.constant"() {value = dense<1.0> : tensor<4xf32>} : () -> tensor<4xf32>
    %bk = "moec.constant"() {value = dense<2.0> : tensor<1x4xf32>} : () -> tensor<1x4xf32>
    %bv = "moec.constant"() {value = dense<3.0> : tensor<4xf32>} : () -> tensor<4xf32>
    %mq = "moec.matmul"(%a, %wq) : (tensor<?x8xf32, "T">, tensor<8x4xf32>) -> tensor<?x4xf32, "T">
    %aq = "moec.add"(%mq, %bq) : (tensor<?x4xf32, "T">, tensor<4xf32>) -> tensor<?x4xf32, "T">
    %mk = "moec.matmul"(%a, %wk) : (tensor<?x8xf32, "T">, tensor<8x4xf32>) -> tensor<?x4xf32, "T">
    %ak = "moec.add"(%bk, %mk) : (tensor<1x4xf32>, tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T">
    %mv = "moec.matmul"(%a, %wv) : (tensor<?x8xf32, "T">, tensor<8x4xf32>) -> tensor<?x4xf32, "T">
    %av = "moec.add"(%mv, %bv) : (tensor<?x4xf32, "T">, tensor<4xf32>) -> tensor<?x4xf32, "T">
    %mu = "moec.matmul"(%b, %wq) : (tensor<?x8xf32, "T">, tensor<8x4xf32>) -> tensor<?x4xf32, "T">
    %au = "moec.add"(%mu, %rb) : (tensor<?x4xf32, "T">, tensor<4xf32>) -> tensor<?x4xf32, "T">
    %mw = "moec.matmul"(%b, %wk) : (tensor<?x8xf32, "T">, tensor<8x4xf32>) -> tensor<?x4xf32, "T">
    %aw = "moec.add"(%mw, %bq) : (tensor<?x4xf32, "T">, tensor<4xf32>) -> tensor<?x4xf32, "T">
    %q = "moec.neg"(%aq) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T">
    %k = "moec.neg"(%ak) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T">
    %v = "moec.neg"(%av) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T">
    %u = "moec.neg"(%au) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T">
    %w = "moec.neg"(%aw) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T">
    func.return %q, %k, %v, %u, %w : tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">
  }
}
// ----- expected
module {
  func.func @main(%a: tensor<?x8xf32, "T">, %b: tensor<?x8xf32, "T">, %rb: tensor<4xf32>) -> (tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">) attributes {moec.inputs = ["a", "b", "rb"], moec.outputs = ["q", "k", "v", "u", "w"]} {
    %wq = "moec.constant"() {value = dense<0.5> : tensor<8x4xf32>} : () -> tensor<8x4xf32>
    %wk = "moec.constant"() {value = dense<0.25> : tensor<8x4xf32>} : () -> tensor<8x4xf32>
    %wv = "moec.constant"() {value = dense<2.0> : tensor<8x4xf32>} : () -> tensor<8x4xf32>
    %bq = "moec.constant"() {value = dense<1.0> : tensor<4xf32>} : () -> tensor<4xf32>
    %bk = "moec.constant"() {value = dense<2.0> : tensor<1x4xf32>} : () -> tensor<1x4xf32>
    %bv = "moec.constant"() {value = dense<3.0> : tensor<4xf32>} : () -> tensor<4xf32>
    %fused_wq = "moec.constant"() {value = dense_resource<fused_wq> : tensor<8x12xf32>} : () -> tensor<8x12xf32>
    %0 = "moec.matmul"(%a, %fused_wq) : (tensor<?x8xf32, "T">, tensor<8x12xf32>) -> tensor<?x12xf32, "T">
    %fused_wq_bias = "moec.constant"() {value = dense_resource<fused_wq_bias> : tensor<12xf32>} : () -> tensor<12xf32>
    %1 = "moec.add"(%0, %fused_wq_bias) : (tensor<?x12xf32, "T">, tensor<12xf32>) -> tensor<?x12xf32, "T">
    %2 = "moec.constant"() {value = dense<4> : tensor<3xi64>} : () -> tensor<3xi64>
    %aq:3 = "moec.split"(%1, %2) {axis = -1 : i64} : (tensor<?x12xf32, "T">, tensor<3xi64>) -> (tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">)
    %mu = "moec.matmul"(%b, %wq) : (tensor<?x8xf32, "T">, tensor<8x4xf32>) -> tensor<?x4xf32, "T">
    %au = "moec.add"(%mu, %rb) : (tensor<?x4xf32, "T">, tensor<4xf32>) -> tensor<?x4xf32, "T">
    %mw = "moec.matmul"(%b, %wk) : (tensor<?x8xf32, "T">, tensor<8x4xf32>) -> tensor<?x4xf32, "T">
    %aw = "moec.add"(%mw, %bq) : (tensor<?x4xf32, "T">, tensor<4xf32>) -> tensor<?x4xf32, "T">
    %q = "moec.neg"(%aq#0) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T">
    %k = "moec.neg"(%aq#1) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T">
    %v = "moec.neg"(%aq#2) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T">
    %u = "moec.neg"(%au) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T">
    %w = "moec.neg"(%aw) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T">
    func.return %q, %k, %v, %u, %w : tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">
  }
}
