module {
  func.func @main(%hit: tensor<3xi1>, %mask: tensor<3x?xf32, "T">) -> (tensor<1x?xf32, "T">, tensor<1x?xf32, "T">, tensor<1x?xf32, "T">, tensor<1x2xi64>, tensor<?x1xi64>) attributes {moec.inputs = ["hit", "mask"], moec.outputs = ["m0", "m1", "m2", "pair", "not_all"]} {
    %nz = "moec.nonzero"(%hit) : (tensor<3xi1>) -> tensor<1x?xi64> loc("expert_hit")
    %t = "moec.transpose"(%nz) {perm = array<i64: 1, 0>} : (tensor<1x?xi64>) -> tensor<?x1xi64>
    %ones = "moec.constant"() {value = dense<[1, 1, 1]> : tensor<3xi64>} : () -> tensor<3xi64>
    %s:3 = "moec.split"(%t, %ones) {axis = 0 : i64} : (tensor<?x1xi64>, tensor<3xi64>) -> (tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>) loc("unbind")
    %i0 = "moec.squeeze"(%s#0) {axes = array<i64: 0>} : (tensor<1x1xi64>) -> tensor<1xi64>
    %i1 = "moec.squeeze"(%s#1) {axes = array<i64: 0>} : (tensor<1x1xi64>) -> tensor<1xi64>
    %i2 = "moec.squeeze"(%s#2) {axes = array<i64: 0>} : (tensor<1x1xi64>) -> tensor<1xi64>
    %m0 = "moec.gather"(%mask, %i0) {axis = 0 : i64} : (tensor<3x?xf32, "T">, tensor<1xi64>) -> tensor<1x?xf32, "T">
    %m1 = "moec.gather"(%mask, %i1) {axis = 0 : i64} : (tensor<3x?xf32, "T">, tensor<1xi64>) -> tensor<1x?xf32, "T">
    %m2 = "moec.gather"(%mask, %i2) {axis = 0 : i64} : (tensor<3x?xf32, "T">, tensor<1xi64>) -> tensor<1x?xf32, "T">
    %sizes = "moec.constant"() {value = dense<[2, 1]> : tensor<2xi64>} : () -> tensor<2xi64>
    %p:2 = "moec.split"(%nz, %sizes) {axis = 1 : i64} : (tensor<1x?xi64>, tensor<2xi64>) -> (tensor<1x2xi64>, tensor<1x1xi64>) loc("pieces_along_the_count_axis")
    %two = "moec.constant"() {value = dense<[1, 1]> : tensor<2xi64>} : () -> tensor<2xi64>
    %q:2 = "moec.split"(%t, %two) {axis = 0 : i64} : (tensor<?x1xi64>, tensor<2xi64>) -> (tensor<1x1xi64>, tensor<1x1xi64>) loc("two_of_three: left alone")
    %r = "moec.concat"(%q#0, %q#1, %t) {axis = 0 : i64} : (tensor<1x1xi64>, tensor<1x1xi64>, tensor<?x1xi64>) -> tensor<?x1xi64>
    func.return %m0, %m1, %m2, %p#0, %r : tensor<1x?xf32, "T">, tensor<1x?xf32, "T">, tensor<1x?xf32, "T">, tensor<1x2xi64>, tensor<?x1xi64>
  }
}
// ----- expected
module {
  func.func @main(%hit: tensor<3xi1>, %mask: tensor<3x?xf32, "T">) -> (tensor<1x?xf32, "T">, tensor<1x?xf32, "T">, tensor<1x?xf32, "T">, tensor<1x2xi64>, tensor<?x1xi64>) attributes {moec.inputs = ["hit", "mask"], moec.outputs = ["m0", "m1", "m2", "pair", "not_all"]} {
    %nz = "moec.nonzero"(%hit) : (tensor<3xi1>) -> tensor<1x?xi64> loc("expert_hit")
    %t = "moec.transpose"(%nz) {perm = array<i64: 1, 0>} : (tensor<1x?xi64>) -> tensor<?x1xi64>
    %ones = "moec.constant"() {value = dense<1> : tensor<3xi64>} : () -> tensor<3xi64>
    %0 = "moec.constant"() {value = dense<[[0], [1], [2]]> : tensor<3x1xi64>} : () -> tensor<3x1xi64> loc("unbind")
    %s:3 = "moec.split"(%0, %ones) : (tensor<3x1xi64>, tensor<3xi64>) -> (tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>) loc("unbind")
    %i0 = "moec.squeeze"(%s#0) {axes = array<i64: 0>} : (tensor<1x1xi64>) -> tensor<1xi64>
    %i1 = "moec.squeeze"(%s#1) {axes = array<i64: 0>} : (tensor<1x1xi64>) -> tensor<1xi64>
    %i2 = "moec.squeeze"(%s#2) {axes = array<i64: 0>} : (tensor<1x1xi64>) -> tensor<1xi64>
    %m0 = "moec.gather"(%mask, %i0) : (tensor<3x?xf32, "T">, tensor<1xi64>) -> tensor<1x?xf32, "T">
    %m1 = "moec.gather"(%mask, %i1) : (tensor<3x?xf32, "T">, tensor<1xi64>) -> tensor<1x?xf32, "T">
    %m2 = "moec.gather"(%mask, %i2) : (tensor<3x?xf32, "T">, tensor<1xi64>) -> tensor<1x?xf32, "T">
    %sizes = "moec.constant"() {value = dense<[2, 1]> : tensor<2xi64>} : () -> tensor<2xi64>
    %1 = "moec.constant"() {value = dense<[[0, 1, 2]]> : tensor<1x3xi64>} : () -> tensor<1x3xi64> loc("pieces_along_the_count_axis")
    %p:2 = "moec.split"(%1, %sizes) {axis = 1 : i64} : (tensor<1x3xi64>, tensor<2xi64>) -> (tensor<1x2xi64>, tensor<1x1xi64>) loc("pieces_along_the_count_axis")
    %two = "moec.constant"() {value = dense<1> : tensor<2xi64>} : () -> tensor<2xi64>
    %q:2 = "moec.split"(%t, %two) : (tensor<?x1xi64>, tensor<2xi64>) -> (tensor<1x1xi64>, tensor<1x1xi64>) loc("two_of_three: left alone")
    %r = "moec.concat"(%q#0, %q#1, %t) {axis = 0 : i64} : (tensor<1x1xi64>, tensor<1x1xi64>, tensor<?x1xi64>) -> tensor<?x1xi64>
    func.return %m0, %m1, %m2, %p#0, %r : tensor<1x?xf32, "T">, tensor<1x?xf32, "T">, tensor<1x?xf32, "T">, tensor<1x2xi64>, tensor<?x1xi64>
  }
}
