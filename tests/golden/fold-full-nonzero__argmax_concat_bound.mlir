module {
  func.func @main(%s1: tensor<?x3xf32, "T">, %s2: tensor<?x3xf32, "T">, %idx: tensor<?x2xi64, "T">) -> (tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>) attributes {moec.inputs = ["s1", "s2", "idx"], moec.outputs = ["a0", "a1", "a2", "u0", "u1", "u2"]} {
    %a = "moec.argmax"(%s1) {axis = -1 : i64, keepdims = true} : (tensor<?x3xf32, "T">) -> tensor<?x1xi64, "T">
    %b = "moec.argmax"(%s2) {axis = -1 : i64, keepdims = true} : (tensor<?x3xf32, "T">) -> tensor<?x1xi64, "T">
    %ab = "moec.concat"(%a, %b) {axis = -1 : i64} : (tensor<?x1xi64, "T">, tensor<?x1xi64, "T">) -> tensor<?x2xi64, "T">
    %depth = "moec.constant"() {value = dense<4> : tensor<i64>} : () -> tensor<i64>
    %vals = "moec.constant"() {value = dense<[0, 1]> : tensor<2xi64>} : () -> tensor<2xi64>
    %zero = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %ones = "moec.constant"() {value = dense<[1, 1, 1]> : tensor<3xi64>} : () -> tensor<3xi64>
    %oh = "moec.one_hot"(%ab, %depth, %vals) {axis = 0 : i64} : (tensor<?x2xi64, "T">, tensor<i64>, tensor<2xi64>) -> tensor<4x?x2xi64, "T">
    %cnt = "moec.reduce_sum"(%oh) {axes = array<i64: 1, 2>, keepdims = false} : (tensor<4x?x2xi64, "T">) -> tensor<4xi64>
    %hit = "moec.greater"(%cnt, %zero) : (tensor<4xi64>, tensor<i64>) -> tensor<4xi1>
    %nz = "moec.nonzero"(%hit) : (tensor<4xi1>) -> tensor<1x?xi64> loc("argmax classes: 3 of 4 possible")
    %t = "moec.transpose"(%nz) {perm = array<i64: 1, 0>} : (tensor<1x?xi64>) -> tensor<?x1xi64>
    %s:3 = "moec.split"(%t, %ones) {axis = 0 : i64} : (tensor<?x1xi64>, tensor<3xi64>) -> (tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>)
    %ohu = "moec.one_hot"(%idx, %depth, %vals) {axis = 0 : i64} : (tensor<?x2xi64, "T">, tensor<i64>, tensor<2xi64>) -> tensor<4x?x2xi64, "T">
    %cntu = "moec.reduce_sum"(%ohu) {axes = array<i64: 1, 2>, keepdims = false} : (tensor<4x?x2xi64, "T">) -> tensor<4xi64>
    %hitu = "moec.greater"(%cntu, %zero) : (tensor<4xi64>, tensor<i64>) -> tensor<4xi1>
    %nzu = "moec.nonzero"(%hitu) : (tensor<4xi1>) -> tensor<1x?xi64> loc("indices of unknown range: left alone")
    %tu = "moec.transpose"(%nzu) {perm = array<i64: 1, 0>} : (tensor<1x?xi64>) -> tensor<?x1xi64>
    %u:3 = "moec.split"(%tu, %ones) {axis = 0 : i64} : (tensor<?x1xi64>, tensor<3xi64>) -> (tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>)
    func.return %s#0, %s#1, %s#2, %u#0, %u#1, %u#2 : tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>
  }
}
// ----- expected
module {
  func.func @main(%s1: tensor<?x3xf32, "T">, %s2: tensor<?x3xf32, "T">, %idx: tensor<?x2xi64, "T">) -> (tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>) attributes {moec.inputs = ["s1", "s2", "idx"], moec.outputs = ["a0", "a1", "a2", "u0", "u1", "u2"]} {
    %a = "moec.argmax"(%s1) {axis = -1 : i64} : (tensor<?x3xf32, "T">) -> tensor<?x1xi64, "T">
    %b = "moec.argmax"(%s2) {axis = -1 : i64} : (tensor<?x3xf32, "T">) -> tensor<?x1xi64, "T">
    %ab = "moec.concat"(%a, %b) {axis = -1 : i64} : (tensor<?x1xi64, "T">, tensor<?x1xi64, "T">) -> tensor<?x2xi64, "T">
    %depth = "moec.constant"() {value = dense<4> : tensor<i64>} : () -> tensor<i64>
    %vals = "moec.constant"() {value = dense<[0, 1]> : tensor<2xi64>} : () -> tensor<2xi64>
    %zero = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %ones = "moec.constant"() {value = dense<1> : tensor<3xi64>} : () -> tensor<3xi64>
    %oh = "moec.one_hot"(%ab, %depth, %vals) {axis = 0 : i64} : (tensor<?x2xi64, "T">, tensor<i64>, tensor<2xi64>) -> tensor<4x?x2xi64, "T">
    %cnt = "moec.reduce_sum"(%oh) {axes = array<i64: 1, 2>, keepdims = false} : (tensor<4x?x2xi64, "T">) -> tensor<4xi64>
    %hit = "moec.greater"(%cnt, %zero) : (tensor<4xi64>, tensor<i64>) -> tensor<4xi1>
    %nz = "moec.nonzero"(%hit) : (tensor<4xi1>) -> tensor<1x?xi64> loc("argmax classes: 3 of 4 possible")
    %t = "moec.transpose"(%nz) {perm = array<i64: 1, 0>} : (tensor<1x?xi64>) -> tensor<?x1xi64>
    %0 = "moec.constant"() {value = dense<[[0], [1], [2]]> : tensor<3x1xi64>} : () -> tensor<3x1xi64>
    %s:3 = "moec.split"(%0, %ones) : (tensor<3x1xi64>, tensor<3xi64>) -> (tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>)
    %ohu = "moec.one_hot"(%idx, %depth, %vals) {axis = 0 : i64} : (tensor<?x2xi64, "T">, tensor<i64>, tensor<2xi64>) -> tensor<4x?x2xi64, "T">
    %cntu = "moec.reduce_sum"(%ohu) {axes = array<i64: 1, 2>, keepdims = false} : (tensor<4x?x2xi64, "T">) -> tensor<4xi64>
    %hitu = "moec.greater"(%cntu, %zero) : (tensor<4xi64>, tensor<i64>) -> tensor<4xi1>
    %nzu = "moec.nonzero"(%hitu) : (tensor<4xi1>) -> tensor<1x?xi64> loc("indices of unknown range: left alone")
    %tu = "moec.transpose"(%nzu) {perm = array<i64: 1, 0>} : (tensor<1x?xi64>) -> tensor<?x1xi64>
    %u:3 = "moec.split"(%tu, %ones) : (tensor<?x1xi64>, tensor<3xi64>) -> (tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>)
    func.return %s#0, %s#1, %s#2, %u#0, %u#1, %u#2 : tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>
  }
}
