module {
  func.func @main(%h: tensor<1x?x8xf32, "T">) -> (tensor<?x8xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<1x?x8xf32, "T">) attributes {moec.inputs = ["h"], moec.outputs = ["q", "k", "v", "other"]} {
    %wq = "moec.constant"() {value = dense<0.5> : tensor<8x8xf32>} : () -> tensor<8x8xf32>
    %wk = "moec.constant"() {value = dense<0.25> : tensor<8x4xf32>} : () -> tensor<8x4xf32>
    %wv = "moec.constant"() {value = dense<2.0> : tensor<8x4xf32>} : () -> tensor<8x4xf32>
    %s0 = "moec.constant"() {value = dense<[-1, 8]> : tensor<2xi64>} : () -> tensor<2xi64>
    %s1 = "moec.constant"() {value = dense<[-1, 8]> : tensor<2xi64>} : () -> tensor<2xi64>
    %s2 = "moec.constant"() {value = dense<[-1, 8]> : tensor<2xi64>} : () -> tensor<2xi64>
    %x0 = "moec.reshape"(%h, %s0) : (tensor<1x?x8xf32, "T">, tensor<2xi64>) -> tensor<?x8xf32, "T">
    %mq = "moec.matmul"(%x0, %wq) : (tensor<?x8xf32, "T">, tensor<8x8xf32>) -> tensor<?x8xf32, "T"> loc("q_proj")
    %x1 = "moec.reshape"(%h, %s1) : (tensor<1x?x8xf32, "T">, tensor<2xi64>) -> tensor<?x8xf32, "T">
    %mk = "moec.matmul"(%x1, %wk) : (tensor<?x8xf32, "T">, tensor<8x4xf32>) -> tensor<?x4xf32, "T"> loc("k_proj")
    %x2 = "moec.reshape"(%h, %s2) : (tensor<1x?x8xf32, "T">, tensor<2xi64>) -> tensor<?x8xf32, "T">
    %mv = "moec.matmul"(%x2, %wv) : (tensor<?x8xf32, "T">, tensor<8x4xf32>) -> tensor<?x4xf32, "T"> loc("v_proj")
    %q = "moec.neg"(%mq) : (tensor<?x8xf32, "T">) -> tensor<?x8xf32, "T">
    %k = "moec.neg"(%mk) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T">
    %v = "moec.neg"(%mv) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T">
    %other = "moec.relu"(%h) : (tensor<1x?x8xf32, "T">) -> tensor<1x?x8xf32, "T">
    func.return %q, %k, %v, %other : tensor<?x8xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<1x?x8xf32, "T">
  }
}
// ----- expected
module {
  func.func @main(%h: tensor<1x?x8xf32, "T">) -> (tensor<?x8xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<1x?x8xf32, "T">) attributes {moec.inputs = ["h"], moec.outputs = ["q", "k", "v", "other"]} {
    %wq = "moec.constant"() {value = dense<0.5> : tensor<8x8xf32>} : () -> tensor<8x8xf32>
    %wk = "moec.constant"() {value = dense<0.25> : tensor<8x4xf32>} : () -> tensor<8x4xf32>
    %wv = "moec.constant"() {value = dense<2.0> : tensor<8x4xf32>} : () -> tensor<8x4xf32>
    %s0 = "moec.constant"() {value = dense<[-1, 8]> : tensor<2xi64>} : () -> tensor<2xi64>
    %s1 = "moec.constant"() {value = dense<[-1, 8]> : tensor<2xi64>} : () -> tensor<2xi64>
    %s2 = "moec.constant"() {value = dense<[-1, 8]> : tensor<2xi64>} : () -> tensor<2xi64>
    %x0 = "moec.reshape"(%h, %s0) : (tensor<1x?x8xf32, "T">, tensor<2xi64>) -> tensor<?x8xf32, "T">
    %fused_wq = "moec.constant"() {value = dense_resource<fused_wq> : tensor<8x16xf32>} : () -> tensor<8x16xf32> loc("q_proj")
    %0 = "moec.matmul"(%x0, %fused_wq) : (tensor<?x8xf32, "T">, tensor<8x16xf32>) -> tensor<?x16xf32, "T"> loc("q_proj")
    %1 = "moec.constant"() {value = dense<[8, 4, 4]> : tensor<3xi64>} : () -> tensor<3xi64> loc("q_proj")
    %mq:3 = "moec.split"(%0, %1) {axis = -1 : i64} : (tensor<?x16xf32, "T">, tensor<3xi64>) -> (tensor<?x8xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">) loc("q_proj")
    %x1 = "moec.reshape"(%h, %s1) : (tensor<1x?x8xf32, "T">, tensor<2xi64>) -> tensor<?x8xf32, "T">
    %x2 = "moec.reshape"(%h, %s2) : (tensor<1x?x8xf32, "T">, tensor<2xi64>) -> tensor<?x8xf32, "T">
    %q = "moec.neg"(%mq#0) : (tensor<?x8xf32, "T">) -> tensor<?x8xf32, "T">
    %k = "moec.neg"(%mq#1) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T">
    %v = "moec.neg"(%mq#2) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T">
    %other = "moec.relu"(%h) : (tensor<1x?x8xf32, "T">) -> tensor<1x?x8xf32, "T">
    func.return %q, %k, %v, %other : tensor<?x8xf32, "T">, tensor<?x4xf32, "T">, tensor<?x4xf32, "T">, tensor<1x?x8xf32, "T">
  }
}
