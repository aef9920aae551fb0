module {
  func.func @main(%x: tensor<?x4xf32, "T">) -> (tensor<?x4xf32>, tensor<?x4xf32>, tensor<?x4xf32>, tensor<?x4xf32>) attributes {moec.inputs = ["x"], moec.outputs = ["a", "b", "wrong_axis", "eps_outside"]} {
    %w = "moec.constant"() {value = dense<[1.0, 0.5, -2.0, 3.0]> : tensor<4xf32>} : () -> tensor<4xf32>
    %two = "moec.constant"() {value = dense<2.0> : tensor<f32>} : () -> tensor<f32>
    %eps = "moec.constant"() {value = dense<1.0e-06> : tensor<f32>} : () -> tensor<f32>
    %one = "moec.constant"() {value = dense<1.0> : tensor<f32>} : () -> tensor<f32>
    %sq = "moec.pow"(%x, %two) : (tensor<?x4xf32, "T">, tensor<f32>) -> tensor<?x4xf32>
    %ms = "moec.reduce_mean"(%sq) {axes = array<i64: -1>, keepdims = true} : (tensor<?x4xf32>) -> tensor<?x1xf32>
    %me = "moec.add"(%ms, %eps) : (tensor<?x1xf32>, tensor<f32>) -> tensor<?x1xf32>
    %rt = "moec.sqrt"(%me) : (tensor<?x1xf32>) -> tensor<?x1xf32>
    %inv = "moec.reciprocal"(%rt) : (tensor<?x1xf32>) -> tensor<?x1xf32>
    %nx = "moec.mul"(%x, %inv) : (tensor<?x4xf32, "T">, tensor<?x1xf32>) -> tensor<?x4xf32>
    %a = "moec.mul"(%w, %nx) : (tensor<4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32> loc("pow_reciprocal")
    %sq2 = "moec.mul"(%x, %x) : (tensor<?x4xf32, "T">, tensor<?x4xf32, "T">) -> tensor<?x4xf32>
    %ms2 = "moec.reduce_mean"(%sq2) {axes = array<i64: 1>, keepdims = true} : (tensor<?x4xf32>) -> tensor<?x1xf32>
    %me2 = "moec.add"(%eps, %ms2) : (tensor<f32>, tensor<?x1xf32>) -> tensor<?x1xf32>
    %rt2 = "moec.sqrt"(%me2) : (tensor<?x1xf32>) -> tensor<?x1xf32>
    %inv2 = "moec.div"(%one, %rt2) : (tensor<f32>, tensor<?x1xf32>) -> tensor<?x1xf32>
    %nx2 = "moec.mul"(%inv2, %x) : (tensor<?x1xf32>, tensor<?x4xf32, "T">) -> tensor<?x4xf32>
    %b = "moec.mul"(%nx2, %w) : (tensor<?x4xf32>, tensor<4xf32>) -> tensor<?x4xf32> loc("square_div")
    %ms3 = "moec.reduce_mean"(%sq) {axes = array<i64: 0>, keepdims = true} : (tensor<?x4xf32>) -> tensor<1x4xf32>
    %me3 = "moec.add"(%ms3, %eps) : (tensor<1x4xf32>, tensor<f32>) -> tensor<1x4xf32>
    %rt3 = "moec.sqrt"(%me3) : (tensor<1x4xf32>) -> tensor<1x4xf32>
    %inv3 = "moec.reciprocal"(%rt3) : (tensor<1x4xf32>) -> tensor<1x4xf32>
    %nx3 = "moec.mul"(%x, %inv3) : (tensor<?x4xf32, "T">, tensor<1x4xf32>) -> tensor<?x4xf32>
    %c = "moec.mul"(%w, %nx3) : (tensor<4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32> loc("mean_over_rows_near_miss")
    %rt4 = "moec.sqrt"(%ms) : (tensor<?x1xf32>) -> tensor<?x1xf32>
    %re4 = "moec.add"(%rt4, %eps) : (tensor<?x1xf32>, tensor<f32>) -> tensor<?x1xf32>
    %inv4 = "moec.reciprocal"(%re4) : (tensor<?x1xf32>) -> tensor<?x1xf32>
    %nx4 = "moec.mul"(%x, %inv4) : (tensor<?x4xf32, "T">, tensor<?x1xf32>) -> tensor<?x4xf32>
    %d = "moec.mul"(%w, %nx4) : (tensor<4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32> loc("eps_outside_sqrt_near_miss")
    func.return %a, %b, %c, %d : tensor<?x4xf32>, tensor<?x4xf32>, tensor<?x4xf32>, tensor<?x4xf32>
  }
}
// ----- expected
module {
  func.func @main(%x: tensor<?x4xf32, "T">) -> (tensor<?x4xf32>, tensor<?x4xf32>, tensor<?x4xf32>, tensor<?x4xf32>) attributes {moec.inputs = ["x"], moec.outputs = ["a", "b", "wrong_axis", "eps_outside"]} {
    %w = "moec.constant"() {value = dense<[1.0, 0.5, -2.0, 3.0]> : tensor<4xf32>} : () -> tensor<4xf32>
    %two = "moec.constant"() {value = dense<2.0> : tensor<f32>} : () -> tensor<f32>
    %eps = "moec.constant"() {value = dense<1.0e-06> : tensor<f32>} : () -> tensor<f32>
    %one = "moec.constant"() {value = dense<1.0> : tensor<f32>} : () -> tensor<f32>
    %sq = "moec.pow"(%x, %two) : (tensor<?x4xf32, "T">, tensor<f32>) -> tensor<?x4xf32>
    %ms = "moec.reduce_mean"(%sq) {axes = array<i64: -1>, keepdims = true, noop_with_empty_axes = false} : (tensor<?x4xf32>) -> tensor<?x1xf32>
    %me = "moec.add"(%ms, %eps) : (tensor<?x1xf32>, tensor<f32>) -> tensor<?x1xf32>
    %rt = "moec.sqrt"(%me) : (tensor<?x1xf32>) -> tensor<?x1xf32>
    %inv = "moec.reciprocal"(%rt) : (tensor<?x1xf32>) -> tensor<?x1xf32>
    %nx = "moec.mul"(%x, %inv) : (tensor<?x4xf32, "T">, tensor<?x1xf32>) -> tensor<?x4xf32>
    %0 = "moec.rms_norm"(%x, %w) {axis = -1 : i64, epsilon = 9.999999974752427e-07 : f64} : (tensor<?x4xf32, "T">, tensor<4xf32>) -> tensor<?x4xf32> loc("pow_reciprocal")
    %sq2 = "moec.mul"(%x, %x) : (tensor<?x4xf32, "T">, tensor<?x4xf32, "T">) -> tensor<?x4xf32>
    %ms2 = "moec.reduce_mean"(%sq2) {axes = array<i64: 1>, keepdims = true, noop_with_empty_axes = false} : (tensor<?x4xf32>) -> tensor<?x1xf32>
    %me2 = "moec.add"(%eps, %ms2) : (tensor<f32>, tensor<?x1xf32>) -> tensor<?x1xf32>
    %rt2 = "moec.sqrt"(%me2) : (tensor<?x1xf32>) -> tensor<?x1xf32>
    %inv2 = "moec.div"(%one, %rt2) : (tensor<f32>, tensor<?x1xf32>) -> tensor<?x1xf32>
    %nx2 = "moec.mul"(%inv2, %x) : (tensor<?x1xf32>, tensor<?x4xf32, "T">) -> tensor<?x4xf32>
    %1 = "moec.rms_norm"(%x, %w) {axis = -1 : i64, epsilon = 9.999999974752427e-07 : f64} : (tensor<?x4xf32, "T">, tensor<4xf32>) -> tensor<?x4xf32> loc("square_div")
    %ms3 = "moec.reduce_mean"(%sq) {axes = array<i64: 0>, keepdims = true, noop_with_empty_axes = false} : (tensor<?x4xf32>) -> tensor<1x4xf32>
    %me3 = "moec.add"(%ms3, %eps) : (tensor<1x4xf32>, tensor<f32>) -> tensor<1x4xf32>
    %rt3 = "moec.sqrt"(%me3) : (tensor<1x4xf32>) -> tensor<1x4xf32>
    %inv3 = "moec.reciprocal"(%rt3) : (tensor<1x4xf32>) -> tensor<1x4xf32>
    %nx3 = "moec.mul"(%x, %inv3) : (tensor<?x4xf32, "T">, tensor<1x4xf32>) -> tensor<?x4xf32>
    %c = "moec.mul"(%w, %nx3) : (tensor<4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32> loc("mean_over_rows_near_miss")
    %rt4 = "moec.sqrt"(%ms) : (tensor<?x1xf32>) -> tensor<?x1xf32>
    %re4 = "moec.add"(%rt4, %eps) : (tensor<?x1xf32>, tensor<f32>) -> tensor<?x1xf32>
    %inv4 = "moec.reciprocal"(%re4) : (tensor<?x1xf32>) -> tensor<?x1xf32>
    %nx4 = "moec.mul"(%x, %inv4) : (tensor<?x4xf32, "T">, tensor<?x1xf32>) -> tensor<?x4xf32>
    %d = "moec.mul"(%w, %nx4) : (tensor<4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32> loc("eps_outside_sqrt_near_miss")
    func.return %0, %1, %c, %d : tensor<?x4xf32>, tensor<?x4xf32>, tensor<?x4xf32>, tensor<?x4xf32>
  }
}
