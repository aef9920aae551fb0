module {
  func.func @main(%q: tensor<1x4x?x8xf32, "S">, %k: tensor<1x2x?x8xf32, "S">, %v: tensor<1x2x?x8xf32, "S">) -> (tensor<1x4x?x8xf32>) attributes {moec.inputs = ["q", "k", "v"], moec.outputs = ["y"]} {
    %n = "moec.shape"(%q) {start = 2 : i64, end = 3 : i64} : (tensor<1x4x?x8xf32, "S">) -> tensor<1xi64>
    %nn = "moec.concat"(%n, %n) {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64>
    %ones = "moec.constant_of_shape"(%nn) {value = dense<[1.0]> : tensor<1xf32>} : (tensor<2xi64>) -> tensor<?x?xf32>
    %one = "moec.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64>
    %fut = "moec.trilu"(%ones, %one) {upper = true} : (tensor<?x?xf32>, tensor<i64>) -> tensor<?x?xf32>
    %zero = "moec.constant"() {value = dense<0.0> : tensor<f32>} : () -> tensor<f32>
    %ninf = "moec.constant"() {value = dense<0xFF800000> : tensor<f32>} : () -> tensor<f32>
    %seen = "moec.equal"(%fut, %zero) : (tensor<?x?xf32>, tensor<f32>) -> tensor<?x?xi1>
    %mask = "moec.select"(%seen, %zero, %ninf) : (tensor<?x?xi1>, tensor<f32>, tensor<f32>) -> tensor<?x?xf32>
    %c = "moec.constant"() {value = dense<0.59460354> : tensor<f32>} : () -> tensor<f32>
    %qs = "moec.mul"(%q, %c) : (tensor<1x4x?x8xf32, "S">, tensor<f32>) -> tensor<1x4x?x8xf32>
    %ku = "moec.unsqueeze"(%k) {axes = array<i64: 2>} : (tensor<1x2x?x8xf32, "S">) -> tensor<1x2x1x?x8xf32>
    %g = "moec.constant"() {value = dense<[1, 1, 2, 1, 1]> : tensor<5xi64>} : () -> tensor<5xi64>
    %ke = "moec.expand"(%ku, %g) : (tensor<1x2x1x?x8xf32>, tensor<5xi64>) -> tensor<1x2x2x?x8xf32>
    %r4 = "moec.constant"() {value = dense<[0, 4, -1, 8]> : tensor<4xi64>} : () -> tensor<4xi64>
    %kr = "moec.reshape"(%ke, %r4) {allowzero = false} : (tensor<1x2x2x?x8xf32>, tensor<4xi64>) -> tensor<1x4x?x8xf32>
    %kt = "moec.transpose"(%kr) {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x4x?x8xf32>) -> tensor<1x4x8x?xf32>
    %ks = "moec.mul"(%kt, %c) : (tensor<1x4x8x?xf32>, tensor<f32>) -> tensor<1x4x8x?xf32>
    %s = "moec.matmul"(%qs, %ks) : (tensor<1x4x?x8xf32>, tensor<1x4x8x?xf32>) -> tensor<1x4x?x?xf32> loc("scores")
    %z = "moec.add"(%s, %mask) : (tensor<1x4x?x?xf32>, tensor<?x?xf32>) -> tensor<1x4x?x?xf32>
    %p = "moec.softmax"(%z) {axis = -1 : i64} : (tensor<1x4x?x?xf32>) -> tensor<1x4x?x?xf32>
    %vu = "moec.unsqueeze"(%v) {axes = array<i64: 2>} : (tensor<1x2x?x8xf32, "S">) -> tensor<1x2x1x?x8xf32>
    %ve = "moec.expand"(%vu, %g) : (tensor<1x2x1x?x8xf32>, tensor<5xi64>) -> tensor<1x2x2x?x8xf32>
    %vr = "moec.reshape"(%ve, %r4) {allowzero = false} : (tensor<1x2x2x?x8xf32>, tensor<4xi64>) -> tensor<1x4x?x8xf32>
    %y = "moec.matmul"(%p, %vr) : (tensor<1x4x?x?xf32>, tensor<1x4x?x8xf32>) -> tensor<1x4x?x8xf32> loc("pv")
    func.return %y : tensor<1x4x?x8xf32>
  }
}
// ----- expected
module {
  func.func @main(%q: tensor<1x4x?x8xf32, "S">, %k: tensor<1x2x?x8xf32, "S">, %v: tensor<1x2x?x8xf32, "S">) -> (tensor<1x4x?x8xf32>) attributes {moec.inputs = ["q", "k", "v"], moec.outputs = ["y"]} {
    %n = "moec.shape"(%q) {end = 3 : i64, start = 2 : i64} : (tensor<1x4x?x8xf32, "S">) -> tensor<1xi64>
    %nn = "moec.concat"(%n, %n) {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64>
    %ones = "moec.constant_of_shape"(%nn) {value = dense<[1.0]> : tensor<1xf32>} : (tensor<2xi64>) -> tensor<?x?xf32>
    %one = "moec.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64>
    %fut = "moec.trilu"(%ones, %one) {upper = true} : (tensor<?x?xf32>, tensor<i64>) -> tensor<?x?xf32>
    %zero = "moec.constant"() {value = dense<0.0> : tensor<f32>} : () -> tensor<f32>
    %ninf = "moec.constant"() {value = dense<0xFF800000> : tensor<f32>} : () -> tensor<f32>
    %seen = "moec.equal"(%fut, %zero) : (tensor<?x?xf32>, tensor<f32>) -> tensor<?x?xi1>
    %mask = "moec.select"(%seen, %zero, %ninf) : (tensor<?x?xi1>, tensor<f32>, tensor<f32>) -> tensor<?x?xf32>
    %c = "moec.constant"() {value = dense<0.59460354> : tensor<f32>} : () -> tensor<f32>
    %qs = "moec.mul"(%q, %c) : (tensor<1x4x?x8xf32, "S">, tensor<f32>) -> tensor<1x4x?x8xf32>
    %ku = "moec.unsqueeze"(%k) {axes = array<i64: 2>} : (tensor<1x2x?x8xf32, "S">) -> tensor<1x2x1x?x8xf32>
    %g = "moec.constant"() {value = dense<[1, 1, 2, 1, 1]> : tensor<5xi64>} : () -> tensor<5xi64>
    %ke = "moec.expand"(%ku, %g) : (tensor<1x2x1x?x8xf32>, tensor<5xi64>) -> tensor<1x2x2x?x8xf32>
    %r4 = "moec.constant"() {value = dense<[0, 4, -1, 8]> : tensor<4xi64>} : () -> tensor<4xi64>
    %kr = "moec.reshape"(%ke, %r4) {allowzero = false} : (tensor<1x2x2x?x8xf32>, tensor<4xi64>) -> tensor<1x4x?x8xf32>
    %kt = "moec.transpose"(%kr) {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x4x?x8xf32>) -> tensor<1x4x8x?xf32>
    %ks = "moec.mul"(%kt, %c) : (tensor<1x4x8x?xf32>, tensor<f32>) -> tensor<1x4x8x?xf32>
    %s = "moec.matmul"(%qs, %ks) : (tensor<1x4x?x8xf32>, tensor<1x4x8x?xf32>) -> tensor<1x4x?x?xf32> loc("scores")
    %z = "moec.add"(%s, %mask) : (tensor<1x4x?x?xf32>, tensor<?x?xf32>) -> tensor<1x4x?x?xf32>
    %p = "moec.softmax"(%z) {axis = -1 : i64} : (tensor<1x4x?x?xf32>) -> tensor<1x4x?x?xf32>
    %vu = "moec.unsqueeze"(%v) {axes = array<i64: 2>} : (tensor<1x2x?x8xf32, "S">) -> tensor<1x2x1x?x8xf32>
    %ve = "moec.expand"(%vu, %g) : (tensor<1x2x1x?x8xf32>, tensor<5xi64>) -> tensor<1x2x2x?x8xf32>
    %vr = "moec.reshape"(%ve, %r4) {allowzero = false} : (tensor<1x2x2x?x8xf32>, tensor<4xi64>) -> tensor<1x4x?x8xf32>
    %0 = "moec.attention"(%q, %k, %v, %mask) {causal = true, scale = 0.353553368012399 : f64} : (tensor<1x4x?x8xf32, "S">, tensor<1x2x?x8xf32, "S">, tensor<1x2x?x8xf32, "S">, tensor<?x?xf32>) -> tensor<1x4x?x8xf32> loc("pv")
    %y = "moec.matmul"(%p, %vr) : (tensor<1x4x?x?xf32>, tensor<1x4x?x8xf32>) -> tensor<1x4x?x8xf32> loc("pv")
    func.return %0 : tensor<1x4x?x8xf32>
  }
}
