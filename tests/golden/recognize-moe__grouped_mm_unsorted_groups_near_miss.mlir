module attributes {moec.frontend = "torch.export", moec.opset = 25 : i64, moec.source = "SortedMoE"} {
  func.func @main(%x: tensor<?x4xf32, "T">) -> (tensor<?x4xf32>) attributes {moec.inputs = ["x"], moec.outputs = ["output"]} {
    %0 = "moec.constant"() {value = dense<[[-1.1258398, -1.1523602, -0.25057858, -0.4338788], [0.84871036, 0.69200915, -0.31601277, -2.1152194], [0.32227492, -1.2633348, 0.3499832, 0.30813393], [0.11984151, 1.2376579, 1.1167772, -0.24727815]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32>
    %1 = "moec.constant"() {value = dense<[[[-0.6763269, -0.8479656, 0.2833253, 0.39675418, 0.29941973, -0.77754754, -0.1706802, 0.92650306], [0.37509474, -0.29274878, -0.086698376, 0.09173897, 0.6946831, 0.7931671, 0.47314918, -0.42183837], [-0.30679154, 0.01579637, -0.24633849, 0.12420738, 0.21984792, 0.056205593, 0.32039618, 0.22057813], [-0.051154826, 0.396222, -0.14483385, 0.026253743, 0.26143023, 1.1511027, -0.73444694, -0.7933444]], [[-0.33654496, 0.4364156, 0.5276787, 0.08892186, -0.11516774, -0.1958772, 0.27164736, -0.19757877], [-0.22310859, 0.37201035, 0.76048976, 1.7052513, -0.76559216, -0.6170675, 0.90986264, -0.27576435], [-0.28462404, 0.4599857, 0.55540806, 0.64493704, -0.739087, 1.2836164, -0.2365599, 0.16777538], [-0.814663, -0.27487183, -0.23991713, -0.24984077, -0.5334902, 0.5574698, -0.070335716, 0.4028768]], [[-0.046674117, 0.3435251, -0.41915768, 0.00044591087, 0.42094705, -0.20001708, 0.519731, 0.17907655], [-0.12300047, 1.1512582, -0.9408446, -0.024863511, -0.5224893, -0.4782504, 0.01676593, 0.3550433], [0.8229335, -0.68008447, 0.17228271, 0.25993386, -1.3066612, -0.8482372, -0.11412089, 0.1399775], [0.1234632, 0.038443502, 0.1690029, 0.22720088, 0.22847007, -0.43268567, 0.39065397, -0.4633947]], [[-0.10941684, -1.2175326, -0.03645738, -0.016993204, 0.48125914, 0.17458412, -0.460731, -0.028097393], [-0.31134924, -0.23186108, 0.9608912, -0.20127277, 0.06195124, 0.58239174, 0.46168676, 0.6936476], [-0.44168788, -0.20945674, -0.40241325, 0.28280482, 0.3051823, 0.23344177, 0.97532856, -0.5315493], [-0.038662877, 0.058199324, -0.2969954, -0.6219641, -0.051046316, -0.5167742, -0.15631941, 0.12289274]]]> : tensor<4x4x8xf32>} : () -> tensor<4x4x8xf32>
    %2 = "moec.constant"() {value = dense<[[[-0.12982078, 0.059168525, 0.121979624, 0.5823003], [0.14428808, 0.19329888, -0.10053196, -0.058963493], [0.096099526, -0.38607845, -0.95017266, 0.06533872], [-0.35214698, 0.15736048, 0.078696445, 0.19268136]], [[0.48357284, -0.49554136, 0.15080272, -0.053658463], [0.4992283, -0.24935739, 0.38055545, 0.30915043], [0.15702428, 0.1066665, -0.060025416, 0.18022986], [-0.1570175, -0.539354, 0.12040526, -0.6981136]], [[-0.033072025, -0.17917754, -0.78078085, -0.17732164], [0.5405363, 0.06573903, 0.78676915, 0.39071497], [-0.539329, -0.36045492, 0.7353963, 0.1378175], [0.33339053, -0.49719483, -0.594682, -0.5979747]], [[-0.27981505, 0.2667359, 0.2034433, 0.19729327], [0.08575548, 0.43802238, -0.1435437, 0.51082003], [-0.03719746, -0.5461118, 0.19601321, 0.29726306], [0.33113703, -0.6031512, 0.30371985, -0.2735784]]]> : tensor<4x4x4xf32>} : () -> tensor<4x4x4xf32>
    %__o1_0 = "moec.shape"(%x) {start = 0 : i64} : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("sym_size_int_6")
    %3 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o3_0 = "moec.gather"(%__o1_0, %3) {axis = 0 : i64} : (tensor<2xi64>, tensor<1xi64>) -> tensor<1xi64> loc("sym_size_int_6")
    %__o5_0 = "moec.matmul"(%x, %0) : (tensor<?x4xf32, "T">, tensor<4x4xf32>) -> tensor<?x4xf32, "T"> loc("mm")
    %__o6_0 = "moec.softmax"(%__o5_0) {axis = -1 : i64} : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T"> loc("_softmax")
    %4 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o8_0:2 = "moec.topk"(%__o6_0, %4) {axis = -1 : i64, largest = true, sorted = true} : (tensor<?x4xf32, "T">, tensor<1xi64>) -> (tensor<?x2xf32, "T">, tensor<?x2xi64, "T">) loc("topk")
    %__o10_0 = "moec.reduce_sum"(%__o8_0#0) {axes = array<i64: -1>, keepdims = true, noop_with_empty_axes = false} : (tensor<?x2xf32, "T">) -> tensor<?x1xf32, "T"> loc("sum_1")
    %__o12_0 = "moec.div"(%__o8_0#0, %__o10_0) : (tensor<?x2xf32, "T">, tensor<?x1xf32, "T">) -> tensor<?x2xf32, "T"> loc("div")
    %5 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o14_0 = "moec.reshape"(%__o8_0#1, %5) {allowzero = false} : (tensor<?x2xi64, "T">, tensor<1xi64>) -> tensor<?xi64> loc("view")
    %6 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o16_0 = "moec.reshape"(%__o12_0, %6) {allowzero = false} : (tensor<?x2xf32, "T">, tensor<1xi64>) -> tensor<?xf32> loc("view_1")
    %__o17_0 = "moec.shape"(%__o14_0) {start = 0 : i64} : (tensor<?xi64>) -> tensor<1xi64> loc("sort")
    %7 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o19_0 = "moec.gather"(%__o17_0, %7) {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("sort")
    %__o21_0:2 = "moec.topk"(%__o14_0, %__o19_0) {axis = -1 : i64, largest = false, sorted = true} : (tensor<?xi64>, tensor<1xi64>) -> (tensor<?xi64>, tensor<?xi64>) loc("sort")
    %8 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o23_0 = "moec.mul"(%8, %__o3_0) : (tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("mul_21")
    %9 = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %__o26_0 = "moec.squeeze"(%__o23_0) {axes = array<i64: 0>} : (tensor<1xi64>) -> tensor<i64> loc("arange")
    %10 = "moec.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64>
    %__o29_0 = "moec.range"(%9, %__o26_0, %10) : (tensor<i64>, tensor<i64>, tensor<i64>) -> tensor<?xi64> loc("arange")
    %11 = "moec.constant"() {value = dense<2> : tensor<i64>} : () -> tensor<i64>
    %__o31_0 = "moec.div"(%__o29_0, %11) : (tensor<?xi64>, tensor<i64>) -> tensor<?xi64> loc("div_1")
    %__o33_0 = "moec.mul"(%__o31_0, %11) : (tensor<?xi64>, tensor<i64>) -> tensor<?xi64> loc("div_1")
    %__o35_0 = "moec.sub"(%__o29_0, %__o33_0) : (tensor<?xi64>, tensor<?xi64>) -> tensor<?xi64> loc("div_1")
    %12 = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %__o37_0 = "moec.equal"(%__o35_0, %12) : (tensor<?xi64>, tensor<i64>) -> tensor<?xi1> loc("div_1")
    %__o38_0 = "moec.not"(%__o37_0) : (tensor<?xi1>) -> tensor<?xi1> loc("div_1")
    %__o40_0 = "moec.less"(%__o35_0, %12) : (tensor<?xi64>, tensor<i64>) -> tensor<?xi1> loc("div_1")
    %__o42_0 = "moec.constant"() {value = dense<false> : tensor<i1>} : () -> tensor<i1> loc("div_1")
    %__o44_0 = "moec.equal"(%__o40_0, %__o42_0) : (tensor<?xi1>, tensor<i1>) -> tensor<?xi1> loc("div_1")
    %__o45_0 = "moec.not"(%__o44_0) : (tensor<?xi1>) -> tensor<?xi1> loc("div_1")
    %__o47_0 = "moec.and"(%__o38_0, %__o45_0) : (tensor<?xi1>, tensor<?xi1>) -> tensor<?xi1> loc("div_1")
    %__o48_0 = "moec.cast"(%__o47_0) {to = i64} : (tensor<?xi1>) -> tensor<?xi64> loc("div_1")
    %__o50_0 = "moec.sub"(%__o31_0, %__o48_0) : (tensor<?xi64>, tensor<?xi64>) -> tensor<?xi64> loc("div_1")
    %__o52_0 = "moec.gather"(%x, %__o50_0) {axis = 0 : i64} : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("index")
    %__o53_0 = "moec.cast"(%__o21_0#0) {to = f32} : (tensor<?xi64>) -> tensor<?xf32> loc("_to_copy")
    %13 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o55_0 = "moec.reshape"(%__o53_0, %13) {allowzero = false} : (tensor<?xf32>, tensor<1xi64>) -> tensor<?xf32> loc("histc")
    %14 = "moec.constant"() {value = dense<0.0> : tensor<f32>} : () -> tensor<f32>
    %15 = "moec.constant"() {value = dense<3.0> : tensor<f32>} : () -> tensor<f32>
    %__o57_0 = "moec.sub"(%__o55_0, %14) : (tensor<?xf32>, tensor<f32>) -> tensor<?xf32> loc("histc")
    %16 = "moec.constant"() {value = dense<4.0> : tensor<f32>} : () -> tensor<f32>
    %__o59_0 = "moec.mul"(%__o57_0, %16) : (tensor<?xf32>, tensor<f32>) -> tensor<?xf32> loc("histc")
    %__o61_0 = "moec.constant"() {value = dense<3.0> : tensor<f32>} : () -> tensor<f32> loc("histc")
    %__o63_0 = "moec.div"(%__o59_0, %__o61_0) : (tensor<?xf32>, tensor<f32>) -> tensor<?xf32> loc("histc")
    %__o64_0 = "moec.floor"(%__o63_0) : (tensor<?xf32>) -> tensor<?xf32> loc("histc")
    %__o65_0 = "moec.cast"(%__o64_0) {to = i64} : (tensor<?xf32>) -> tensor<?xi64> loc("histc")
    %17 = "moec.constant"() {value = dense<3> : tensor<i64>} : () -> tensor<i64>
    %__o67_0 = "moec.min"(%__o65_0, %17) : (tensor<?xi64>, tensor<i64>) -> tensor<?xi64> loc("histc")
    %__o69_0 = "moec.greater_equal"(%__o55_0, %14) : (tensor<?xf32>, tensor<f32>) -> tensor<?xi1> loc("histc")
    %__o71_0 = "moec.less_equal"(%__o55_0, %15) : (tensor<?xf32>, tensor<f32>) -> tensor<?xi1> loc("histc")
    %__o73_0 = "moec.and"(%__o69_0, %__o71_0) : (tensor<?xi1>, tensor<?xi1>) -> tensor<?xi1> loc("histc")
    %__o75_0 = "moec.unsqueeze"(%__o67_0) {axes = array<i64: 1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("histc")
    %18 = "moec.constant"() {value = dense<[0, 1, 2, 3]> : tensor<4xi64>} : () -> tensor<4xi64>
    %__o77_0 = "moec.equal"(%__o75_0, %18) : (tensor<?x1xi64>, tensor<4xi64>) -> tensor<?x4xi1> loc("histc")
    %__o79_0 = "moec.unsqueeze"(%__o73_0) {axes = array<i64: 1>} : (tensor<?xi1>) -> tensor<?x1xi1> loc("histc")
    %__o81_0 = "moec.and"(%__o77_0, %__o79_0) : (tensor<?x4xi1>, tensor<?x1xi1>) -> tensor<?x4xi1> loc("histc")
    %__o82_0 = "moec.cast"(%__o81_0) {to = f32} : (tensor<?x4xi1>) -> tensor<?x4xf32> loc("histc")
    %__o84_0 = "moec.reduce_sum"(%__o82_0) {axes = array<i64: 0>, keepdims = false, noop_with_empty_axes = false} : (tensor<?x4xf32>) -> tensor<4xf32> loc("histc")
    %19 = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %__o86_0 = "moec.cumsum"(%__o84_0, %19) {exclusive = false, reverse = false} : (tensor<4xf32>, tensor<i64>) -> tensor<4xf32> loc("cumsum")
    %__o87_0 = "moec.cast"(%__o86_0) {to = i32} : (tensor<4xf32>) -> tensor<4xi32> loc("_to_copy_1")
    %20 = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %__o90_0 = "moec.squeeze"(%__o23_0) {axes = array<i64: 0>} : (tensor<1xi64>) -> tensor<i64> loc("arange_1")
    %21 = "moec.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64>
    %__o93_0 = "moec.range"(%20, %__o90_0, %21) : (tensor<i64>, tensor<i64>, tensor<i64>) -> tensor<?xi64> loc("arange_1")
    %__o95_0 = "moec.unsqueeze"(%__o93_0) {axes = array<i64: 1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("unsqueeze")
    %__o97_0 = "moec.unsqueeze"(%__o87_0) {axes = array<i64: 0>} : (tensor<4xi32>) -> tensor<1x4xi32> loc("unsqueeze_1")
    %__o98_0 = "moec.cast"(%__o97_0) {to = i64} : (tensor<1x4xi32>) -> tensor<1x4xi64> loc("_to_copy_2")
    %__o100_0 = "moec.greater_equal"(%__o95_0, %__o98_0) : (tensor<?x1xi64>, tensor<1x4xi64>) -> tensor<?x4xi1> loc("ge")
    %__o101_0 = "moec.cast"(%__o100_0) {to = i64} : (tensor<?x4xi1>) -> tensor<?x4xi64> loc("sum_2")
    %__o103_0 = "moec.reduce_sum"(%__o101_0) {axes = array<i64: -1>, keepdims = false, noop_with_empty_axes = false} : (tensor<?x4xi64>) -> tensor<?xi64> loc("sum_2")
    %22 = "moec.constant"() {value = dense<3> : tensor<i64>} : () -> tensor<i64>
    %23 = "moec.constant"() {value = dense<-9223372036854775808> : tensor<i64>} : () -> tensor<i64> loc("clamp")
    %__o105_0 = "moec.clip"(%__o103_0, %23, %22) : (tensor<?xi64>, tensor<i64>, tensor<i64>) -> tensor<?xi64> loc("clamp")
    %__o107_0 = "moec.unsqueeze"(%__o52_0) {axes = array<i64: 1>} : (tensor<?x4xf32>) -> tensor<?x1x4xf32> loc("unsqueeze_2")
    %__o109_0 = "moec.gather"(%1, %__o105_0) {axis = 0 : i64} : (tensor<4x4x8xf32>, tensor<?xi64>) -> tensor<?x4x8xf32> loc("index_1")
    %__o111_0 = "moec.matmul"(%__o107_0, %__o109_0) : (tensor<?x1x4xf32>, tensor<?x4x8xf32>) -> tensor<?x1x8xf32> loc("bmm")
    %__o113_0 = "moec.squeeze"(%__o111_0) {axes = array<i64: 1>} : (tensor<?x1x8xf32>) -> tensor<?x8xf32> loc("squeeze")
    %24 = "moec.constant"() {value = dense<4> : tensor<2xi64>} : () -> tensor<2xi64>
    %__o115_0:2 = "moec.split"(%__o113_0, %24) {axis = -1 : i64} : (tensor<?x8xf32>, tensor<2xi64>) -> (tensor<?x4xf32>, tensor<?x4xf32>) loc("split_with_sizes")
    %__o116_0 = "moec.sigmoid"(%__o115_0#0) : (tensor<?x4xf32>) -> tensor<?x4xf32> loc("sigmoid")
    %__o118_0 = "moec.mul"(%__o115_0#0, %__o116_0) : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32> loc("mul_44")
    %__o120_0 = "moec.mul"(%__o118_0, %__o115_0#1) : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32> loc("mul_47")
    %25 = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %__o123_0 = "moec.squeeze"(%__o23_0) {axes = array<i64: 0>} : (tensor<1xi64>) -> tensor<i64> loc("arange_2")
    %26 = "moec.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64>
    %__o126_0 = "moec.range"(%25, %__o123_0, %26) : (tensor<i64>, tensor<i64>, tensor<i64>) -> tensor<?xi64> loc("arange_2")
    %__o128_0 = "moec.unsqueeze"(%__o126_0) {axes = array<i64: 1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("unsqueeze_3")
    %__o130_0 = "moec.unsqueeze"(%__o87_0) {axes = array<i64: 0>} : (tensor<4xi32>) -> tensor<1x4xi32> loc("unsqueeze_4")
    %__o131_0 = "moec.cast"(%__o130_0) {to = i64} : (tensor<1x4xi32>) -> tensor<1x4xi64> loc("_to_copy_3")
    %__o133_0 = "moec.greater_equal"(%__o128_0, %__o131_0) : (tensor<?x1xi64>, tensor<1x4xi64>) -> tensor<?x4xi1> loc("ge_1")
    %__o134_0 = "moec.cast"(%__o133_0) {to = i64} : (tensor<?x4xi1>) -> tensor<?x4xi64> loc("sum_3")
    %__o136_0 = "moec.reduce_sum"(%__o134_0) {axes = array<i64: -1>, keepdims = false, noop_with_empty_axes = false} : (tensor<?x4xi64>) -> tensor<?xi64> loc("sum_3")
    %27 = "moec.constant"() {value = dense<3> : tensor<i64>} : () -> tensor<i64>
    %28 = "moec.constant"() {value = dense<-9223372036854775808> : tensor<i64>} : () -> tensor<i64> loc("clamp_1")
    %__o138_0 = "moec.clip"(%__o136_0, %28, %27) : (tensor<?xi64>, tensor<i64>, tensor<i64>) -> tensor<?xi64> loc("clamp_1")
    %__o140_0 = "moec.unsqueeze"(%__o120_0) {axes = array<i64: 1>} : (tensor<?x4xf32>) -> tensor<?x1x4xf32> loc("unsqueeze_5")
    %__o142_0 = "moec.gather"(%2, %__o138_0) {axis = 0 : i64} : (tensor<4x4x4xf32>, tensor<?xi64>) -> tensor<?x4x4xf32> loc("index_2")
    %__o144_0 = "moec.matmul"(%__o140_0, %__o142_0) : (tensor<?x1x4xf32>, tensor<?x4x4xf32>) -> tensor<?x1x4xf32> loc("bmm_1")
    %__o146_0 = "moec.squeeze"(%__o144_0) {axes = array<i64: 1>} : (tensor<?x1x4xf32>) -> tensor<?x4xf32> loc("squeeze_1")
    %__o148_0 = "moec.gather"(%__o16_0, %__o29_0) {axis = 0 : i64} : (tensor<?xf32>, tensor<?xi64>) -> tensor<?xf32> loc("index_3")
    %__o150_0 = "moec.unsqueeze"(%__o148_0) {axes = array<i64: -1>} : (tensor<?xf32>) -> tensor<?x1xf32> loc("unsqueeze_6")
    %__o152_0 = "moec.mul"(%__o146_0, %__o150_0) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("mul_65")
    %__o153_0 = "moec.shape"(%__o29_0) {start = 0 : i64} : (tensor<?xi64>) -> tensor<1xi64> loc("sort_1")
    %29 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o155_0 = "moec.gather"(%__o153_0, %29) {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("sort_1")
    %__o157_0:2 = "moec.topk"(%__o29_0, %__o155_0) {axis = -1 : i64, largest = false, sorted = true} : (tensor<?xi64>, tensor<1xi64>) -> (tensor<?xi64>, tensor<?xi64>) loc("sort_1")
    %__o159_0 = "moec.gather"(%__o152_0, %__o157_0#1) {axis = 0 : i64} : (tensor<?x4xf32>, tensor<?xi64>) -> tensor<?x4xf32> loc("index_4")
    %30 = "moec.constant"() {value = dense<[-1, 2, 4]> : tensor<3xi64>} : () -> tensor<3xi64>
    %__o161_0 = "moec.reshape"(%__o159_0, %30) {allowzero = false} : (tensor<?x4xf32>, tensor<3xi64>) -> tensor<?x2x4xf32> loc("view_2")
    %__o163_0 = "moec.reduce_sum"(%__o161_0) {axes = array<i64: 1>, keepdims = false, noop_with_empty_axes = false} : (tensor<?x2x4xf32>) -> tensor<?x4xf32> loc("sum_4")
    func.return %__o163_0 : tensor<?x4xf32>
  }
}
// ----- expected
module attributes {moec.frontend = "torch.export", moec.opset = 25 : i64, moec.source = "SortedMoE"} {
  func.func @main(%x: tensor<?x4xf32, "T">) -> (tensor<?x4xf32>) attributes {moec.inputs = ["x"], moec.outputs = ["output"]} {
    %0 = "moec.constant"() {value = dense<[[-1.1258398, -1.1523602, -0.25057858, -0.4338788], [0.84871036, 0.69200915, -0.31601277, -2.1152194], [0.32227492, -1.2633348, 0.3499832, 0.30813393], [0.11984151, 1.2376579, 1.1167772, -0.24727815]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32>
    %1 = "moec.constant"() {value = dense<[[[-0.6763269, -0.8479656, 0.2833253, 0.39675418, 0.29941973, -0.77754754, -0.1706802, 0.92650306], [0.37509474, -0.29274878, -0.086698376, 0.09173897, 0.6946831, 0.7931671, 0.47314918, -0.42183837], [-0.30679154, 0.01579637, -0.24633849, 0.12420738, 0.21984792, 0.056205593, 0.32039618, 0.22057813], [-0.051154826, 0.396222, -0.14483385, 0.026253743, 0.26143023, 1.1511027, -0.73444694, -0.7933444]], [[-0.33654496, 0.4364156, 0.5276787, 0.08892186, -0.11516774, -0.1958772, 0.27164736, -0.19757877], [-0.22310859, 0.37201035, 0.76048976, 1.7052513, -0.76559216, -0.6170675, 0.90986264, -0.27576435], [-0.28462404, 0.4599857, 0.55540806, 0.64493704, -0.739087, 1.2836164, -0.2365599, 0.16777538], [-0.814663, -0.27487183, -0.23991713, -0.24984077, -0.5334902, 0.5574698, -0.070335716, 0.4028768]], [[-0.046674117, 0.3435251, -0.41915768, 0.00044591087, 0.42094705, -0.20001708, 0.519731, 0.17907655], [-0.12300047, 1.1512582, -0.9408446, -0.024863511, -0.5224893, -0.4782504, 0.01676593, 0.3550433], [0.8229335, -0.68008447, 0.17228271, 0.25993386, -1.3066612, -0.8482372, -0.11412089, 0.1399775], [0.1234632, 0.038443502, 0.1690029, 0.22720088, 0.22847007, -0.43268567, 0.39065397, -0.4633947]], [[-0.10941684, -1.2175326, -0.03645738, -0.016993204, 0.48125914, 0.17458412, -0.460731, -0.028097393], [-0.31134924, -0.23186108, 0.9608912, -0.20127277, 0.06195124, 0.58239174, 0.46168676, 0.6936476], [-0.44168788, -0.20945674, -0.40241325, 0.28280482, 0.3051823, 0.23344177, 0.97532856, -0.5315493], [-0.038662877, 0.058199324, -0.2969954, -0.6219641, -0.051046316, -0.5167742, -0.15631941, 0.12289274]]]> : tensor<4x4x8xf32>} : () -> tensor<4x4x8xf32>
    %2 = "moec.constant"() {value = dense<[[[-0.12982078, 0.059168525, 0.121979624, 0.5823003], [0.14428808, 0.19329888, -0.10053196, -0.058963493], [0.096099526, -0.38607845, -0.95017266, 0.06533872], [-0.35214698, 0.15736048, 0.078696445, 0.19268136]], [[0.48357284, -0.49554136, 0.15080272, -0.053658463], [0.4992283, -0.24935739, 0.38055545, 0.30915043], [0.15702428, 0.1066665, -0.060025416, 0.18022986], [-0.1570175, -0.539354, 0.12040526, -0.6981136]], [[-0.033072025, -0.17917754, -0.78078085, -0.17732164], [0.5405363, 0.06573903, 0.78676915, 0.39071497], [-0.539329, -0.36045492, 0.7353963, 0.1378175], [0.33339053, -0.49719483, -0.594682, -0.5979747]], [[-0.27981505, 0.2667359, 0.2034433, 0.19729327], [0.08575548, 0.43802238, -0.1435437, 0.51082003], [-0.03719746, -0.5461118, 0.19601321, 0.29726306], [0.33113703, -0.6031512, 0.30371985, -0.2735784]]]> : tensor<4x4x4xf32>} : () -> tensor<4x4x4xf32>
    %__o1_0 = "moec.shape"(%x) : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("sym_size_int_6")
    %3 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o3_0 = "moec.gather"(%__o1_0, %3) : (tensor<2xi64>, tensor<1xi64>) -> tensor<1xi64> loc("sym_size_int_6")
    %__o5_0 = "moec.matmul"(%x, %0) : (tensor<?x4xf32, "T">, tensor<4x4xf32>) -> tensor<?x4xf32, "T"> loc("mm")
    %__o6_0 = "moec.softmax"(%__o5_0) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T"> loc("_softmax")
    %4 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o8_0:2 = "moec.topk"(%__o6_0, %4) : (tensor<?x4xf32, "T">, tensor<1xi64>) -> (tensor<?x2xf32, "T">, tensor<?x2xi64, "T">) loc("topk")
    %__o10_0 = "moec.reduce_sum"(%__o8_0#0) {axes = array<i64: -1>} : (tensor<?x2xf32, "T">) -> tensor<?x1xf32, "T"> loc("sum_1")
    %__o12_0 = "moec.div"(%__o8_0#0, %__o10_0) : (tensor<?x2xf32, "T">, tensor<?x1xf32, "T">) -> tensor<?x2xf32, "T"> loc("div")
    %5 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o14_0 = "moec.reshape"(%__o8_0#1, %5) : (tensor<?x2xi64, "T">, tensor<1xi64>) -> tensor<?xi64> loc("view")
    %6 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o16_0 = "moec.reshape"(%__o12_0, %6) : (tensor<?x2xf32, "T">, tensor<1xi64>) -> tensor<?xf32> loc("view_1")
    %__o17_0 = "moec.shape"(%__o14_0) : (tensor<?xi64>) -> tensor<1xi64> loc("sort")
    %7 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o19_0 = "moec.gather"(%__o17_0, %7) : (tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("sort")
    %__o21_0:2 = "moec.topk"(%__o14_0, %__o19_0) {largest = false} : (tensor<?xi64>, tensor<1xi64>) -> (tensor<?xi64>, tensor<?xi64>) loc("sort")
    %8 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o23_0 = "moec.mul"(%8, %__o3_0) : (tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("mul_21")
    %9 = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %__o26_0 = "moec.squeeze"(%__o23_0) {axes = array<i64: 0>} : (tensor<1xi64>) -> tensor<i64> loc("arange")
    %10 = "moec.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64>
    %__o29_0 = "moec.range"(%9, %__o26_0, %10) : (tensor<i64>, tensor<i64>, tensor<i64>) -> tensor<?xi64> loc("arange")
    %11 = "moec.constant"() {value = dense<2> : tensor<i64>} : () -> tensor<i64>
    %__o31_0 = "moec.div"(%__o29_0, %11) : (tensor<?xi64>, tensor<i64>) -> tensor<?xi64> loc("div_1")
    %__o33_0 = "moec.mul"(%__o31_0, %11) : (tensor<?xi64>, tensor<i64>) -> tensor<?xi64> loc("div_1")
    %__o35_0 = "moec.sub"(%__o29_0, %__o33_0) : (tensor<?xi64>, tensor<?xi64>) -> tensor<?xi64> loc("div_1")
    %12 = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %__o37_0 = "moec.equal"(%__o35_0, %12) : (tensor<?xi64>, tensor<i64>) -> tensor<?xi1> loc("div_1")
    %__o38_0 = "moec.not"(%__o37_0) : (tensor<?xi1>) -> tensor<?xi1> loc("div_1")
    %__o40_0 = "moec.less"(%__o35_0, %12) : (tensor<?xi64>, tensor<i64>) -> tensor<?xi1> loc("div_1")
    %__o42_0 = "moec.constant"() {value = dense<false> : tensor<i1>} : () -> tensor<i1> loc("div_1")
    %__o44_0 = "moec.equal"(%__o40_0, %__o42_0) : (tensor<?xi1>, tensor<i1>) -> tensor<?xi1> loc("div_1")
    %__o45_0 = "moec.not"(%__o44_0) : (tensor<?xi1>) -> tensor<?xi1> loc("div_1")
    %__o47_0 = "moec.and"(%__o38_0, %__o45_0) : (tensor<?xi1>, tensor<?xi1>) -> tensor<?xi1> loc("div_1")
    %__o48_0 = "moec.cast"(%__o47_0) {to = i64} : (tensor<?xi1>) -> tensor<?xi64> loc("div_1")
    %__o50_0 = "moec.sub"(%__o31_0, %__o48_0) : (tensor<?xi64>, tensor<?xi64>) -> tensor<?xi64> loc("div_1")
    %__o52_0 = "moec.gather"(%x, %__o50_0) : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("index")
    %__o53_0 = "moec.cast"(%__o21_0#0) {to = f32} : (tensor<?xi64>) -> tensor<?xf32> loc("_to_copy")
    %13 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o55_0 = "moec.reshape"(%__o53_0, %13) : (tensor<?xf32>, tensor<1xi64>) -> tensor<?xf32> loc("histc")
    %14 = "moec.constant"() {value = dense<0.0> : tensor<f32>} : () -> tensor<f32>
    %15 = "moec.constant"() {value = dense<3.0> : tensor<f32>} : () -> tensor<f32>
    %__o57_0 = "moec.sub"(%__o55_0, %14) : (tensor<?xf32>, tensor<f32>) -> tensor<?xf32> loc("histc")
    %16 = "moec.constant"() {value = dense<4.0> : tensor<f32>} : () -> tensor<f32>
    %__o59_0 = "moec.mul"(%__o57_0, %16) : (tensor<?xf32>, tensor<f32>) -> tensor<?xf32> loc("histc")
    %__o61_0 = "moec.constant"() {value = dense<3.0> : tensor<f32>} : () -> tensor<f32> loc("histc")
    %__o63_0 = "moec.div"(%__o59_0, %__o61_0) : (tensor<?xf32>, tensor<f32>) -> tensor<?xf32> loc("histc")
    %__o64_0 = "moec.floor"(%__o63_0) : (tensor<?xf32>) -> tensor<?xf32> loc("histc")
    %__o65_0 = "moec.cast"(%__o64_0) {to = i64} : (tensor<?xf32>) -> tensor<?xi64> loc("histc")
    %17 = "moec.constant"() {value = dense<3> : tensor<i64>} : () -> tensor<i64>
    %__o67_0 = "moec.min"(%__o65_0, %17) : (tensor<?xi64>, tensor<i64>) -> tensor<?xi64> loc("histc")
    %__o69_0 = "moec.greater_equal"(%__o55_0, %14) : (tensor<?xf32>, tensor<f32>) -> tensor<?xi1> loc("histc")
    %__o71_0 = "moec.less_equal"(%__o55_0, %15) : (tensor<?xf32>, tensor<f32>) -> tensor<?xi1> loc("histc")
    %__o73_0 = "moec.and"(%__o69_0, %__o71_0) : (tensor<?xi1>, tensor<?xi1>) -> tensor<?xi1> loc("histc")
    %__o75_0 = "moec.unsqueeze"(%__o67_0) {axes = array<i64: 1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("histc")
    %18 = "moec.constant"() {value = dense<[0, 1, 2, 3]> : tensor<4xi64>} : () -> tensor<4xi64>
    %__o77_0 = "moec.equal"(%__o75_0, %18) : (tensor<?x1xi64>, tensor<4xi64>) -> tensor<?x4xi1> loc("histc")
    %__o79_0 = "moec.unsqueeze"(%__o73_0) {axes = array<i64: 1>} : (tensor<?xi1>) -> tensor<?x1xi1> loc("histc")
    %__o81_0 = "moec.and"(%__o77_0, %__o79_0) : (tensor<?x4xi1>, tensor<?x1xi1>) -> tensor<?x4xi1> loc("histc")
    %__o82_0 = "moec.cast"(%__o81_0) {to = f32} : (tensor<?x4xi1>) -> tensor<?x4xf32> loc("histc")
    %__o84_0 = "moec.reduce_sum"(%__o82_0) {axes = array<i64: 0>, keepdims = false} : (tensor<?x4xf32>) -> tensor<4xf32> loc("histc")
    %19 = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %__o86_0 = "moec.cumsum"(%__o84_0, %19) : (tensor<4xf32>, tensor<i64>) -> tensor<4xf32> loc("cumsum")
    %__o87_0 = "moec.cast"(%__o86_0) {to = i32} : (tensor<4xf32>) -> tensor<4xi32> loc("_to_copy_1")
    %20 = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %__o90_0 = "moec.squeeze"(%__o23_0) {axes = array<i64: 0>} : (tensor<1xi64>) -> tensor<i64> loc("arange_1")
    %21 = "moec.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64>
    %__o93_0 = "moec.range"(%20, %__o90_0, %21) : (tensor<i64>, tensor<i64>, tensor<i64>) -> tensor<?xi64> loc("arange_1")
    %__o95_0 = "moec.unsqueeze"(%__o93_0) {axes = array<i64: 1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("unsqueeze")
    %__o97_0 = "moec.unsqueeze"(%__o87_0) {axes = array<i64: 0>} : (tensor<4xi32>) -> tensor<1x4xi32> loc("unsqueeze_1")
    %__o98_0 = "moec.cast"(%__o97_0) {to = i64} : (tensor<1x4xi32>) -> tensor<1x4xi64> loc("_to_copy_2")
    %__o100_0 = "moec.greater_equal"(%__o95_0, %__o98_0) : (tensor<?x1xi64>, tensor<1x4xi64>) -> tensor<?x4xi1> loc("ge")
    %__o101_0 = "moec.cast"(%__o100_0) {to = i64} : (tensor<?x4xi1>) -> tensor<?x4xi64> loc("sum_2")
    %__o103_0 = "moec.reduce_sum"(%__o101_0) {axes = array<i64: -1>, keepdims = false} : (tensor<?x4xi64>) -> tensor<?xi64> loc("sum_2")
    %22 = "moec.constant"() {value = dense<3> : tensor<i64>} : () -> tensor<i64>
    %23 = "moec.constant"() {value = dense<-9223372036854775808> : tensor<i64>} : () -> tensor<i64> loc("clamp")
    %__o105_0 = "moec.clip"(%__o103_0, %23, %22) : (tensor<?xi64>, tensor<i64>, tensor<i64>) -> tensor<?xi64> loc("clamp")
    %__o107_0 = "moec.unsqueeze"(%__o52_0) {axes = array<i64: 1>} : (tensor<?x4xf32>) -> tensor<?x1x4xf32> loc("unsqueeze_2")
    %__o109_0 = "moec.gather"(%1, %__o105_0) : (tensor<4x4x8xf32>, tensor<?xi64>) -> tensor<?x4x8xf32> loc("index_1")
    %__o111_0 = "moec.matmul"(%__o107_0, %__o109_0) : (tensor<?x1x4xf32>, tensor<?x4x8xf32>) -> tensor<?x1x8xf32> loc("bmm")
    %__o113_0 = "moec.squeeze"(%__o111_0) {axes = array<i64: 1>} : (tensor<?x1x8xf32>) -> tensor<?x8xf32> loc("squeeze")
    %24 = "moec.constant"() {value = dense<4> : tensor<2xi64>} : () -> tensor<2xi64>
    %__o115_0:2 = "moec.split"(%__o113_0, %24) {axis = -1 : i64} : (tensor<?x8xf32>, tensor<2xi64>) -> (tensor<?x4xf32>, tensor<?x4xf32>) loc("split_with_sizes")
    %__o116_0 = "moec.sigmoid"(%__o115_0#0) : (tensor<?x4xf32>) -> tensor<?x4xf32> loc("sigmoid")
    %__o118_0 = "moec.mul"(%__o115_0#0, %__o116_0) : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32> loc("mul_44")
    %__o120_0 = "moec.mul"(%__o118_0, %__o115_0#1) : (tensor<?x4xf32>, tensor<?x4xf32>) -> tensor<?x4xf32> loc("mul_47")
    %25 = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %__o123_0 = "moec.squeeze"(%__o23_0) {axes = array<i64: 0>} : (tensor<1xi64>) -> tensor<i64> loc("arange_2")
    %26 = "moec.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64>
    %__o126_0 = "moec.range"(%25, %__o123_0, %26) : (tensor<i64>, tensor<i64>, tensor<i64>) -> tensor<?xi64> loc("arange_2")
    %__o128_0 = "moec.unsqueeze"(%__o126_0) {axes = array<i64: 1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("unsqueeze_3")
    %__o130_0 = "moec.unsqueeze"(%__o87_0) {axes = array<i64: 0>} : (tensor<4xi32>) -> tensor<1x4xi32> loc("unsqueeze_4")
    %__o131_0 = "moec.cast"(%__o130_0) {to = i64} : (tensor<1x4xi32>) -> tensor<1x4xi64> loc("_to_copy_3")
    %__o133_0 = "moec.greater_equal"(%__o128_0, %__o131_0) : (tensor<?x1xi64>, tensor<1x4xi64>) -> tensor<?x4xi1> loc("ge_1")
    %__o134_0 = "moec.cast"(%__o133_0) {to = i64} : (tensor<?x4xi1>) -> tensor<?x4xi64> loc("sum_3")
    %__o136_0 = "moec.reduce_sum"(%__o134_0) {axes = array<i64: -1>, keepdims = false} : (tensor<?x4xi64>) -> tensor<?xi64> loc("sum_3")
    %27 = "moec.constant"() {value = dense<3> : tensor<i64>} : () -> tensor<i64>
    %28 = "moec.constant"() {value = dense<-9223372036854775808> : tensor<i64>} : () -> tensor<i64> loc("clamp_1")
    %__o138_0 = "moec.clip"(%__o136_0, %28, %27) : (tensor<?xi64>, tensor<i64>, tensor<i64>) -> tensor<?xi64> loc("clamp_1")
    %__o140_0 = "moec.unsqueeze"(%__o120_0) {axes = array<i64: 1>} : (tensor<?x4xf32>) -> tensor<?x1x4xf32> loc("unsqueeze_5")
    %__o142_0 = "moec.gather"(%2, %__o138_0) : (tensor<4x4x4xf32>, tensor<?xi64>) -> tensor<?x4x4xf32> loc("index_2")
    %__o144_0 = "moec.matmul"(%__o140_0, %__o142_0) : (tensor<?x1x4xf32>, tensor<?x4x4xf32>) -> tensor<?x1x4xf32> loc("bmm_1")
    %__o146_0 = "moec.squeeze"(%__o144_0) {axes = array<i64: 1>} : (tensor<?x1x4xf32>) -> tensor<?x4xf32> loc("squeeze_1")
    %__o148_0 = "moec.gather"(%__o16_0, %__o29_0) : (tensor<?xf32>, tensor<?xi64>) -> tensor<?xf32> loc("index_3")
    %__o150_0 = "moec.unsqueeze"(%__o148_0) {axes = array<i64: -1>} : (tensor<?xf32>) -> tensor<?x1xf32> loc("unsqueeze_6")
    %__o152_0 = "moec.mul"(%__o146_0, %__o150_0) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("mul_65")
    %__o153_0 = "moec.shape"(%__o29_0) : (tensor<?xi64>) -> tensor<1xi64> loc("sort_1")
    %29 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o155_0 = "moec.gather"(%__o153_0, %29) : (tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("sort_1")
    %__o157_0:2 = "moec.topk"(%__o29_0, %__o155_0) {largest = false} : (tensor<?xi64>, tensor<1xi64>) -> (tensor<?xi64>, tensor<?xi64>) loc("sort_1")
    %__o159_0 = "moec.gather"(%__o152_0, %__o157_0#1) : (tensor<?x4xf32>, tensor<?xi64>) -> tensor<?x4xf32> loc("index_4")
    %30 = "moec.constant"() {value = dense<[-1, 2, 4]> : tensor<3xi64>} : () -> tensor<3xi64>
    %__o161_0 = "moec.reshape"(%__o159_0, %30) : (tensor<?x4xf32>, tensor<3xi64>) -> tensor<?x2x4xf32> loc("view_2")
    %__o163_0 = "moec.reduce_sum"(%__o161_0) {axes = array<i64: 1>, keepdims = false} : (tensor<?x2x4xf32>) -> tensor<?x4xf32> loc("sum_4")
    func.return %__o163_0 : tensor<?x4xf32>
  }
}
