module {
  func.func @main(%scores: tensor<?x6xf32, "T">) -> (tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>) attributes {moec.inputs = ["scores"], moec.outputs = ["a0", "a1", "a2", "a3", "u0", "u1", "u2", "u3"]} {
    %k = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %top:2 = "moec.topk"(%scores, %k) {axis = -1 : i64} : (tensor<?x6xf32, "T">, tensor<1xi64>) -> (tensor<?x2xf32, "T">, tensor<?x2xi64, "T">)
    %four = "moec.constant"() {value = dense<4> : tensor<i64>} : () -> tensor<i64>
    %two = "moec.constant"() {value = dense<2> : tensor<i64>} : () -> tensor<i64>
    %extra = "moec.greater_equal"(%top#1, %four) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi1, "T">
    %sub = "moec.sub"(%top#1, %four) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi64, "T">
    %mul = "moec.mul"(%sub, %four) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi64, "T">
    %dummy = "moec.div"(%mul, %two) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi64, "T">
    %idx = "moec.select"(%extra, %dummy, %top#1) : (tensor<?x2xi1, "T">, tensor<?x2xi64, "T">, tensor<?x2xi64, "T">) -> tensor<?x2xi64, "T"> loc("ids 4, 5 (no FFN) sent to 0, 2: never 4")
    %depth = "moec.constant"() {value = dense<5> : tensor<i64>} : () -> tensor<i64>
    %vals = "moec.constant"() {value = dense<[0, 1]> : tensor<2xi64>} : () -> tensor<2xi64>
    %zero = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %ones = "moec.constant"() {value = dense<[1, 1, 1, 1]> : tensor<4xi64>} : () -> tensor<4xi64>
    %oh = "moec.one_hot"(%idx, %depth, %vals) {axis = -1 : i64} : (tensor<?x2xi64, "T">, tensor<i64>, tensor<2xi64>) -> tensor<?x2x5xi64, "T">
    %perm = "moec.transpose"(%oh) {perm = array<i64: 2, 1, 0>} : (tensor<?x2x5xi64, "T">) -> tensor<5x2x?xi64, "T">
    %cnt = "moec.reduce_sum"(%perm) {axes = array<i64: -1, -2>, keepdims = false} : (tensor<5x2x?xi64, "T">) -> tensor<5xi64>
    %hit = "moec.greater"(%cnt, %zero) : (tensor<5xi64>, tensor<i64>) -> tensor<5xi1>
    %nz = "moec.nonzero"(%hit) : (tensor<5xi1>) -> tensor<1x?xi64> loc("4 of 5 classes possible")
    %t = "moec.transpose"(%nz) {perm = array<i64: 1, 0>} : (tensor<1x?xi64>) -> tensor<?x1xi64>
    %s:4 = "moec.split"(%t, %ones) {axis = 0 : i64} : (tensor<?x1xi64>, tensor<4xi64>) -> (tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>)
    %ohu = "moec.one_hot"(%top#1, %depth, %vals) {axis = -1 : i64} : (tensor<?x2xi64, "T">, tensor<i64>, tensor<2xi64>) -> tensor<?x2x5xi64, "T">
    %cntu = "moec.reduce_sum"(%ohu) {axes = array<i64: 0, 1>, keepdims = false} : (tensor<?x2x5xi64, "T">) -> tensor<5xi64>
    %hitu = "moec.greater"(%cntu, %zero) : (tensor<5xi64>, tensor<i64>) -> tensor<5xi1>
    %nzu = "moec.nonzero"(%hitu) : (tensor<5xi1>) -> tensor<1x?xi64> loc("ids 0..5 set every class: left alone")
    %tu = "moec.transpose"(%nzu) {perm = array<i64: 1, 0>} : (tensor<1x?xi64>) -> tensor<?x1xi64>
    %u:4 = "moec.split"(%tu, %ones) {axis = 0 : i64} : (tensor<?x1xi64>, tensor<4xi64>) -> (tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>)
    func.return %s#0, %s#1, %s#2, %s#3, %u#0, %u#1, %u#2, %u#3 : tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>
  }
}
// ----- expected
module {
  func.func @main(%scores: tensor<?x6xf32, "T">) -> (tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>) attributes {moec.inputs = ["scores"], moec.outputs = ["a0", "a1", "a2", "a3", "u0", "u1", "u2", "u3"]} {
    %k = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %top:2 = "moec.topk"(%scores, %k) : (tensor<?x6xf32, "T">, tensor<1xi64>) -> (tensor<?x2xf32, "T">, tensor<?x2xi64, "T">)
    %four = "moec.constant"() {value = dense<4> : tensor<i64>} : () -> tensor<i64>
    %two = "moec.constant"() {value = dense<2> : tensor<i64>} : () -> tensor<i64>
    %extra = "moec.greater_equal"(%top#1, %four) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi1, "T">
    %sub = "moec.sub"(%top#1, %four) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi64, "T">
    %mul = "moec.mul"(%sub, %four) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi64, "T">
    %dummy = "moec.div"(%mul, %two) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi64, "T">
    %idx = "moec.select"(%extra, %dummy, %top#1) : (tensor<?x2xi1, "T">, tensor<?x2xi64, "T">, tensor<?x2xi64, "T">) -> tensor<?x2xi64, "T"> loc("ids 4, 5 (no FFN) sent to 0, 2: never 4")
    %depth = "moec.constant"() {value = dense<5> : tensor<i64>} : () -> tensor<i64>
    %vals = "moec.constant"() {value = dense<[0, 1]> : tensor<2xi64>} : () -> tensor<2xi64>
    %zero = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %ones = "moec.constant"() {value = dense<1> : tensor<4xi64>} : () -> tensor<4xi64>
    %oh = "moec.one_hot"(%idx, %depth, %vals) : (tensor<?x2xi64, "T">, tensor<i64>, tensor<2xi64>) -> tensor<?x2x5xi64, "T">
    %perm = "moec.transpose"(%oh) {perm = array<i64: 2, 1, 0>} : (tensor<?x2x5xi64, "T">) -> tensor<5x2x?xi64, "T">
    %cnt = "moec.reduce_sum"(%perm) {axes = array<i64: -1, -2>, keepdims = false} : (tensor<5x2x?xi64, "T">) -> tensor<5xi64>
    %hit = "moec.greater"(%cnt, %zero) : (tensor<5xi64>, tensor<i64>) -> tensor<5xi1>
    %nz = "moec.nonzero"(%hit) : (tensor<5xi1>) -> tensor<1x?xi64> loc("4 of 5 classes possible")
    %t = "moec.transpose"(%nz) {perm = array<i64: 1, 0>} : (tensor<1x?xi64>) -> tensor<?x1xi64>
    %0 = "moec.constant"() {value = dense<[[0], [1], [2], [3]]> : tensor<4x1xi64>} : () -> tensor<4x1xi64>
    %s:4 = "moec.split"(%0, %ones) : (tensor<4x1xi64>, tensor<4xi64>) -> (tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>)
    %ohu = "moec.one_hot"(%top#1, %depth, %vals) : (tensor<?x2xi64, "T">, tensor<i64>, tensor<2xi64>) -> tensor<?x2x5xi64, "T">
    %cntu = "moec.reduce_sum"(%ohu) {axes = array<i64: 0, 1>, keepdims = false} : (tensor<?x2x5xi64, "T">) -> tensor<5xi64>
    %hitu = "moec.greater"(%cntu, %zero) : (tensor<5xi64>, tensor<i64>) -> tensor<5xi1>
    %nzu = "moec.nonzero"(%hitu) : (tensor<5xi1>) -> tensor<1x?xi64> loc("ids 0..5 set every class: left alone")
    %tu = "moec.transpose"(%nzu) {perm = array<i64: 1, 0>} : (tensor<1x?xi64>) -> tensor<?x1xi64>
    %u:4 = "moec.split"(%tu, %ones) : (tensor<?x1xi64>, tensor<4xi64>) -> (tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>)
    func.return %s#0, %s#1, %s#2, %s#3, %u#0, %u#1, %u#2, %u#3 : tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>, tensor<1x1xi64>
  }
}
