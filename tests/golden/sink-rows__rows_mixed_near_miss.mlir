// Near misses: a selection on the hidden axis (the norm reduces over it), a scan over the tokens (cumsum),
// a value that is also a function output, a value with a second user that needs every row.  A reduction over
// the tokens broadcast back (the mean of the rows, keepdims) stays whole while the add above it moves.  A
// selection that keeps every row of a static dim (row 0 of the size-1 batch axis) is left where it is.
module {
  func.func @main(%x: tensor<1x?x8xf32, "S">) -> (tensor<1x?x4xf32>, tensor<1x?x8xf32>, tensor<1x?x8xf32, "S">, tensor<1x?x8xf32>, tensor<1x?x8xf32, "S">, tensor<1x?x8xf32>, tensor<1x?x8xf32>, tensor<?x8xf32, "S">) attributes {moec.inputs = ["x"], moec.outputs = ["hidden", "scan", "whole", "last", "other", "other_last", "pooled", "batch0"]} {
    %nw = "moec.constant"() {value = dense<1.5> : tensor<8xf32>} : () -> tensor<8xf32>
    %w = "moec.constant"() {value = dense<0.5> : tensor<8x8xf32>} : () -> tensor<8x8xf32>
    %c0 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %c4 = "moec.constant"() {value = dense<[4]> : tensor<1xi64>} : () -> tensor<1xi64>
    %c2 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %m1 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %end = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %one = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %ax = "moec.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64>
    %n = "moec.rms_norm"(%x, %nw) {axis = -1 : i64, epsilon = 1.0e-05 : f64} : (tensor<1x?x8xf32, "S">, tensor<8xf32>) -> tensor<1x?x8xf32, "S">
    %hidden = "moec.slice"(%n, %c0, %c4, %c2, %one) : (tensor<1x?x8xf32, "S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x?x4xf32>
    %e = "moec.exp"(%x) : (tensor<1x?x8xf32, "S">) -> tensor<1x?x8xf32, "S">
    %cs = "moec.cumsum"(%e, %ax) : (tensor<1x?x8xf32, "S">, tensor<i64>) -> tensor<1x?x8xf32, "S">
    %scan = "moec.slice"(%cs, %m1, %end, %one, %one) : (tensor<1x?x8xf32, "S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x?x8xf32>
    %mm = "moec.matmul"(%x, %w) : (tensor<1x?x8xf32, "S">, tensor<8x8xf32>) -> tensor<1x?x8xf32, "S">
    %last = "moec.slice"(%mm, %m1, %end, %one, %one) : (tensor<1x?x8xf32, "S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x?x8xf32>
    %t = "moec.tanh"(%x) : (tensor<1x?x8xf32, "S">) -> tensor<1x?x8xf32, "S">
    %u = "moec.mul"(%t, %t) : (tensor<1x?x8xf32, "S">, tensor<1x?x8xf32, "S">) -> tensor<1x?x8xf32, "S">
    %other = "moec.sigmoid"(%u) : (tensor<1x?x8xf32, "S">) -> tensor<1x?x8xf32, "S">
    %ul = "moec.slice"(%u, %m1, %end, %one, %one) : (tensor<1x?x8xf32, "S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x?x8xf32>
    %mean = "moec.reduce_mean"(%x) {axes = array<i64: 1>, keepdims = true} : (tensor<1x?x8xf32, "S">) -> tensor<1x1x8xf32>
    %p = "moec.sub"(%x, %mean) : (tensor<1x?x8xf32, "S">, tensor<1x1x8xf32>) -> tensor<1x?x8xf32, "S">
    %pooled = "moec.slice"(%p, %m1, %end, %one, %one) : (tensor<1x?x8xf32, "S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x?x8xf32>
    %zero = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %e2 = "moec.sin"(%x) : (tensor<1x?x8xf32, "S">) -> tensor<1x?x8xf32, "S">
    %b0 = "moec.gather"(%e2, %zero) {axis = 0 : i64} : (tensor<1x?x8xf32, "S">, tensor<i64>) -> tensor<?x8xf32, "S">
    func.return %hidden, %scan, %mm, %last, %other, %ul, %pooled, %b0 : tensor<1x?x4xf32>, tensor<1x?x8xf32>, tensor<1x?x8xf32, "S">, tensor<1x?x8xf32>, tensor<1x?x8xf32, "S">, tensor<1x?x8xf32>, tensor<1x?x8xf32>, tensor<?x8xf32, "S">
  }
}
// ----- expected
module {
  func.func @main(%x: tensor<1x?x8xf32, "S">) -> (tensor<1x?x4xf32>, tensor<1x?x8xf32>, tensor<1x?x8xf32, "S">, tensor<1x?x8xf32>, tensor<1x?x8xf32, "S">, tensor<1x?x8xf32>, tensor<1x?x8xf32>, tensor<?x8xf32, "S">) attributes {moec.inputs = ["x"], moec.outputs = ["hidden", "scan", "whole", "last", "other", "other_last", "pooled", "batch0"]} {
    %nw = "moec.constant"() {value = dense<1.5> : tensor<8xf32>} : () -> tensor<8xf32>
    %w = "moec.constant"() {value = dense<0.5> : tensor<8x8xf32>} : () -> tensor<8x8xf32>
    %c0 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %c4 = "moec.constant"() {value = dense<[4]> : tensor<1xi64>} : () -> tensor<1xi64>
    %c2 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %m1 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %end = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %one = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %ax = "moec.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64>
    %n = "moec.rms_norm"(%x, %nw) : (tensor<1x?x8xf32, "S">, tensor<8xf32>) -> tensor<1x?x8xf32, "S">
    %hidden = "moec.slice"(%n, %c0, %c4, %c2, %one) : (tensor<1x?x8xf32, "S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x?x4xf32>
    %e = "moec.exp"(%x) : (tensor<1x?x8xf32, "S">) -> tensor<1x?x8xf32, "S">
    %cs = "moec.cumsum"(%e, %ax) : (tensor<1x?x8xf32, "S">, tensor<i64>) -> tensor<1x?x8xf32, "S">
    %scan = "moec.slice"(%cs, %m1, %end, %one, %one) : (tensor<1x?x8xf32, "S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x?x8xf32>
    %mm = "moec.matmul"(%x, %w) : (tensor<1x?x8xf32, "S">, tensor<8x8xf32>) -> tensor<1x?x8xf32, "S">
    %last = "moec.slice"(%mm, %m1, %end, %one, %one) : (tensor<1x?x8xf32, "S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x?x8xf32>
    %t = "moec.tanh"(%x) : (tensor<1x?x8xf32, "S">) -> tensor<1x?x8xf32, "S">
    %u = "moec.mul"(%t, %t) : (tensor<1x?x8xf32, "S">, tensor<1x?x8xf32, "S">) -> tensor<1x?x8xf32, "S">
    %other = "moec.sigmoid"(%u) : (tensor<1x?x8xf32, "S">) -> tensor<1x?x8xf32, "S">
    %ul = "moec.slice"(%u, %m1, %end, %one, %one) : (tensor<1x?x8xf32, "S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x?x8xf32>
    %mean = "moec.reduce_mean"(%x) {axes = array<i64: 1>} : (tensor<1x?x8xf32, "S">) -> tensor<1x1x8xf32>
    %0 = "moec.slice"(%x, %m1, %end, %one, %one) : (tensor<1x?x8xf32, "S">, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x?x8xf32>
    %1 = "moec.sub"(%0, %mean) : (tensor<1x?x8xf32>, tensor<1x1x8xf32>) -> tensor<1x?x8xf32>
    %zero = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %e2 = "moec.sin"(%x) : (tensor<1x?x8xf32, "S">) -> tensor<1x?x8xf32, "S">
    %b0 = "moec.gather"(%e2, %zero) : (tensor<1x?x8xf32, "S">, tensor<i64>) -> tensor<?x8xf32, "S">
    func.return %hidden, %scan, %mm, %last, %other, %ul, %1, %b0 : tensor<1x?x4xf32>, tensor<1x?x8xf32>, tensor<1x?x8xf32, "S">, tensor<1x?x8xf32>, tensor<1x?x8xf32, "S">, tensor<1x?x8xf32>, tensor<1x?x8xf32>, tensor<?x8xf32, "S">
  }
}
