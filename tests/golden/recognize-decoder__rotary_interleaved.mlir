module {
  func.func @main(%x: tensor<?x2x?x8xf32, "B,S">, %cos: tensor<1x1x?x8xf32, "S">, %sin: tensor<1x1x?x8xf32, "S">) -> (tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>) attributes {moec.inputs = ["x", "cos", "sin"], moec.outputs = ["y", "sign_swapped", "not_pairs"]} {
    %z = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %one = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %e = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %ax = "moec.constant"() {value = dense<[3]> : tensor<1xi64>} : () -> tensor<1xi64>
    %two = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %shp = "moec.constant"() {value = dense<[0, 0, 0, 8]> : tensor<4xi64>} : () -> tensor<4xi64>
    %x1 = "moec.slice"(%x, %z, %e, %ax, %two) : (tensor<?x2x?x8xf32, "B,S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x2x?x4xf32, "B,S">
    %x2 = "moec.slice"(%x, %one, %e, %ax, %two) : (tensor<?x2x?x8xf32, "B,S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x2x?x4xf32, "B,S">
    %n2 = "moec.neg"(%x2) : (tensor<?x2x?x4xf32, "B,S">) -> tensor<?x2x?x4xf32, "B,S">
    %u2 = "moec.unsqueeze"(%n2) {axes = array<i64: -1>} : (tensor<?x2x?x4xf32, "B,S">) -> tensor<?x2x?x4x1xf32, "B,S">
    %u1 = "moec.unsqueeze"(%x1) {axes = array<i64: -1>} : (tensor<?x2x?x4xf32, "B,S">) -> tensor<?x2x?x4x1xf32, "B,S">
    %st = "moec.concat"(%u2, %u1) {axis = -1 : i64} : (tensor<?x2x?x4x1xf32, "B,S">, tensor<?x2x?x4x1xf32, "B,S">) -> tensor<?x2x?x4x2xf32, "B,S">
    %rot = "moec.reshape"(%st, %shp) : (tensor<?x2x?x4x2xf32, "B,S">, tensor<4xi64>) -> tensor<?x2x?x8xf32, "B,S">
    %a = "moec.mul"(%cos, %x) : (tensor<1x1x?x8xf32, "S">, tensor<?x2x?x8xf32, "B,S">) -> tensor<?x2x?x8xf32>
    %b = "moec.mul"(%sin, %rot) : (tensor<1x1x?x8xf32, "S">, tensor<?x2x?x8xf32, "B,S">) -> tensor<?x2x?x8xf32>
    %y = "moec.add"(%b, %a) : (tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>) -> tensor<?x2x?x8xf32> loc("rotate_every_two")
    %n1 = "moec.neg"(%x1) : (tensor<?x2x?x4xf32, "B,S">) -> tensor<?x2x?x4xf32, "B,S">
    %v1 = "moec.unsqueeze"(%n1) {axes = array<i64: -1>} : (tensor<?x2x?x4xf32, "B,S">) -> tensor<?x2x?x4x1xf32, "B,S">
    %v2 = "moec.unsqueeze"(%x2) {axes = array<i64: -1>} : (tensor<?x2x?x4xf32, "B,S">) -> tensor<?x2x?x4x1xf32, "B,S">
    %st2 = "moec.concat"(%v2, %v1) {axis = -1 : i64} : (tensor<?x2x?x4x1xf32, "B,S">, tensor<?x2x?x4x1xf32, "B,S">) -> tensor<?x2x?x4x2xf32, "B,S">
    %rot2 = "moec.reshape"(%st2, %shp) : (tensor<?x2x?x4x2xf32, "B,S">, tensor<4xi64>) -> tensor<?x2x?x8xf32, "B,S">
    %b2 = "moec.mul"(%rot2, %sin) : (tensor<?x2x?x8xf32, "B,S">, tensor<1x1x?x8xf32, "S">) -> tensor<?x2x?x8xf32>
    %w = "moec.add"(%a, %b2) : (tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>) -> tensor<?x2x?x8xf32> loc("sign_swapped_near_miss")
    %st3 = "moec.concat"(%u1, %u2) {axis = 3 : i64} : (tensor<?x2x?x4x1xf32, "B,S">, tensor<?x2x?x4x1xf32, "B,S">) -> tensor<?x2x?x8x1xf32, "B,S">
    %rot3 = "moec.reshape"(%st3, %shp) : (tensor<?x2x?x8x1xf32, "B,S">, tensor<4xi64>) -> tensor<?x2x?x8xf32, "B,S">
    %b3 = "moec.mul"(%rot3, %sin) : (tensor<?x2x?x8xf32, "B,S">, tensor<1x1x?x8xf32, "S">) -> tensor<?x2x?x8xf32>
    %q = "moec.add"(%a, %b3) : (tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>) -> tensor<?x2x?x8xf32> loc("halves_of_pairs_near_miss")
    func.return %y, %w, %q : tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>, tensor<?x2x?x8xf32>
  }
}
// ----- expected
// CHECK: "moec.rotary"(%x, %cos, %sin) {interleaved = true}
// CHECK: loc("rotate_every_two")
// CHECK-NOT: "moec.rotary"
