module {
  func.func @main(%x: tensor<?x4100xf32, "T">) -> (tensor<?x4100xf32, "T">, tensor<?x4100xf32, "T">) attributes {moec.inputs = ["x"], moec.outputs = ["y0", "y1"]} {
    %w = "moec.constant"() {value = dense<3> : tensor<2x4100xi8>} : () -> tensor<2x4100xi8>
    %i0 = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %i1 = "moec.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64>
    %w0 = "moec.gather"(%w, %i0) {axis = 0 : i64} : (tensor<2x4100xi8>, tensor<i64>) -> tensor<4100xi8> loc("expert0_weight")
    %w1 = "moec.gather"(%w, %i1) {axis = 0 : i64} : (tensor<2x4100xi8>, tensor<i64>) -> tensor<4100xi8> loc("expert1_weight")
    %f0 = "moec.cast"(%w0) {to = f32} : (tensor<4100xi8>) -> tensor<4100xf32>
    %f1 = "moec.cast"(%w1) {to = f32} : (tensor<4100xi8>) -> tensor<4100xf32>
    %y0 = "moec.mul"(%x, %f0) : (tensor<?x4100xf32, "T">, tensor<4100xf32>) -> tensor<?x4100xf32, "T">
    %y1 = "moec.mul"(%x, %f1) : (tensor<?x4100xf32, "T">, tensor<4100xf32>) -> tensor<?x4100xf32, "T">
    func.return %y0, %y1 : tensor<?x4100xf32, "T">, tensor<?x4100xf32, "T">
  }
}
// ----- expected
module {
  func.func @main(%x: tensor<?x4100xf32, "T">) -> (tensor<?x4100xf32, "T">, tensor<?x4100xf32, "T">) attributes {moec.inputs = ["x"], moec.outputs = ["y0", "y1"]} {
    %w = "moec.constant"() {value = dense<3> : tensor<2x4100xi8>} : () -> tensor<2x4100xi8>
    %i0 = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %i1 = "moec.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64>
    %w0 = "moec.constant"() {value = dense_resource<c.gather> : tensor<4100xi8>} : () -> tensor<4100xi8> loc("expert0_weight")
    %w1 = "moec.constant"() {value = dense_resource<c.gather_1> : tensor<4100xi8>} : () -> tensor<4100xi8> loc("expert1_weight")
    %f0 = "moec.cast"(%w0) {to = f32} : (tensor<4100xi8>) -> tensor<4100xf32>
    %f1 = "moec.cast"(%w1) {to = f32} : (tensor<4100xi8>) -> tensor<4100xf32>
    %y0 = "moec.mul"(%x, %f0) : (tensor<?x4100xf32, "T">, tensor<4100xf32>) -> tensor<?x4100xf32, "T">
    %y1 = "moec.mul"(%x, %f1) : (tensor<?x4100xf32, "T">, tensor<4100xf32>) -> tensor<?x4100xf32, "T">
    func.return %y0, %y1 : tensor<?x4100xf32, "T">, tensor<?x4100xf32, "T">
  }
}
