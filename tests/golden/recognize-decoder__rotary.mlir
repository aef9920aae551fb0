module {
  func.func @main(%x: tensor<?x2x?x8xf32, "B,S">, %cos: tensor<1x1x?x8xf32, "S">, %sin: tensor<1x1x?x8xf32, "S">) -> (tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>) attributes {moec.inputs = ["x", "cos", "sin"], moec.outputs = ["y", "swapped"]} {
    %z = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %h = "moec.constant"() {value = dense<[4]> : tensor<1xi64>} : () -> tensor<1xi64>
    %e = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %ax = "moec.constant"() {value = dense<[3]> : tensor<1xi64>} : () -> tensor<1xi64>
    %st = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %x1 = "moec.slice"(%x, %z, %h, %ax, %st) : (tensor<?x2x?x8xf32, "B,S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x2x?x4xf32, "B,S">
    %x2 = "moec.slice"(%x, %h, %e, %ax, %st) : (tensor<?x2x?x8xf32, "B,S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x2x?x4xf32, "B,S">
    %n2 = "moec.neg"(%x2) : (tensor<?x2x?x4xf32, "B,S">) -> tensor<?x2x?x4xf32, "B,S">
    %rot = "moec.concat"(%n2, %x1) {axis = -1 : i64} : (tensor<?x2x?x4xf32, "B,S">, tensor<?x2x?x4xf32, "B,S">) -> tensor<?x2x?x8xf32, "B,S">
    %a = "moec.mul"(%x, %cos) : (tensor<?x2x?x8xf32, "B,S">, tensor<1x1x?x8xf32, "S">) -> tensor<?x2x?x8xf32>
    %b = "moec.mul"(%rot, %sin) : (tensor<?x2x?x8xf32, "B,S">, tensor<1x1x?x8xf32, "S">) -> tensor<?x2x?x8xf32>
    %y = "moec.add"(%a, %b) : (tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>) -> tensor<?x2x?x8xf32> loc("rotate_half")
    %n1 = "moec.neg"(%x1) : (tensor<?x2x?x4xf32, "B,S">) -> tensor<?x2x?x4xf32, "B,S">
    %rot2 = "moec.concat"(%n1, %x2) {axis = -1 : i64} : (tensor<?x2x?x4xf32, "B,S">, tensor<?x2x?x4xf32, "B,S">) -> tensor<?x2x?x8xf32, "B,S">
    %b2 = "moec.mul"(%rot2, %sin) : (tensor<?x2x?x8xf32, "B,S">, tensor<1x1x?x8xf32, "S">) -> tensor<?x2x?x8xf32>
    %w = "moec.add"(%a, %b2) : (tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>) -> tensor<?x2x?x8xf32> loc("halves_swapped_near_miss")
    func.return %y, %w : tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>
  }
}
// ----- expected
module {
  func.func @main(%x: tensor<?x2x?x8xf32, "B,S">, %cos: tensor<1x1x?x8xf32, "S">, %sin: tensor<1x1x?x8xf32, "S">) -> (tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>) attributes {moec.inputs = ["x", "cos", "sin"], moec.outputs = ["y", "swapped"]} {
    %z = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %h = "moec.constant"() {value = dense<[4]> : tensor<1xi64>} : () -> tensor<1xi64>
    %e = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %ax = "moec.constant"() {value = dense<[3]> : tensor<1xi64>} : () -> tensor<1xi64>
    %st = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %x1 = "moec.slice"(%x, %z, %h, %ax, %st) : (tensor<?x2x?x8xf32, "B,S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x2x?x4xf32, "B,S">
    %x2 = "moec.slice"(%x, %h, %e, %ax, %st) : (tensor<?x2x?x8xf32, "B,S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x2x?x4xf32, "B,S">
    %n2 = "moec.neg"(%x2) : (tensor<?x2x?x4xf32, "B,S">) -> tensor<?x2x?x4xf32, "B,S">
    %rot = "moec.concat"(%n2, %x1) {axis = -1 : i64} : (tensor<?x2x?x4xf32, "B,S">, tensor<?x2x?x4xf32, "B,S">) -> tensor<?x2x?x8xf32, "B,S">
    %a = "moec.mul"(%x, %cos) : (tensor<?x2x?x8xf32, "B,S">, tensor<1x1x?x8xf32, "S">) -> tensor<?x2x?x8xf32>
    %b = "moec.mul"(%rot, %sin) : (tensor<?x2x?x8xf32, "B,S">, tensor<1x1x?x8xf32, "S">) -> tensor<?x2x?x8xf32>
    %0 = "moec.rotary"(%x, %cos, %sin) : (tensor<?x2x?x8xf32, "B,S">, tensor<1x1x?x8xf32, "S">, tensor<1x1x?x8xf32, "S">) -> tensor<?x2x?x8xf32> loc("rotate_half")
    %y = "moec.add"(%a, %b) : (tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>) -> tensor<?x2x?x8xf32> loc("rotate_half")
    %n1 = "moec.neg"(%x1) : (tensor<?x2x?x4xf32, "B,S">) -> tensor<?x2x?x4xf32, "B,S">
    %rot2 = "moec.concat"(%n1, %x2) {axis = -1 : i64} : (tensor<?x2x?x4xf32, "B,S">, tensor<?x2x?x4xf32, "B,S">) -> tensor<?x2x?x8xf32, "B,S">
    %b2 = "moec.mul"(%rot2, %sin) : (tensor<?x2x?x8xf32, "B,S">, tensor<1x1x?x8xf32, "S">) -> tensor<?x2x?x8xf32>
    %w = "moec.add"(%a, %b2) : (tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>) -> tensor<?x2x?x8xf32> loc("halves_swapped_near_miss")
    func.return %0, %w : tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>
  }
}
