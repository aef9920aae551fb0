// options: pairs=present.k:pk capacity=8
module {
  func.func @main(%q: tensor<1x1x?x4xf32, "T">, %k: tensor<1x1x?x4xf32, "T">, %pk: tensor<1x1x?x4xf32, "P">) -> (tensor<1x1x?x?xf32>, tensor<1x1x?x4xf32>) attributes {moec.inputs = ["q", "k", "pk"], moec.outputs = ["s", "present.k"]} {
    %ck = "moec.concat"(%pk, %k) {axis = 2 : i64} : (tensor<1x1x?x4xf32, "P">, tensor<1x1x?x4xf32, "T">) -> tensor<1x1x?x4xf32>
    %kt = "moec.transpose"(%ck) {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x1x?x4xf32>) -> tensor<1x1x4x?xf32>
    %s = "moec.matmul"(%q, %kt) : (tensor<1x1x?x4xf32, "T">, tensor<1x1x4x?xf32>) -> tensor<1x1x?x?xf32>
    func.return %s, %ck : tensor<1x1x?x?xf32>, tensor<1x1x?x4xf32>
  }
}
// ----- expected
module {
  func.func @main(%q: tensor<1x1x?x4xf32, "T">, %k: tensor<1x1x?x4xf32, "T">, %pk: tensor<1x1x?x4xf32, "P">) -> (tensor<1x1x?x?xf32>, tensor<1x1x?x4xf32>) attributes {moec.inputs = ["q", "k", "pk"], moec.outputs = ["s", "present.k"]} {
    %ck = "moec.concat"(%pk, %k) {axis = 2 : i64} : (tensor<1x1x?x4xf32, "P">, tensor<1x1x?x4xf32, "T">) -> tensor<1x1x?x4xf32>
    %kt = "moec.transpose"(%ck) {perm = array<i64: 0, 1, 3, 2>} : (tensor<1x1x?x4xf32>) -> tensor<1x1x4x?xf32>
    %s = "moec.matmul"(%q, %kt) : (tensor<1x1x?x4xf32, "T">, tensor<1x1x4x?xf32>) -> tensor<1x1x?x?xf32>
    func.return %s, %ck : tensor<1x1x?x?xf32>, tensor<1x1x?x4xf32>
  }
}
