module {
  func.func @main(%x: tensor<?x4xf32, "N">, %sizes: tensor<2xi64>, %other: tensor<2xi64>) -> (tensor<?x4xf32>, tensor<?x4xf32>, tensor<?x3xf32>) attributes {moec.inputs = ["x", "sizes", "other"], moec.outputs = ["y", "y_other", "kept"]} {
    %w0 = "moec.constant"() {value = dense<0.5> : tensor<4x6xf32>} : () -> tensor<4x6xf32>
    %w1 = "moec.constant"() {value = dense<-0.25> : tensor<4x6xf32>} : () -> tensor<4x6xf32>
    %v0 = "moec.constant"() {value = dense<1.0> : tensor<3x4xf32>} : () -> tensor<3x4xf32>
    %v1 = "moec.constant"() {value = dense<2.0> : tensor<3x4xf32>} : () -> tensor<3x4xf32>
    %halves = "moec.constant"() {value = dense<3> : tensor<2xi64>} : () -> tensor<2xi64>
    %p:2 = "moec.split"(%x, %sizes) {axis = 0 : i64} : (tensor<?x4xf32, "N">, tensor<2xi64>) -> (tensor<?x4xf32>, tensor<?x4xf32>) loc("expert_inputs")
    %l0 = "moec.matmul"(%p#0, %w0) : (tensor<?x4xf32>, tensor<4x6xf32>) -> tensor<?x6xf32> loc("input_linear_0")
    %l1 = "moec.matmul"(%p#1, %w1) : (tensor<?x4xf32>, tensor<4x6xf32>) -> tensor<?x6xf32> loc("input_linear_1")
    %cat = "moec.concat"(%l0, %l1) {axis = 0 : i64} : (tensor<?x6xf32>, tensor<?x6xf32>) -> tensor<?x6xf32> loc("cat")
    %gu:2 = "moec.split"(%cat, %halves) {axis = 1 : i64} : (tensor<?x6xf32>, tensor<2xi64>) -> (tensor<?x3xf32>, tensor<?x3xf32>) loc("chunk")
    %sg = "moec.sigmoid"(%gu#0) : (tensor<?x3xf32>) -> tensor<?x3xf32>
    %silu = "moec.mul"(%gu#0, %sg) : (tensor<?x3xf32>, tensor<?x3xf32>) -> tensor<?x3xf32>
    %h = "moec.mul"(%silu, %gu#1) : (tensor<?x3xf32>, tensor<?x3xf32>) -> tensor<?x3xf32> loc("act")
    %q:2 = "moec.split"(%h, %sizes) {axis = 0 : i64} : (tensor<?x3xf32>, tensor<2xi64>) -> (tensor<?x3xf32>, tensor<?x3xf32>) loc("by_expert_again")
    %d0 = "moec.matmul"(%q#0, %v0) : (tensor<?x3xf32>, tensor<3x4xf32>) -> tensor<?x4xf32>
    %d1 = "moec.matmul"(%q#1, %v1) : (tensor<?x3xf32>, tensor<3x4xf32>) -> tensor<?x4xf32>
    %y = "moec.concat"(%d0, %d1) {axis = 0 : i64} : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32>
    %r:2 = "moec.split"(%h, %other) {axis = 0 : i64} : (tensor<?x3xf32>, tensor<2xi64>) -> (tensor<?x3xf32>, tensor<?x3xf32>) loc("other sizes: left alone")
    %e0 = "moec.matmul"(%r#0, %v0) : (tensor<?x3xf32>, tensor<3x4xf32>) -> tensor<?x4xf32>
    %e1 = "moec.matmul"(%r#1, %v1) : (tensor<?x3xf32>, tensor<3x4xf32>) -> tensor<?x4xf32>
    %y2 = "moec.concat"(%e0, %e1) {axis = 0 : i64} : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32>
    func.return %y, %y2, %h : tensor<?x4xf32>, tensor<?x4xf32>, tensor<?x3xf32>
  }
}
// ----- expected
module {
  func.func @main(%x: tensor<?x4xf32, "N">, %sizes: tensor<2xi64>, %other: tensor<2xi64>) -> (tensor<?x4xf32>, tensor<?x4xf32>, tensor<?x3xf32>) attributes {moec.inputs = ["x", "sizes", "other"], moec.outputs = ["y", "y_other", "kept"]} {
    %w0 = "moec.constant"() {value = dense<0.5> : tensor<4x6xf32>} : () -> tensor<4x6xf32>
    %w1 = "moec.constant"() {value = dense<-0.25> : tensor<4x6xf32>} : () -> tensor<4x6xf32>
    %v0 = "moec.constant"() {value = dense<1.0> : tensor<3x4xf32>} : () -> tensor<3x4xf32>
    %v1 = "moec.constant"() {value = dense<2.0> : tensor<3x4xf32>} : () -> tensor<3x4xf32>
    %halves = "moec.constant"() {value = dense<3> : tensor<2xi64>} : () -> tensor<2xi64>
    %p:2 = "moec.split"(%x, %sizes) : (tensor<?x4xf32, "N">, tensor<2xi64>) -> (tensor<?x4xf32>, tensor<?x4xf32>) loc("expert_inputs")
    %l0 = "moec.matmul"(%p#0, %w0) : (tensor<?x4xf32>, tensor<4x6xf32>) -> tensor<?x6xf32> loc("input_linear_0")
    %l1 = "moec.matmul"(%p#1, %w1) : (tensor<?x4xf32>, tensor<4x6xf32>) -> tensor<?x6xf32> loc("input_linear_1")
    %cat = "moec.concat"(%l0, %l1) {axis = 0 : i64} : (tensor<?x6xf32>, tensor<?x6xf32>) -> tensor<?x6xf32> loc("cat")
    %gu:2 = "moec.split"(%cat, %halves) {axis = 1 : i64} : (tensor<?x6xf32>, tensor<2xi64>) -> (tensor<?x3xf32>, tensor<?x3xf32>) loc("chunk")
    %sg = "moec.sigmoid"(%gu#0) : (tensor<?x3xf32>) -> tensor<?x3xf32>
    %silu = "moec.mul"(%gu#0, %sg) : (tensor<?x3xf32>, tensor<?x3xf32>) -> tensor<?x3xf32>
    %h = "moec.mul"(%silu, %gu#1) : (tensor<?x3xf32>, tensor<?x3xf32>) -> tensor<?x3xf32> loc("act")
    %0:2 = "moec.split"(%l0, %halves) {axis = 1 : i64} : (tensor<?x6xf32>, tensor<2xi64>) -> (tensor<?x3xf32>, tensor<?x3xf32>) loc("chunk")
    %1 = "moec.sigmoid"(%0#0) : (tensor<?x3xf32>) -> tensor<?x3xf32>
    %2 = "moec.mul"(%0#0, %1) : (tensor<?x3xf32>, tensor<?x3xf32>) -> tensor<?x3xf32>
    %3 = "moec.mul"(%2, %0#1) : (tensor<?x3xf32>, tensor<?x3xf32>) -> tensor<?x3xf32> loc("act")
    %4:2 = "moec.split"(%l1, %halves) {axis = 1 : i64} : (tensor<?x6xf32>, tensor<2xi64>) -> (tensor<?x3xf32>, tensor<?x3xf32>) loc("chunk")
    %5 = "moec.sigmoid"(%4#0) : (tensor<?x3xf32>) -> tensor<?x3xf32>
    %6 = "moec.mul"(%4#0, %5) : (tensor<?x3xf32>, tensor<?x3xf32>) -> tensor<?x3xf32>
    %7 = "moec.mul"(%6, %4#1) : (tensor<?x3xf32>, tensor<?x3xf32>) -> tensor<?x3xf32> loc("act")
    %q:2 = "moec.split"(%h, %sizes) : (tensor<?x3xf32>, tensor<2xi64>) -> (tensor<?x3xf32>, tensor<?x3xf32>) loc("by_expert_again")
    %d0 = "moec.matmul"(%3, %v0) : (tensor<?x3xf32>, tensor<3x4xf32>) -> tensor<?x4xf32>
    %d1 = "moec.matmul"(%7, %v1) : (tensor<?x3xf32>, tensor<3x4xf32>) -> tensor<?x4xf32>
    %y = "moec.concat"(%d0, %d1) {axis = 0 : i64} : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32>
    %r:2 = "moec.split"(%h, %other) : (tensor<?x3xf32>, tensor<2xi64>) -> (tensor<?x3xf32>, tensor<?x3xf32>) loc("other sizes: left alone")
    %e0 = "moec.matmul"(%r#0, %v0) : (tensor<?x3xf32>, tensor<3x4xf32>) -> tensor<?x4xf32>
    %e1 = "moec.matmul"(%r#1, %v1) : (tensor<?x3xf32>, tensor<3x4xf32>) -> tensor<?x4xf32>
    %y2 = "moec.concat"(%e0, %e1) {axis = 0 : i64} : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32>
    func.return %y, %y2, %h : tensor<?x4xf32>, tensor<?x4xf32>, tensor<?x3xf32>
  }
}
