// options: pairs=present.k:pk,present.v:pv capacity=8
module {
  func.func @main(%q: tensor<1x2x?x4xf32, "T">, %k: tensor<1x1x?x4xf32, "T">, %v: tensor<1x1x?x4xf32, "T">, %pk: tensor<1x1x?x4xf32, "P">, %pv: tensor<1x1x?x4xf32, "P">) -> (tensor<1x2x?x4xf32, "T">, tensor<1x1x?x4xf32>, tensor<1x1x?x4xf32>, tensor<1xi64>) attributes {moec.inputs = ["q", "k", "v", "pk", "pv"], moec.outputs = ["y", "present.k", "present.v", "past_len"]} {
    %n = "moec.shape"(%pk) {start = 2 : i64, end = 3 : i64} : (tensor<1x1x?x4xf32, "P">) -> tensor<1xi64>
    %ck = "moec.concat"(%pk, %k) {axis = 2 : i64} : (tensor<1x1x?x4xf32, "P">, tensor<1x1x?x4xf32, "T">) -> tensor<1x1x?x4xf32>
    %cv = "moec.concat"(%pv, %v) {axis = -2 : i64} : (tensor<1x1x?x4xf32, "P">, tensor<1x1x?x4xf32, "T">) -> tensor<1x1x?x4xf32>
    %y = "moec.attention"(%q, %ck, %cv) {scale = 0.5 : f64} : (tensor<1x2x?x4xf32, "T">, tensor<1x1x?x4xf32>, tensor<1x1x?x4xf32>) -> tensor<1x2x?x4xf32, "T">
    func.return %y, %ck, %cv, %n : tensor<1x2x?x4xf32, "T">, tensor<1x1x?x4xf32>, tensor<1x1x?x4xf32>, tensor<1xi64>
  }
}
// ----- expected
module {
  func.func @main(%q: tensor<1x2x?x4xf32, "T">, %k: tensor<1x1x?x4xf32, "T">, %v: tensor<1x1x?x4xf32, "T">, %pk: tensor<1x1x8x4xf32>, %pv: tensor<1x1x8x4xf32>, %pos: tensor<1xi64>) -> (tensor<1x2x?x4xf32, "T">, tensor<1xi64>) attributes {moec.inputs = ["q", "k", "v", "pk", "pv", "pos"], moec.outputs = ["y", "past_len"]} {
    %0 = "moec.concat"(%pos) {axis = 0 : i64} : (tensor<1xi64>) -> tensor<1xi64>
    %1 = "moec.kv_append"(%pk, %k, %pos) : (tensor<1x1x8x4xf32>, tensor<1x1x?x4xf32, "T">, tensor<1xi64>) -> tensor<1x1x8x4xf32>
    %2 = "moec.kv_append"(%pv, %v, %pos) : (tensor<1x1x8x4xf32>, tensor<1x1x?x4xf32, "T">, tensor<1xi64>) -> tensor<1x1x8x4xf32>
    %3 = "moec.kv_attention"(%q, %1, %2, %pos) {scale = 0.5 : f64} : (tensor<1x2x?x4xf32, "T">, tensor<1x1x8x4xf32>, tensor<1x1x8x4xf32>, tensor<1xi64>) -> tensor<1x2x?x4xf32, "T">
    func.return %3, %0 : tensor<1x2x?x4xf32, "T">, tensor<1xi64>
  }
}
