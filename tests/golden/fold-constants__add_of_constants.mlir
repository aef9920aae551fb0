module {
  func.func @main(%x: tensor<?x2xf32, "T">) -> (tensor<?x2xf32, "T">) attributes {moec.inputs = ["x"], moec.outputs = ["y"]} {
    %a = "moec.constant"() {value = dense<[1.0, -2.0]> : tensor<2xf32>} : () -> tensor<2xf32>
    %b = "moec.constant"() {value = dense<[0.5, 0.25]> : tensor<2xf32>} : () -> tensor<2xf32>
    %s = "moec.add"(%a, %b) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32> loc("fold_me")
    %r = "moec.relu"(%s) : (tensor<2xf32>) -> tensor<2xf32>
    %y = "moec.add"(%x, %r) : (tensor<?x2xf32, "T">, tensor<2xf32>) -> tensor<?x2xf32, "T"> loc("keep")
    func.return %y : tensor<?x2xf32, "T">
  }
}
// ----- expected
module {
  func.func @main(%x: tensor<?x2xf32, "T">) -> (tensor<?x2xf32, "T">) attributes {moec.inputs = ["x"], moec.outputs = ["y"]} {
    %a = "moec.constant"() {value = dense<[1.0, -2.0]> : tensor<2xf32>} : () -> tensor<2xf32>
    %b = "moec.constant"() {value = dense<[0.5, 0.25]> : tensor<2xf32>} : () -> tensor<2xf32>
    %s = "moec.constant"() {value = dense<[1.5, -1.75]> : tensor<2xf32>} : () -> tensor<2xf32> loc("fold_me")
    %r = "moec.constant"() {value = dense<[1.5, 0.0]> : tensor<2xf32>} : () -> tensor<2xf32>
    %y = "moec.add"(%x, %r) : (tensor<?x2xf32, "T">, tensor<2xf32>) -> tensor<?x2xf32, "T"> loc("keep")
    func.return %y : tensor<?x2xf32, "T">
  }
}
