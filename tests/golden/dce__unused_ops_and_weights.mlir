module {
  func.func @main(%x: tensor<?x2xf32, "T">) -> (tensor<?x2xf32, "T">) attributes {moec.inputs = ["x"], moec.outputs = ["y"]} {
    %c = "moec.constant"() {value = dense<[1.0, 2.0]> : tensor<2xf32>} : () -> tensor<2xf32>
    %dead = "moec.add"(%x, %c) : (tensor<?x2xf32, "T">, tensor<2xf32>) -> tensor<?x2xf32, "T"> loc("unused")
    %dead2 = "moec.relu"(%dead) : (tensor<?x2xf32, "T">) -> tensor<?x2xf32, "T">
    %y = "moec.relu"(%x) : (tensor<?x2xf32, "T">) -> tensor<?x2xf32, "T"> loc("used")
    func.return %y : tensor<?x2xf32, "T">
  }
}
// ----- expected
module {
  func.func @main(%x: tensor<?x2xf32, "T">) -> (tensor<?x2xf32, "T">) attributes {moec.inputs = ["x"], moec.outputs = ["y"]} {
    %y = "moec.relu"(%x) : (tensor<?x2xf32, "T">) -> tensor<?x2xf32, "T"> loc("used")
    func.return %y : tensor<?x2xf32, "T">
  }
}
