module attributes {moec.opset = 18 : i64, moec.source = "mixtral_like"} {
  func.func @main(%x: tensor<?x4xf32, "T">) -> (tensor<?x4xf32, "T">) attributes {moec.inputs = ["x"], moec.outputs = ["y"]} {
    %router_w = "moec.constant"() {value = dense<[[1.0204595, -1.2778325], [0.20904942, -0.2838848], [-0.22632465, -0.107798584], [-1.0099931, -0.115966186]]> : tensor<4x2xf32>} : () -> tensor<4x2xf32>
    %k = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %zero_f = "moec.constant"() {value = dense<0.0> : tensor<f32>} : () -> tensor<f32>
    %e0_id = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %e0_w_gate = "moec.constant"() {value = dense<[[-0.43260655, 1.6614997], [0.112893306, -0.1763154], [-0.14064372, -0.33402318], [-0.52757525, -0.19540049]]> : tensor<4x2xf32>} : () -> tensor<4x2xf32>
    %e0_w_up = "moec.constant"() {value = dense<[[0.2409727, -0.11927681], [0.47887936, -0.099901065], [0.012129783, 0.7729104], [0.27255276, -0.25261438]]> : tensor<4x2xf32>} : () -> tensor<4x2xf32>
    %e0_w_down = "moec.constant"() {value = dense<[[-0.12928668, 0.38220897, 1.3683139, -0.19065036], [-0.17222199, 0.70874274, -0.6268218, -0.20627736]]> : tensor<2x4xf32>} : () -> tensor<2x4xf32>
    %e1_id = "moec.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64>
    %e1_w_gate = "moec.constant"() {value = dense<[[0.4412695, 0.29017502], [0.04575835, 0.3350522], [-1.4140811, 0.51065344], [-0.47982237, -0.83430994]]> : tensor<4x2xf32>} : () -> tensor<4x2xf32>
    %e1_w_up = "moec.constant"() {value = dense<[[0.13822287, 0.35027245], [-0.22238372, -0.53820294], [0.013062417, -0.026373655], [0.7027991, 0.373704]]> : tensor<4x2xf32>} : () -> tensor<4x2xf32>
    %e1_w_down = "moec.constant"() {value = dense<[[0.13704836, 0.7860434, -0.14532675, -0.6547099], [0.41299158, 0.41191685, -0.15190698, -0.55352926]]> : tensor<2x4xf32>} : () -> tensor<2x4xf32>
    %logits = "moec.matmul"(%x, %router_w) : (tensor<?x4xf32, "T">, tensor<4x2xf32>) -> tensor<?x2xf32, "T"> loc("router")
    %probs = "moec.softmax"(%logits) {axis = -1 : i64} : (tensor<?x2xf32, "T">) -> tensor<?x2xf32, "T"> loc("router_softmax")
    %topk_w_raw:2 = "moec.topk"(%probs, %k) {axis = -1 : i64, largest = true, sorted = true} : (tensor<?x2xf32, "T">, tensor<1xi64>) -> (tensor<?x1xf32, "T">, tensor<?x1xi64, "T">) loc("router_topk")
    %topk_sum = "moec.reduce_sum"(%topk_w_raw#0) {axes = array<i64: 1>, keepdims = true, noop_with_empty_axes = false} : (tensor<?x1xf32, "T">) -> tensor<?x1xf32, "T"> loc("renorm_sum")
    %topk_w = "moec.div"(%topk_w_raw#0, %topk_sum) : (tensor<?x1xf32, "T">, tensor<?x1xf32, "T">) -> tensor<?x1xf32, "T"> loc("renorm_div")
    %acc_0 = "moec.mul"(%x, %zero_f) : (tensor<?x4xf32, "T">, tensor<f32>) -> tensor<?x4xf32, "T"> loc("acc_init")
    %e0_mask = "moec.equal"(%topk_w_raw#1, %e0_id) : (tensor<?x1xi64, "T">, tensor<i64>) -> tensor<?x1xi1, "T"> loc("e0_mask")
    %e0_maskf = "moec.cast"(%e0_mask) {to = f32} : (tensor<?x1xi1, "T">) -> tensor<?x1xf32, "T"> loc("e0_maskf")
    %e0_wk = "moec.mul"(%topk_w, %e0_maskf) : (tensor<?x1xf32, "T">, tensor<?x1xf32, "T">) -> tensor<?x1xf32, "T"> loc("e0_wk")
    %e0_w = "moec.reduce_sum"(%e0_wk) {axes = array<i64: 1>, keepdims = true, noop_with_empty_axes = false} : (tensor<?x1xf32, "T">) -> tensor<?x1xf32, "T"> loc("e0_w")
    %e0_hitf = "moec.reduce_max"(%e0_maskf) {axes = array<i64: 1>, keepdims = false, noop_with_empty_axes = false} : (tensor<?x1xf32, "T">) -> tensor<?xf32, "T"> loc("e0_hit")
    %e0_hitb = "moec.greater"(%e0_hitf, %zero_f) : (tensor<?xf32, "T">, tensor<f32>) -> tensor<?xi1, "T"> loc("e0_hitb")
    %e0_nz = "moec.nonzero"(%e0_hitb) : (tensor<?xi1, "T">) -> tensor<1x?xi64> loc("e0_nonzero")
    %e0_idx2 = "moec.transpose"(%e0_nz) {perm = array<i64: 1, 0>} : (tensor<1x?xi64>) -> tensor<?x1xi64> loc("e0_idx2")
    %e0_idx = "moec.squeeze"(%e0_nz) {axes = array<i64: 0>} : (tensor<1x?xi64>) -> tensor<?xi64> loc("e0_idx")
    %e0_xe = "moec.gather"(%x, %e0_idx) {axis = 0 : i64} : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("e0_gather_x")
    %e0_we = "moec.gather"(%e0_w, %e0_idx) {axis = 0 : i64} : (tensor<?x1xf32, "T">, tensor<?xi64>) -> tensor<?x1xf32> loc("e0_gather_w")
    %e0_g = "moec.matmul"(%e0_xe, %e0_w_gate) : (tensor<?x4xf32>, tensor<4x2xf32>) -> tensor<?x2xf32> loc("e0_gate")
    %e0_sg = "moec.sigmoid"(%e0_g) : (tensor<?x2xf32>) -> tensor<?x2xf32> loc("e0_sigmoid")
    %e0_silu = "moec.mul"(%e0_g, %e0_sg) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("e0_silu")
    %e0_u = "moec.matmul"(%e0_xe, %e0_w_up) : (tensor<?x4xf32>, tensor<4x2xf32>) -> tensor<?x2xf32> loc("e0_up")
    %e0_h = "moec.mul"(%e0_silu, %e0_u) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("e0_act")
    %e0_ye = "moec.matmul"(%e0_h, %e0_w_down) : (tensor<?x2xf32>, tensor<2x4xf32>) -> tensor<?x4xf32> loc("e0_down")
    %e0_yw = "moec.mul"(%e0_ye, %e0_we) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("e0_scale")
    %acc_1 = "moec.scatter_nd"(%acc_0, %e0_idx2, %e0_yw) {reduction = "add"} : (tensor<?x4xf32, "T">, tensor<?x1xi64>, tensor<?x4xf32>) -> tensor<?x4xf32, "T"> loc("e0_combine")
    %e1_mask = "moec.equal"(%topk_w_raw#1, %e1_id) : (tensor<?x1xi64, "T">, tensor<i64>) -> tensor<?x1xi1, "T"> loc("e1_mask")
    %e1_maskf = "moec.cast"(%e1_mask) {to = f32} : (tensor<?x1xi1, "T">) -> tensor<?x1xf32, "T"> loc("e1_maskf")
    %e1_wk = "moec.mul"(%topk_w, %e1_maskf) : (tensor<?x1xf32, "T">, tensor<?x1xf32, "T">) -> tensor<?x1xf32, "T"> loc("e1_wk")
    %e1_w = "moec.reduce_sum"(%e1_wk) {axes = array<i64: 1>, keepdims = true, noop_with_empty_axes = false} : (tensor<?x1xf32, "T">) -> tensor<?x1xf32, "T"> loc("e1_w")
    %e1_hitf = "moec.reduce_max"(%e1_maskf) {axes = array<i64: 1>, keepdims = false, noop_with_empty_axes = false} : (tensor<?x1xf32, "T">) -> tensor<?xf32, "T"> loc("e1_hit")
    %e1_hitb = "moec.greater"(%e1_hitf, %zero_f) : (tensor<?xf32, "T">, tensor<f32>) -> tensor<?xi1, "T"> loc("e1_hitb")
    %e1_nz = "moec.nonzero"(%e1_hitb) : (tensor<?xi1, "T">) -> tensor<1x?xi64> loc("e1_nonzero")
    %e1_idx2 = "moec.transpose"(%e1_nz) {perm = array<i64: 1, 0>} : (tensor<1x?xi64>) -> tensor<?x1xi64> loc("e1_idx2")
    %e1_idx = "moec.squeeze"(%e1_nz) {axes = array<i64: 0>} : (tensor<1x?xi64>) -> tensor<?xi64> loc("e1_idx")
    %e1_xe = "moec.gather"(%x, %e1_idx) {axis = 0 : i64} : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("e1_gather_x")
    %e1_we = "moec.gather"(%e1_w, %e1_idx) {axis = 0 : i64} : (tensor<?x1xf32, "T">, tensor<?xi64>) -> tensor<?x1xf32> loc("e1_gather_w")
    %e1_g = "moec.matmul"(%e1_xe, %e1_w_gate) : (tensor<?x4xf32>, tensor<4x2xf32>) -> tensor<?x2xf32> loc("e1_gate")
    %e1_sg = "moec.sigmoid"(%e1_g) : (tensor<?x2xf32>) -> tensor<?x2xf32> loc("e1_sigmoid")
    %e1_silu = "moec.mul"(%e1_g, %e1_sg) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("e1_silu")
    %e1_u = "moec.matmul"(%e1_xe, %e1_w_up) : (tensor<?x4xf32>, tensor<4x2xf32>) -> tensor<?x2xf32> loc("e1_up")
    %e1_h = "moec.mul"(%e1_silu, %e1_u) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("e1_act")
    %e1_ye = "moec.matmul"(%e1_h, %e1_w_down) : (tensor<?x2xf32>, tensor<2x4xf32>) -> tensor<?x4xf32> loc("e1_down")
    %e1_yw = "moec.mul"(%e1_ye, %e1_we) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("e1_scale")
    %acc_2 = "moec.scatter_nd"(%acc_1, %e1_idx2, %e1_yw) {reduction = "add"} : (tensor<?x4xf32, "T">, tensor<?x1xi64>, tensor<?x4xf32>) -> tensor<?x4xf32, "T"> loc("e1_combine")
    func.return %acc_2 : tensor<?x4xf32, "T">
  }
}
// ----- expected
module attributes {moec.moe_layers = ["{\"D\": 4, \"E\": 2, \"F\": 2, \"activation\": \"swiglu\", \"correction_bias\": false, \"family\": \"qwen3-moe/olmoe\", \"k\": 1, \"layer\": \"moe0\", \"replaced_node_count\": 43, \"replaced_nodes\": [\"router\", \"router_softmax\", \"router_topk\", \"renorm_sum\", \"renorm_div\", \"e0_mask\", \"e0_maskf\", \"e0_wk\", \"e0_w\", \"e0_hit\", \"e0_hitb\", \"e0_nonzero\", \"e0_idx2\", \"e0_idx\", \"e0_gather_x\", \"e0_gather_w\", \"e0_gate\", \"e0_sigmoid\", \"e0_silu\", \"e0_up\", \"e0_act\", \"e0_down\", \"e0_scale\", \"e0_combine\", \"e1_mask\", \"e1_maskf\", \"e1_wk\", \"e1_w\", \"e1_hit\", \"e1_hitb\", \"e1_nonzero\", \"e1_idx2\", \"e1_idx\", \"e1_gather_x\", \"e1_gather_w\", \"e1_gate\", \"e1_sigmoid\", \"e1_silu\", \"e1_up\", \"e1_act\", \"e1_down\", \"e1_scale\", \"e1_combine\"], \"routing\": {\"capacity\": 0, \"k\": 1, \"norm\": \"sum\", \"norm_eps\": 0.0, \"post\": \"none\", \"scale\": 1.0, \"scoring\": \"softmax\"}, \"routing_weight_scales\": \"expert output\", \"shared_F\": null, \"shared_expert_gate\": false, \"shared_experts\": 0, \"source\": \"recognized\"}"], moec.opset = 18 : i64, moec.source = "mixtral_like"} {
  func.func @main(%x: tensor<?x4xf32, "T">) -> (tensor<?x4xf32, "T">) attributes {moec.inputs = ["x"], moec.outputs = ["y"]} {
    %router_w = "moec.constant"() {value = dense<[[1.0204595, -1.2778325], [0.20904942, -0.2838848], [-0.22632465, -0.107798584], [-1.0099931, -0.115966186]]> : tensor<4x2xf32>} : () -> tensor<4x2xf32>
    %k = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %zero_f = "moec.constant"() {value = dense<0.0> : tensor<f32>} : () -> tensor<f32>
    %e0_id = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %e0_w_gate = "moec.constant"() {value = dense<[[-0.43260655, 1.6614997], [0.112893306, -0.1763154], [-0.14064372, -0.33402318], [-0.52757525, -0.19540049]]> : tensor<4x2xf32>} : () -> tensor<4x2xf32>
    %e0_w_up = "moec.constant"() {value = dense<[[0.2409727, -0.11927681], [0.47887936, -0.099901065], [0.012129783, 0.7729104], [0.27255276, -0.25261438]]> : tensor<4x2xf32>} : () -> tensor<4x2xf32>
    %e0_w_down = "moec.constant"() {value = dense<[[-0.12928668, 0.38220897, 1.3683139, -0.19065036], [-0.17222199, 0.70874274, -0.6268218, -0.20627736]]> : tensor<2x4xf32>} : () -> tensor<2x4xf32>
    %e1_id = "moec.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64>
    %e1_w_gate = "moec.constant"() {value = dense<[[0.4412695, 0.29017502], [0.04575835, 0.3350522], [-1.4140811, 0.51065344], [-0.47982237, -0.83430994]]> : tensor<4x2xf32>} : () -> tensor<4x2xf32>
    %e1_w_up = "moec.constant"() {value = dense<[[0.13822287, 0.35027245], [-0.22238372, -0.53820294], [0.013062417, -0.026373655], [0.7027991, 0.373704]]> : tensor<4x2xf32>} : () -> tensor<4x2xf32>
    %e1_w_down = "moec.constant"() {value = dense<[[0.13704836, 0.7860434, -0.14532675, -0.6547099], [0.41299158, 0.41191685, -0.15190698, -0.55352926]]> : tensor<2x4xf32>} : () -> tensor<2x4xf32>
    %logits = "moec.matmul"(%x, %router_w) : (tensor<?x4xf32, "T">, tensor<4x2xf32>) -> tensor<?x2xf32, "T"> loc("router")
    %probs = "moec.softmax"(%logits) : (tensor<?x2xf32, "T">) -> tensor<?x2xf32, "T"> loc("router_softmax")
    %topk_w_raw:2 = "moec.topk"(%probs, %k) : (tensor<?x2xf32, "T">, tensor<1xi64>) -> (tensor<?x1xf32, "T">, tensor<?x1xi64, "T">) loc("router_topk")
    %topk_sum = "moec.reduce_sum"(%topk_w_raw#0) {axes = array<i64: 1>} : (tensor<?x1xf32, "T">) -> tensor<?x1xf32, "T"> loc("renorm_sum")
    %topk_w = "moec.div"(%topk_w_raw#0, %topk_sum) : (tensor<?x1xf32, "T">, tensor<?x1xf32, "T">) -> tensor<?x1xf32, "T"> loc("renorm_div")
    %acc_0 = "moec.mul"(%x, %zero_f) : (tensor<?x4xf32, "T">, tensor<f32>) -> tensor<?x4xf32, "T"> loc("acc_init")
    %e0_mask = "moec.equal"(%topk_w_raw#1, %e0_id) : (tensor<?x1xi64, "T">, tensor<i64>) -> tensor<?x1xi1, "T"> loc("e0_mask")
    %e0_maskf = "moec.cast"(%e0_mask) {to = f32} : (tensor<?x1xi1, "T">) -> tensor<?x1xf32, "T"> loc("e0_maskf")
    %e0_wk = "moec.mul"(%topk_w, %e0_maskf) : (tensor<?x1xf32, "T">, tensor<?x1xf32, "T">) -> tensor<?x1xf32, "T"> loc("e0_wk")
    %e0_w = "moec.reduce_sum"(%e0_wk) {axes = array<i64: 1>} : (tensor<?x1xf32, "T">) -> tensor<?x1xf32, "T"> loc("e0_w")
    %e0_hitf = "moec.reduce_max"(%e0_maskf) {axes = array<i64: 1>, keepdims = false} : (tensor<?x1xf32, "T">) -> tensor<?xf32, "T"> loc("e0_hit")
    %e0_hitb = "moec.greater"(%e0_hitf, %zero_f) : (tensor<?xf32, "T">, tensor<f32>) -> tensor<?xi1, "T"> loc("e0_hitb")
    %e0_nz = "moec.nonzero"(%e0_hitb) : (tensor<?xi1, "T">) -> tensor<1x?xi64> loc("e0_nonzero")
    %e0_idx2 = "moec.transpose"(%e0_nz) {perm = array<i64: 1, 0>} : (tensor<1x?xi64>) -> tensor<?x1xi64> loc("e0_idx2")
    %e0_idx = "moec.squeeze"(%e0_nz) {axes = array<i64: 0>} : (tensor<1x?xi64>) -> tensor<?xi64> loc("e0_idx")
    %e0_xe = "moec.gather"(%x, %e0_idx) : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("e0_gather_x")
    %e0_we = "moec.gather"(%e0_w, %e0_idx) : (tensor<?x1xf32, "T">, tensor<?xi64>) -> tensor<?x1xf32> loc("e0_gather_w")
    %e0_g = "moec.matmul"(%e0_xe, %e0_w_gate) : (tensor<?x4xf32>, tensor<4x2xf32>) -> tensor<?x2xf32> loc("e0_gate")
    %e0_sg = "moec.sigmoid"(%e0_g) : (tensor<?x2xf32>) -> tensor<?x2xf32> loc("e0_sigmoid")
    %e0_silu = "moec.mul"(%e0_g, %e0_sg) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("e0_silu")
    %e0_u = "moec.matmul"(%e0_xe, %e0_w_up) : (tensor<?x4xf32>, tensor<4x2xf32>) -> tensor<?x2xf32> loc("e0_up")
    %e0_h = "moec.mul"(%e0_silu, %e0_u) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("e0_act")
    %e0_ye = "moec.matmul"(%e0_h, %e0_w_down) : (tensor<?x2xf32>, tensor<2x4xf32>) -> tensor<?x4xf32> loc("e0_down")
    %e0_yw = "moec.mul"(%e0_ye, %e0_we) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("e0_scale")
    %acc_1 = "moec.scatter_nd"(%acc_0, %e0_idx2, %e0_yw) {reduction = "add"} : (tensor<?x4xf32, "T">, tensor<?x1xi64>, tensor<?x4xf32>) -> tensor<?x4xf32, "T"> loc("e0_combine")
    %e1_mask = "moec.equal"(%topk_w_raw#1, %e1_id) : (tensor<?x1xi64, "T">, tensor<i64>) -> tensor<?x1xi1, "T"> loc("e1_mask")
    %e1_maskf = "moec.cast"(%e1_mask) {to = f32} : (tensor<?x1xi1, "T">) -> tensor<?x1xf32, "T"> loc("e1_maskf")
    %e1_wk = "moec.mul"(%topk_w, %e1_maskf) : (tensor<?x1xf32, "T">, tensor<?x1xf32, "T">) -> tensor<?x1xf32, "T"> loc("e1_wk")
    %e1_w = "moec.reduce_sum"(%e1_wk) {axes = array<i64: 1>} : (tensor<?x1xf32, "T">) -> tensor<?x1xf32, "T"> loc("e1_w")
    %e1_hitf = "moec.reduce_max"(%e1_maskf) {axes = array<i64: 1>, keepdims = false} : (tensor<?x1xf32, "T">) -> tensor<?xf32, "T"> loc("e1_hit")
    %e1_hitb = "moec.greater"(%e1_hitf, %zero_f) : (tensor<?xf32, "T">, tensor<f32>) -> tensor<?xi1, "T"> loc("e1_hitb")
    %e1_nz = "moec.nonzero"(%e1_hitb) : (tensor<?xi1, "T">) -> tensor<1x?xi64> loc("e1_nonzero")
    %e1_idx2 = "moec.transpose"(%e1_nz) {perm = array<i64: 1, 0>} : (tensor<1x?xi64>) -> tensor<?x1xi64> loc("e1_idx2")
    %e1_idx = "moec.squeeze"(%e1_nz) {axes = array<i64: 0>} : (tensor<1x?xi64>) -> tensor<?xi64> loc("e1_idx")
    %e1_xe = "moec.gather"(%x, %e1_idx) : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("e1_gather_x")
    %e1_we = "moec.gather"(%e1_w, %e1_idx) : (tensor<?x1xf32, "T">, tensor<?xi64>) -> tensor<?x1xf32> loc("e1_gather_w")
    %e1_g = "moec.matmul"(%e1_xe, %e1_w_gate) : (tensor<?x4xf32>, tensor<4x2xf32>) -> tensor<?x2xf32> loc("e1_gate")
    %e1_sg = "moec.sigmoid"(%e1_g) : (tensor<?x2xf32>) -> tensor<?x2xf32> loc("e1_sigmoid")
    %e1_silu = "moec.mul"(%e1_g, %e1_sg) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("e1_silu")
    %e1_u = "moec.matmul"(%e1_xe, %e1_w_up) : (tensor<?x4xf32>, tensor<4x2xf32>) -> tensor<?x2xf32> loc("e1_up")
    %e1_h = "moec.mul"(%e1_silu, %e1_u) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("e1_act")
    %e1_ye = "moec.matmul"(%e1_h, %e1_w_down) : (tensor<?x2xf32>, tensor<2x4xf32>) -> tensor<?x4xf32> loc("e1_down")
    %e1_yw = "moec.mul"(%e1_ye, %e1_we) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("e1_scale")
    %acc_2 = "moec.scatter_nd"(%acc_1, %e1_idx2, %e1_yw) {reduction = "add"} : (tensor<?x4xf32, "T">, tensor<?x1xi64>, tensor<?x4xf32>) -> tensor<?x4xf32, "T"> loc("e1_combine")
    %experts_w_in = "moec.constant"() {value = dense_resource<experts_w_in> : tensor<2x4x4xf32>} : () -> tensor<2x4x4xf32>
    %experts_w_out = "moec.constant"() {value = dense_resource<experts_w_out> : tensor<2x4x2xf32>} : () -> tensor<2x4x2xf32>
    %0:2 = "moe.route"(%logits) {k = 1 : i64, norm = "sum"} : (tensor<?x2xf32, "T">) -> (tensor<?x1xf32, "T">, tensor<?x1xi64, "T">) loc("moe.route")
    %1:2 = "moe.dispatch"(%0#1) {num_experts = 2 : i64} : (tensor<?x1xi64, "T">) -> (tensor<?xi64>, tensor<3xi64>) loc("moe.dispatch")
    %2 = "moe.experts"(%x, %0#1, %1#0, %1#1, %experts_w_in, %experts_w_out) : (tensor<?x4xf32, "T">, tensor<?x1xi64, "T">, tensor<?xi64>, tensor<3xi64>, tensor<2x4x4xf32>, tensor<2x4x2xf32>) -> tensor<?x1x4xf32, "T"> loc("moe.experts")
    %3 = "moe.combine"(%2, %0#0) {layer = "moe0"} : (tensor<?x1x4xf32, "T">, tensor<?x1xf32, "T">) -> tensor<?x4xf32, "T"> loc("moe.combine")
    func.return %3 : tensor<?x4xf32, "T">
  }
}
