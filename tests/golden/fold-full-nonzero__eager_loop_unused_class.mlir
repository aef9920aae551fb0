module {
  func.func @main(%logits: tensor<?x3xf32, "T">, %hit4: tensor<4xi1>) -> (tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<i64>, tensor<i64>, tensor<i64>) attributes {moec.inputs = ["logits", "hit4"], moec.outputs = ["e0", "e1", "e2", "last", "second", "plain_last"]} {
    %k = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %top:2 = "moec.topk"(%logits, %k) {axis = -1 : i64} : (tensor<?x3xf32, "T">, tensor<1xi64>) -> (tensor<?x2xf32, "T">, tensor<?x2xi64, "T">)
    %depth = "moec.constant"() {value = dense<4> : tensor<i64>} : () -> tensor<i64>
    %vals = "moec.constant"() {value = dense<[0, 1]> : tensor<2xi64>} : () -> tensor<2xi64>
    %oh = "moec.one_hot"(%top#1, %depth, %vals) {axis = -1 : i64} : (tensor<?x2xi64, "T">, tensor<i64>, tensor<2xi64>) -> tensor<?x2x4xi64, "T">
    %perm = "moec.transpose"(%oh) {perm = array<i64: 2, 1, 0>} : (tensor<?x2x4xi64, "T">) -> tensor<4x2x?xi64, "T">
    %cnt = "moec.reduce_sum"(%perm) {axes = array<i64: -1, -2>, keepdims = false} : (tensor<4x2x?xi64, "T">) -> tensor<4xi64>
    %zero = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %hit = "moec.greater"(%cnt, %zero) : (tensor<4xi64>, tensor<i64>) -> tensor<4xi1>
    %nz = "moec.nonzero"(%hit) : (tensor<4xi1>) -> tensor<1x?xi64> loc("expert_hit: class 3 (the E+1-th) never set")
    %t = "moec.transpose"(%nz) {perm = array<i64: 1, 0>} : (tensor<1x?xi64>) -> tensor<?x1xi64>
    %ones = "moec.constant"() {value = dense<[1, 1, 1]> : tensor<3xi64>} : () -> tensor<3xi64>
    %s:3 = "moec.split"(%t, %ones) {axis = 0 : i64} : (tensor<?x1xi64>, tensor<3xi64>) -> (tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>) loc("unbind of the 3 possible")
    %two = "moec.constant"() {value = dense<2> : tensor<i64>} : () -> tensor<i64>
    %g = "moec.gather"(%t, %two) {axis = 0 : i64} : (tensor<?x1xi64>, tensor<i64>) -> tensor<1xi64> loc("read at position 2: all 3 found")
    %z0 = "moec.constant"() {value = dense<0> : tensor<1xi64>} : () -> tensor<1xi64>
    %gl = "moec.squeeze"(%g, %z0) : (tensor<1xi64>, tensor<1xi64>) -> tensor<i64>
    %one = "moec.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64>
    %h = "moec.gather"(%t, %one) {axis = 0 : i64} : (tensor<?x1xi64>, tensor<i64>) -> tensor<1xi64> loc("read at position 1: left alone")
    %hl = "moec.squeeze"(%h, %z0) : (tensor<1xi64>, tensor<1xi64>) -> tensor<i64>
    %nz4 = "moec.nonzero"(%hit4) : (tensor<4xi1>) -> tensor<1x?xi64>
    %m1 = "moec.constant"() {value = dense<-4> : tensor<i64>} : () -> tensor<i64>
    %p = "moec.gather"(%nz4, %m1) {axis = 1 : i64} : (tensor<1x?xi64>, tensor<i64>) -> tensor<1xi64> loc("read at position -4 of 4 inputs: all found")
    %pl = "moec.squeeze"(%p, %z0) : (tensor<1xi64>, tensor<1xi64>) -> tensor<i64>
    func.return %s#0, %s#1, %s#2, %gl, %hl, %pl : tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<i64>, tensor<i64>, tensor<i64>
  }
}
// ----- expected
module {
  func.func @main(%logits: tensor<?x3xf32, "T">, %hit4: tensor<4xi1>) -> (tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<i64>, tensor<i64>, tensor<i64>) attributes {moec.inputs = ["logits", "hit4"], moec.outputs = ["e0", "e1", "e2", "last", "second", "plain_last"]} {
    %k = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %top:2 = "moec.topk"(%logits, %k) : (tensor<?x3xf32, "T">, tensor<1xi64>) -> (tensor<?x2xf32, "T">, tensor<?x2xi64, "T">)
    %depth = "moec.constant"() {value = dense<4> : tensor<i64>} : () -> tensor<i64>
    %vals = "moec.constant"() {value = dense<[0, 1]> : tensor<2xi64>} : () -> tensor<2xi64>
    %oh = "moec.one_hot"(%top#1, %depth, %vals) : (tensor<?x2xi64, "T">, tensor<i64>, tensor<2xi64>) -> tensor<?x2x4xi64, "T">
    %perm = "moec.transpose"(%oh) {perm = array<i64: 2, 1, 0>} : (tensor<?x2x4xi64, "T">) -> tensor<4x2x?xi64, "T">
    %cnt = "moec.reduce_sum"(%perm) {axes = array<i64: -1, -2>, keepdims = false} : (tensor<4x2x?xi64, "T">) -> tensor<4xi64>
    %zero = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %hit = "moec.greater"(%cnt, %zero) : (tensor<4xi64>, tensor<i64>) -> tensor<4xi1>
    %nz = "moec.nonzero"(%hit) : (tensor<4xi1>) -> tensor<1x?xi64> loc("expert_hit: class 3 (the E+1-th) never set")
    %t = "moec.transpose"(%nz) {perm = array<i64: 1, 0>} : (tensor<1x?xi64>) -> tensor<?x1xi64>
    %ones = "moec.constant"() {value = dense<1> : tensor<3xi64>} : () -> tensor<3xi64>
    %0 = "moec.constant"() {value = dense<[[0], [1], [2]]> : tensor<3x1xi64>} : () -> tensor<3x1xi64> loc("unbind of the 3 possible")
    %s:3 = "moec.split"(%0, %ones) : (tensor<3x1xi64>, tensor<3xi64>) -> (tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>) loc("unbind of the 3 possible")
    %two = "moec.constant"() {value = dense<2> : tensor<i64>} : () -> tensor<i64>
    %1 = "moec.constant"() {value = dense<[[0], [1], [2]]> : tensor<3x1xi64>} : () -> tensor<3x1xi64> loc("read at position 2: all 3 found")
    %g = "moec.gather"(%1, %two) : (tensor<3x1xi64>, tensor<i64>) -> tensor<1xi64> loc("read at position 2: all 3 found")
    %z0 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %gl = "moec.squeeze"(%g, %z0) : (tensor<1xi64>, tensor<1xi64>) -> tensor<i64>
    %one = "moec.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64>
    %h = "moec.gather"(%t, %one) : (tensor<?x1xi64>, tensor<i64>) -> tensor<1xi64> loc("read at position 1: left alone")
    %hl = "moec.squeeze"(%h, %z0) : (tensor<1xi64>, tensor<1xi64>) -> tensor<i64>
    %nz4 = "moec.nonzero"(%hit4) : (tensor<4xi1>) -> tensor<1x?xi64>
    %m1 = "moec.constant"() {value = dense<-4> : tensor<i64>} : () -> tensor<i64>
    %2 = "moec.constant"() {value = dense<[[0, 1, 2, 3]]> : tensor<1x4xi64>} : () -> tensor<1x4xi64> loc("read at position -4 of 4 inputs: all found")
    %p = "moec.gather"(%2, %m1) {axis = 1 : i64} : (tensor<1x4xi64>, tensor<i64>) -> tensor<1xi64> loc("read at position -4 of 4 inputs: all found")
    %pl = "moec.squeeze"(%p, %z0) : (tensor<1xi64>, tensor<1xi64>) -> tensor<i64>
    func.return %s#0, %s#1, %s#2, %gl, %hl, %pl : tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<i64>, tensor<i64>, tensor<i64>
  }
}
