module attributes {moec.frontend = "torch.export", moec.opset = 25 : i64, moec.source = "ArgmaxChain"} {
  func.func @main(%x: tensor<?x4xf32, "T">) -> (tensor<?x4xf32, "T">) attributes {moec.inputs = ["x"], moec.outputs = ["output"]} {
    %__o1_0 = "moec.constant"() {value = dense<[[-0.00374341, -0.19257718, -0.044372022, -0.47767425], [0.2682218, 0.13407868, 0.13230628, -0.33114105], [-0.41152257, -0.00990659, -0.15110654, -0.20611155], [-0.3679695, 0.39644474, -0.098282695, 0.018521786]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32> loc("permute")
    %__o3_0 = "moec.matmul"(%x, %__o1_0) : (tensor<?x4xf32, "T">, tensor<4x4xf32>) -> tensor<?x4xf32, "T"> loc("mm")
    %__o4_0 = "moec.argmax"(%__o3_0) {axis = -1 : i64, keepdims = true, select_last_index = false} : (tensor<?x4xf32, "T">) -> tensor<?x1xi64, "T"> loc("argmax")
    %0 = "moec.constant"() {value = dense<0xFF800000> : tensor<f32>} : () -> tensor<f32>
    %__o5_0 = "moec.shape"(%__o4_0) {start = 0 : i64} : (tensor<?x1xi64, "T">) -> tensor<2xi64> loc("scatter")
    %__o7_0 = "moec.expand"(%0, %__o5_0) : (tensor<f32>, tensor<2xi64>) -> tensor<?x1xf32, "T"> loc("scatter")
    %__o10_0 = "moec.scatter_elements"(%__o3_0, %__o4_0, %__o7_0) {axis = -1 : i64, reduction = "none"} : (tensor<?x4xf32, "T">, tensor<?x1xi64, "T">, tensor<?x1xf32, "T">) -> tensor<?x4xf32, "T"> loc("scatter")
    %__o11_0 = "moec.argmax"(%__o10_0) {axis = -1 : i64, keepdims = true, select_last_index = false} : (tensor<?x4xf32, "T">) -> tensor<?x1xi64, "T"> loc("argmax_1")
    %__o13_0 = "moec.concat"(%__o4_0, %__o11_0) {axis = -1 : i64} : (tensor<?x1xi64, "T">, tensor<?x1xi64, "T">) -> tensor<?x2xi64, "T"> loc("cat")
    %__o14_0 = "moec.softmax"(%__o3_0) {axis = -1 : i64} : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T"> loc("_softmax")
    %__o16_0 = "moec.gather_elements"(%__o14_0, %__o13_0) {axis = -1 : i64} : (tensor<?x4xf32, "T">, tensor<?x2xi64, "T">) -> tensor<?x2xf32, "T"> loc("gather")
    %__o18_0 = "moec.reduce_sum"(%__o16_0) {axes = array<i64: -1>, keepdims = true, noop_with_empty_axes = false} : (tensor<?x2xf32, "T">) -> tensor<?x1xf32, "T"> loc("sum_1")
    %__o20_0 = "moec.div"(%__o16_0, %__o18_0) : (tensor<?x2xf32, "T">, tensor<?x1xf32, "T">) -> tensor<?x2xf32, "T"> loc("div")
    %__o21_0 = "moec.shape"(%x) {start = 0 : i64} : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("full_like")
    %__o22_0 = "moec.constant_of_shape"(%__o21_0) {value = dense<[0.0]> : tensor<1xf32>} : (tensor<2xi64>) -> tensor<?x4xf32, "T"> loc("full_like")
    %1 = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %__o24_0 = "moec.equal"(%__o13_0, %1) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi1, "T"> loc("eq_10")
    %__o25_0 = "moec.nonzero"(%__o24_0) : (tensor<?x2xi1, "T">) -> tensor<2x?xi64> loc("nonzero")
    %__o26_0 = "moec.transpose"(%__o25_0) {perm = array<i64: 1, 0>} : (tensor<2x?xi64>) -> tensor<?x2xi64> loc("nonzero")
    %2 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %3 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %4 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %5 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o34_0 = "moec.slice"(%__o26_0, %2, %3, %4, %5) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_1")
    %6 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %7 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %8 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %9 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o39_0 = "moec.slice"(%__o26_0, %6, %7, %8, %9) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_2")
    %__o41_0 = "moec.squeeze"(%__o34_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze")
    %__o43_0 = "moec.squeeze"(%__o39_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_1")
    %__o45_0 = "moec.gather"(%x, %__o41_0) {axis = 0 : i64} : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("index")
    %__o48_0 = "moec.constant"() {value = dense<[[-0.6763269, 0.29941973, 0.37509474, 0.6946831], [-0.8479656, -0.77754754, -0.29274878, 0.7931671], [0.2833253, -0.1706802, -0.086698376, 0.47314918], [0.39675418, 0.92650306, 0.09173897, -0.42183837]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32> loc("permute_1")
    %__o50_0 = "moec.matmul"(%__o45_0, %__o48_0) : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32> loc("mm_1")
    %10 = "moec.constant"() {value = dense<2> : tensor<2xi64>} : () -> tensor<2xi64>
    %__o52_0:2 = "moec.split"(%__o50_0, %10) {axis = -1 : i64} : (tensor<?x4xf32>, tensor<2xi64>) -> (tensor<?x2xf32>, tensor<?x2xf32>) loc("split_with_sizes")
    %__o53_0 = "moec.sigmoid"(%__o52_0#0) : (tensor<?x2xf32>) -> tensor<?x2xf32> loc("sigmoid")
    %__o55_0 = "moec.mul"(%__o52_0#0, %__o53_0) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_29")
    %__o57_0 = "moec.mul"(%__o55_0, %__o52_0#1) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_32")
    %__o60_0 = "moec.constant"() {value = dense<[[-0.066007175, -0.5927785, 0.595309, 0.7350106], [0.48581788, 0.00063061324, -0.28286687, 0.2532525]]> : tensor<2x4xf32>} : () -> tensor<2x4xf32> loc("permute_2")
    %__o62_0 = "moec.matmul"(%__o57_0, %__o60_0) : (tensor<?x2xf32>, tensor<2x4xf32>) -> tensor<?x4xf32> loc("mm_2")
    %__o66_0 = "moec.unsqueeze"(%__o41_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_1")
    %__o68_0 = "moec.unsqueeze"(%__o43_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_1")
    %__o70_0 = "moec.concat"(%__o66_0, %__o68_0) {axis = -1 : i64} : (tensor<?x1xi64>, tensor<?x1xi64>) -> tensor<?x2xi64> loc("index_1")
    %__o72_0 = "moec.gather_nd"(%__o20_0, %__o70_0) {batch_dims = 0 : i64} : (tensor<?x2xf32, "T">, tensor<?x2xi64>) -> tensor<?xf32> loc("index_1")
    %__o74_0 = "moec.unsqueeze"(%__o72_0) {axes = array<i64: -1>} : (tensor<?xf32>) -> tensor<?x1xf32> loc("unsqueeze")
    %__o76_0 = "moec.mul"(%__o62_0, %__o74_0) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("mul_39")
    %__o79_0 = "moec.unsqueeze"(%__o41_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_put")
    %__o80_0 = "moec.shape"(%__o79_0) {start = 0 : i64} : (tensor<?x1xi64>) -> tensor<2xi64> loc("index_put")
    %11 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %12 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %13 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put")
    %14 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put")
    %__o83_0 = "moec.slice"(%__o80_0, %11, %12, %13, %14) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put")
    %__o84_0 = "moec.shape"(%__o22_0) {start = 0 : i64} : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("index_put")
    %15 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %16 = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %17 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put")
    %18 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put")
    %__o87_0 = "moec.slice"(%__o84_0, %15, %16, %17, %18) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put")
    %__o89_0 = "moec.concat"(%__o83_0, %__o87_0) {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64> loc("index_put")
    %__o91_0 = "moec.expand"(%__o76_0, %__o89_0) : (tensor<?x4xf32>, tensor<2xi64>) -> tensor<?x4xf32> loc("index_put")
    %__o94_0 = "moec.scatter_nd"(%__o22_0, %__o79_0, %__o91_0) {reduction = "add"} : (tensor<?x4xf32, "T">, tensor<?x1xi64>, tensor<?x4xf32>) -> tensor<?x4xf32, "T"> loc("index_put")
    %19 = "moec.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64>
    %__o96_0 = "moec.equal"(%__o13_0, %19) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi1, "T"> loc("eq_29")
    %__o97_0 = "moec.nonzero"(%__o96_0) : (tensor<?x2xi1, "T">) -> tensor<2x?xi64> loc("nonzero_1")
    %__o98_0 = "moec.transpose"(%__o97_0) {perm = array<i64: 1, 0>} : (tensor<2x?xi64>) -> tensor<?x2xi64> loc("nonzero_1")
    %20 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %21 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %22 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %23 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o106_0 = "moec.slice"(%__o98_0, %20, %21, %22, %23) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_3")
    %24 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %25 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %26 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %27 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o111_0 = "moec.slice"(%__o98_0, %24, %25, %26, %27) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_4")
    %__o113_0 = "moec.squeeze"(%__o106_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_2")
    %__o115_0 = "moec.squeeze"(%__o111_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_3")
    %__o117_0 = "moec.gather"(%x, %__o113_0) {axis = 0 : i64} : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("index_2")
    %__o120_0 = "moec.constant"() {value = dense<[[-0.30679154, 0.21984792, -0.051154826, 0.26143023], [0.01579637, 0.056205593, 0.396222, 1.1511027], [-0.24633849, 0.32039618, -0.14483385, -0.73444694], [0.12420738, 0.22057813, 0.026253743, -0.7933444]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32> loc("permute_3")
    %__o122_0 = "moec.matmul"(%__o117_0, %__o120_0) : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32> loc("mm_3")
    %28 = "moec.constant"() {value = dense<2> : tensor<2xi64>} : () -> tensor<2xi64>
    %__o124_0:2 = "moec.split"(%__o122_0, %28) {axis = -1 : i64} : (tensor<?x4xf32>, tensor<2xi64>) -> (tensor<?x2xf32>, tensor<?x2xf32>) loc("split_with_sizes_1")
    %__o125_0 = "moec.sigmoid"(%__o124_0#0) : (tensor<?x2xf32>) -> tensor<?x2xf32> loc("sigmoid_1")
    %__o127_0 = "moec.mul"(%__o124_0#0, %__o125_0) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_58")
    %__o129_0 = "moec.mul"(%__o127_0, %__o124_0#1) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_61")
    %__o132_0 = "moec.constant"() {value = dense<[[-0.17394894, -1.3305552, -0.7389115, 0.023710605], [1.6281251, -0.035162315, -0.6763482, 0.502107]]> : tensor<2x4xf32>} : () -> tensor<2x4xf32> loc("permute_4")
    %__o134_0 = "moec.matmul"(%__o129_0, %__o132_0) : (tensor<?x2xf32>, tensor<2x4xf32>) -> tensor<?x4xf32> loc("mm_4")
    %__o138_0 = "moec.unsqueeze"(%__o113_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_3")
    %__o140_0 = "moec.unsqueeze"(%__o115_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_3")
    %__o142_0 = "moec.concat"(%__o138_0, %__o140_0) {axis = -1 : i64} : (tensor<?x1xi64>, tensor<?x1xi64>) -> tensor<?x2xi64> loc("index_3")
    %__o144_0 = "moec.gather_nd"(%__o20_0, %__o142_0) {batch_dims = 0 : i64} : (tensor<?x2xf32, "T">, tensor<?x2xi64>) -> tensor<?xf32> loc("index_3")
    %__o146_0 = "moec.unsqueeze"(%__o144_0) {axes = array<i64: -1>} : (tensor<?xf32>) -> tensor<?x1xf32> loc("unsqueeze_1")
    %__o148_0 = "moec.mul"(%__o134_0, %__o146_0) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("mul_68")
    %__o151_0 = "moec.unsqueeze"(%__o113_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_put_1")
    %__o152_0 = "moec.shape"(%__o151_0) {start = 0 : i64} : (tensor<?x1xi64>) -> tensor<2xi64> loc("index_put_1")
    %29 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %30 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %31 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_1")
    %32 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_1")
    %__o155_0 = "moec.slice"(%__o152_0, %29, %30, %31, %32) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_1")
    %__o156_0 = "moec.shape"(%__o94_0) {start = 0 : i64} : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("index_put_1")
    %33 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %34 = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %35 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_1")
    %36 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_1")
    %__o159_0 = "moec.slice"(%__o156_0, %33, %34, %35, %36) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_1")
    %__o161_0 = "moec.concat"(%__o155_0, %__o159_0) {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64> loc("index_put_1")
    %__o163_0 = "moec.expand"(%__o148_0, %__o161_0) : (tensor<?x4xf32>, tensor<2xi64>) -> tensor<?x4xf32> loc("index_put_1")
    %__o166_0 = "moec.scatter_nd"(%__o94_0, %__o151_0, %__o163_0) {reduction = "add"} : (tensor<?x4xf32, "T">, tensor<?x1xi64>, tensor<?x4xf32>) -> tensor<?x4xf32, "T"> loc("index_put_1")
    %37 = "moec.constant"() {value = dense<2> : tensor<i64>} : () -> tensor<i64>
    %__o168_0 = "moec.equal"(%__o13_0, %37) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi1, "T"> loc("eq_48")
    %__o169_0 = "moec.nonzero"(%__o168_0) : (tensor<?x2xi1, "T">) -> tensor<2x?xi64> loc("nonzero_2")
    %__o170_0 = "moec.transpose"(%__o169_0) {perm = array<i64: 1, 0>} : (tensor<2x?xi64>) -> tensor<?x2xi64> loc("nonzero_2")
    %38 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %39 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %40 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %41 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o178_0 = "moec.slice"(%__o170_0, %38, %39, %40, %41) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_5")
    %42 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %43 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %44 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %45 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o183_0 = "moec.slice"(%__o170_0, %42, %43, %44, %45) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_6")
    %__o185_0 = "moec.squeeze"(%__o178_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_4")
    %__o187_0 = "moec.squeeze"(%__o183_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_5")
    %__o189_0 = "moec.gather"(%x, %__o185_0) {axis = 0 : i64} : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("index_4")
    %__o192_0 = "moec.constant"() {value = dense<[[-0.33654496, -0.11516774, -0.22310859, -0.76559216], [0.4364156, -0.1958772, 0.37201035, -0.6170675], [0.5276787, 0.27164736, 0.76048976, 0.90986264], [0.08892186, -0.19757877, 1.7052513, -0.27576435]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32> loc("permute_5")
    %__o194_0 = "moec.matmul"(%__o189_0, %__o192_0) : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32> loc("mm_5")
    %46 = "moec.constant"() {value = dense<2> : tensor<2xi64>} : () -> tensor<2xi64>
    %__o196_0:2 = "moec.split"(%__o194_0, %46) {axis = -1 : i64} : (tensor<?x4xf32>, tensor<2xi64>) -> (tensor<?x2xf32>, tensor<?x2xf32>) loc("split_with_sizes_2")
    %__o197_0 = "moec.sigmoid"(%__o196_0#0) : (tensor<?x2xf32>) -> tensor<?x2xf32> loc("sigmoid_2")
    %__o199_0 = "moec.mul"(%__o196_0#0, %__o197_0) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_87")
    %__o201_0 = "moec.mul"(%__o199_0, %__o196_0#1) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_90")
    %__o204_0 = "moec.constant"() {value = dense<[[1.1638037, 0.24364455, -1.8478981, -0.16139132], [-0.9617847, 0.367602, -1.1995885, 0.19795808]]> : tensor<2x4xf32>} : () -> tensor<2x4xf32> loc("permute_6")
    %__o206_0 = "moec.matmul"(%__o201_0, %__o204_0) : (tensor<?x2xf32>, tensor<2x4xf32>) -> tensor<?x4xf32> loc("mm_6")
    %__o210_0 = "moec.unsqueeze"(%__o185_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_5")
    %__o212_0 = "moec.unsqueeze"(%__o187_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_5")
    %__o214_0 = "moec.concat"(%__o210_0, %__o212_0) {axis = -1 : i64} : (tensor<?x1xi64>, tensor<?x1xi64>) -> tensor<?x2xi64> loc("index_5")
    %__o216_0 = "moec.gather_nd"(%__o20_0, %__o214_0) {batch_dims = 0 : i64} : (tensor<?x2xf32, "T">, tensor<?x2xi64>) -> tensor<?xf32> loc("index_5")
    %__o218_0 = "moec.unsqueeze"(%__o216_0) {axes = array<i64: -1>} : (tensor<?xf32>) -> tensor<?x1xf32> loc("unsqueeze_2")
    %__o220_0 = "moec.mul"(%__o206_0, %__o218_0) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("mul_97")
    %__o223_0 = "moec.unsqueeze"(%__o185_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_put_2")
    %__o224_0 = "moec.shape"(%__o223_0) {start = 0 : i64} : (tensor<?x1xi64>) -> tensor<2xi64> loc("index_put_2")
    %47 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %48 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %49 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_2")
    %50 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_2")
    %__o227_0 = "moec.slice"(%__o224_0, %47, %48, %49, %50) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_2")
    %__o228_0 = "moec.shape"(%__o166_0) {start = 0 : i64} : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("index_put_2")
    %51 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %52 = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %53 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_2")
    %54 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_2")
    %__o231_0 = "moec.slice"(%__o228_0, %51, %52, %53, %54) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_2")
    %__o233_0 = "moec.concat"(%__o227_0, %__o231_0) {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64> loc("index_put_2")
    %__o235_0 = "moec.expand"(%__o220_0, %__o233_0) : (tensor<?x4xf32>, tensor<2xi64>) -> tensor<?x4xf32> loc("index_put_2")
    %__o238_0 = "moec.scatter_nd"(%__o166_0, %__o223_0, %__o235_0) {reduction = "add"} : (tensor<?x4xf32, "T">, tensor<?x1xi64>, tensor<?x4xf32>) -> tensor<?x4xf32, "T"> loc("index_put_2")
    %55 = "moec.constant"() {value = dense<3> : tensor<i64>} : () -> tensor<i64>
    %__o240_0 = "moec.equal"(%__o13_0, %55) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi1, "T"> loc("eq_67")
    %__o241_0 = "moec.nonzero"(%__o240_0) : (tensor<?x2xi1, "T">) -> tensor<2x?xi64> loc("nonzero_3")
    %__o242_0 = "moec.transpose"(%__o241_0) {perm = array<i64: 1, 0>} : (tensor<2x?xi64>) -> tensor<?x2xi64> loc("nonzero_3")
    %56 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %57 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %58 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %59 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o250_0 = "moec.slice"(%__o242_0, %56, %57, %58, %59) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_7")
    %60 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %61 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %62 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %63 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o255_0 = "moec.slice"(%__o242_0, %60, %61, %62, %63) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_8")
    %__o257_0 = "moec.squeeze"(%__o250_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_6")
    %__o259_0 = "moec.squeeze"(%__o255_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_7")
    %__o261_0 = "moec.gather"(%x, %__o257_0) {axis = 0 : i64} : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("index_6")
    %__o264_0 = "moec.constant"() {value = dense<[[-0.28462404, -0.739087, -0.814663, -0.5334902], [0.4599857, 1.2836164, -0.27487183, 0.5574698], [0.55540806, -0.2365599, -0.23991713, -0.070335716], [0.64493704, 0.16777538, -0.24984077, 0.4028768]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32> loc("permute_7")
    %__o266_0 = "moec.matmul"(%__o261_0, %__o264_0) : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32> loc("mm_7")
    %64 = "moec.constant"() {value = dense<2> : tensor<2xi64>} : () -> tensor<2xi64>
    %__o268_0:2 = "moec.split"(%__o266_0, %64) {axis = -1 : i64} : (tensor<?x4xf32>, tensor<2xi64>) -> (tensor<?x2xf32>, tensor<?x2xf32>) loc("split_with_sizes_3")
    %__o269_0 = "moec.sigmoid"(%__o268_0#0) : (tensor<?x2xf32>) -> tensor<?x2xf32> loc("sigmoid_3")
    %__o271_0 = "moec.mul"(%__o268_0#0, %__o269_0) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_116")
    %__o273_0 = "moec.mul"(%__o271_0, %__o268_0#1) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_119")
    %__o276_0 = "moec.constant"() {value = dense<[[0.17460333, 0.2390062, 0.32310548, 0.5524681], [0.054367322, 0.32131058, -0.61191, -0.65533906]]> : tensor<2x4xf32>} : () -> tensor<2x4xf32> loc("permute_8")
    %__o278_0 = "moec.matmul"(%__o273_0, %__o276_0) : (tensor<?x2xf32>, tensor<2x4xf32>) -> tensor<?x4xf32> loc("mm_8")
    %__o282_0 = "moec.unsqueeze"(%__o257_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_7")
    %__o284_0 = "moec.unsqueeze"(%__o259_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_7")
    %__o286_0 = "moec.concat"(%__o282_0, %__o284_0) {axis = -1 : i64} : (tensor<?x1xi64>, tensor<?x1xi64>) -> tensor<?x2xi64> loc("index_7")
    %__o288_0 = "moec.gather_nd"(%__o20_0, %__o286_0) {batch_dims = 0 : i64} : (tensor<?x2xf32, "T">, tensor<?x2xi64>) -> tensor<?xf32> loc("index_7")
    %__o290_0 = "moec.unsqueeze"(%__o288_0) {axes = array<i64: -1>} : (tensor<?xf32>) -> tensor<?x1xf32> loc("unsqueeze_3")
    %__o292_0 = "moec.mul"(%__o278_0, %__o290_0) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("mul_126")
    %__o295_0 = "moec.unsqueeze"(%__o257_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_put_3")
    %__o296_0 = "moec.shape"(%__o295_0) {start = 0 : i64} : (tensor<?x1xi64>) -> tensor<2xi64> loc("index_put_3")
    %65 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %66 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %67 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_3")
    %68 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_3")
    %__o299_0 = "moec.slice"(%__o296_0, %65, %66, %67, %68) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_3")
    %__o300_0 = "moec.shape"(%__o238_0) {start = 0 : i64} : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("index_put_3")
    %69 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %70 = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %71 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_3")
    %72 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_3")
    %__o303_0 = "moec.slice"(%__o300_0, %69, %70, %71, %72) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_3")
    %__o305_0 = "moec.concat"(%__o299_0, %__o303_0) {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64> loc("index_put_3")
    %__o307_0 = "moec.expand"(%__o292_0, %__o305_0) : (tensor<?x4xf32>, tensor<2xi64>) -> tensor<?x4xf32> loc("index_put_3")
    %__o310_0 = "moec.scatter_nd"(%__o238_0, %__o295_0, %__o307_0) {reduction = "add"} : (tensor<?x4xf32, "T">, tensor<?x1xi64>, tensor<?x4xf32>) -> tensor<?x4xf32, "T"> loc("index_put_3")
    func.return %__o310_0 : tensor<?x4xf32, "T">
  }
}
// ----- expected
module attributes {moec.frontend = "torch.export", moec.moe_layers = ["{\"D\": 4, \"E\": 4, \"F\": 2, \"activation\": \"swiglu\", \"correction_bias\": false, \"family\": \"granite-moe\", \"k\": 2, \"layer\": \"moe0\", \"replaced_node_count\": 120, \"replaced_nodes\": [\"mm\", \"argmax\", \"scatter\", \"scatter\", \"scatter\", \"argmax_1\", \"cat\", \"gather\", \"sum_1\", \"div\", \"eq_10\", \"nonzero\", \"nonzero\", \"slice_1\", \"slice_2\", \"squeeze\", \"squeeze_1\", \"index\", \"mm_1\", \"split_with_sizes\", \"sigmoid\", \"mul_29\", \"mul_32\", \"mm_2\", \"index_1\", \"index_1\", \"index_1\", \"index_1\", \"unsqueeze\", \"mul_39\", \"index_put\", \"index_put\", \"index_put\", \"index_put\", \"index_put\", \"index_put\", \"eq_29\", \"nonzero_1\", \"nonzero_1\", \"slice_3\", \"slice_4\", \"squeeze_2\", \"squeeze_3\", \"index_2\", \"mm_3\", \"split_with_sizes_1\", \"sigmoid_1\", \"mul_58\", \"mul_61\", \"mm_4\", \"index_3\", \"index_3\", \"index_3\", \"index_3\", \"unsqueeze_1\", \"mul_68\", \"index_put_1\", \"index_put_1\", \"index_put_1\", \"index_put_1\", \"index_put_1\", \"index_put_1\", \"index_put_1\", \"index_put_1\", \"...\"], \"routing\": {\"capacity\": 0, \"k\": 2, \"norm\": \"none\", \"norm_eps\": 0.0, \"post\": \"softmax\", \"scale\": 1.0, \"scoring\": \"none\"}, \"routing_weight_scales\": \"expert output\", \"shared_F\": null, \"shared_expert_gate\": false, \"shared_experts\": 0, \"source\": \"recognized\"}"], moec.opset = 25 : i64, moec.source = "ArgmaxChain"} {
  func.func @main(%x: tensor<?x4xf32, "T">) -> (tensor<?x4xf32, "T">) attributes {moec.inputs = ["x"], moec.outputs = ["output"]} {
    %__o1_0 = "moec.constant"() {value = dense<[[-0.00374341, -0.19257718, -0.044372022, -0.47767425], [0.2682218, 0.13407868, 0.13230628, -0.33114105], [-0.41152257, -0.00990659, -0.15110654, -0.20611155], [-0.3679695, 0.39644474, -0.098282695, 0.018521786]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32> loc("permute")
    %__o3_0 = "moec.matmul"(%x, %__o1_0) : (tensor<?x4xf32, "T">, tensor<4x4xf32>) -> tensor<?x4xf32, "T"> loc("mm")
    %__o4_0 = "moec.argmax"(%__o3_0) {axis = -1 : i64} : (tensor<?x4xf32, "T">) -> tensor<?x1xi64, "T"> loc("argmax")
    %0 = "moec.constant"() {value = dense<0xFF800000> : tensor<f32>} : () -> tensor<f32>
    %__o5_0 = "moec.shape"(%__o4_0) : (tensor<?x1xi64, "T">) -> tensor<2xi64> loc("scatter")
    %__o7_0 = "moec.expand"(%0, %__o5_0) : (tensor<f32>, tensor<2xi64>) -> tensor<?x1xf32, "T"> loc("scatter")
    %__o10_0 = "moec.scatter_elements"(%__o3_0, %__o4_0, %__o7_0) {axis = -1 : i64} : (tensor<?x4xf32, "T">, tensor<?x1xi64, "T">, tensor<?x1xf32, "T">) -> tensor<?x4xf32, "T"> loc("scatter")
    %__o11_0 = "moec.argmax"(%__o10_0) {axis = -1 : i64} : (tensor<?x4xf32, "T">) -> tensor<?x1xi64, "T"> loc("argmax_1")
    %__o13_0 = "moec.concat"(%__o4_0, %__o11_0) {axis = -1 : i64} : (tensor<?x1xi64, "T">, tensor<?x1xi64, "T">) -> tensor<?x2xi64, "T"> loc("cat")
    %__o14_0 = "moec.softmax"(%__o3_0) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T"> loc("_softmax")
    %__o16_0 = "moec.gather_elements"(%__o14_0, %__o13_0) {axis = -1 : i64} : (tensor<?x4xf32, "T">, tensor<?x2xi64, "T">) -> tensor<?x2xf32, "T"> loc("gather")
    %__o18_0 = "moec.reduce_sum"(%__o16_0) {axes = array<i64: -1>} : (tensor<?x2xf32, "T">) -> tensor<?x1xf32, "T"> loc("sum_1")
    %__o20_0 = "moec.div"(%__o16_0, %__o18_0) : (tensor<?x2xf32, "T">, tensor<?x1xf32, "T">) -> tensor<?x2xf32, "T"> loc("div")
    %__o21_0 = "moec.shape"(%x) : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("full_like")
    %__o22_0 = "moec.constant_of_shape"(%__o21_0) {value = dense<[0.0]> : tensor<1xf32>} : (tensor<2xi64>) -> tensor<?x4xf32, "T"> loc("full_like")
    %1 = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %__o24_0 = "moec.equal"(%__o13_0, %1) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi1, "T"> loc("eq_10")
    %__o25_0 = "moec.nonzero"(%__o24_0) : (tensor<?x2xi1, "T">) -> tensor<2x?xi64> loc("nonzero")
    %__o26_0 = "moec.transpose"(%__o25_0) {perm = array<i64: 1, 0>} : (tensor<2x?xi64>) -> tensor<?x2xi64> loc("nonzero")
    %2 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %3 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %4 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %5 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o34_0 = "moec.slice"(%__o26_0, %2, %3, %4, %5) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_1")
    %6 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %7 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %8 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %9 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o39_0 = "moec.slice"(%__o26_0, %6, %7, %8, %9) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_2")
    %__o41_0 = "moec.squeeze"(%__o34_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze")
    %__o43_0 = "moec.squeeze"(%__o39_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_1")
    %__o45_0 = "moec.gather"(%x, %__o41_0) : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("index")
    %__o48_0 = "moec.constant"() {value = dense<[[-0.6763269, 0.29941973, 0.37509474, 0.6946831], [-0.8479656, -0.77754754, -0.29274878, 0.7931671], [0.2833253, -0.1706802, -0.086698376, 0.47314918], [0.39675418, 0.92650306, 0.09173897, -0.42183837]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32> loc("permute_1")
    %__o50_0 = "moec.matmul"(%__o45_0, %__o48_0) : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32> loc("mm_1")
    %10 = "moec.constant"() {value = dense<2> : tensor<2xi64>} : () -> tensor<2xi64>
    %__o52_0:2 = "moec.split"(%__o50_0, %10) {axis = -1 : i64} : (tensor<?x4xf32>, tensor<2xi64>) -> (tensor<?x2xf32>, tensor<?x2xf32>) loc("split_with_sizes")
    %__o53_0 = "moec.sigmoid"(%__o52_0#0) : (tensor<?x2xf32>) -> tensor<?x2xf32> loc("sigmoid")
    %__o55_0 = "moec.mul"(%__o52_0#0, %__o53_0) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_29")
    %__o57_0 = "moec.mul"(%__o55_0, %__o52_0#1) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_32")
    %__o60_0 = "moec.constant"() {value = dense<[[-0.066007175, -0.5927785, 0.595309, 0.7350106], [0.48581788, 0.00063061324, -0.28286687, 0.2532525]]> : tensor<2x4xf32>} : () -> tensor<2x4xf32> loc("permute_2")
    %__o62_0 = "moec.matmul"(%__o57_0, %__o60_0) : (tensor<?x2xf32>, tensor<2x4xf32>) -> tensor<?x4xf32> loc("mm_2")
    %__o66_0 = "moec.unsqueeze"(%__o41_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_1")
    %__o68_0 = "moec.unsqueeze"(%__o43_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_1")
    %__o70_0 = "moec.concat"(%__o66_0, %__o68_0) {axis = -1 : i64} : (tensor<?x1xi64>, tensor<?x1xi64>) -> tensor<?x2xi64> loc("index_1")
    %__o72_0 = "moec.gather_nd"(%__o20_0, %__o70_0) : (tensor<?x2xf32, "T">, tensor<?x2xi64>) -> tensor<?xf32> loc("index_1")
    %__o74_0 = "moec.unsqueeze"(%__o72_0) {axes = array<i64: -1>} : (tensor<?xf32>) -> tensor<?x1xf32> loc("unsqueeze")
    %__o76_0 = "moec.mul"(%__o62_0, %__o74_0) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("mul_39")
    %__o79_0 = "moec.unsqueeze"(%__o41_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_put")
    %__o80_0 = "moec.shape"(%__o79_0) : (tensor<?x1xi64>) -> tensor<2xi64> loc("index_put")
    %11 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %12 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %13 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put")
    %14 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put")
    %__o83_0 = "moec.slice"(%__o80_0, %11, %12, %13, %14) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put")
    %__o84_0 = "moec.shape"(%__o22_0) : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("index_put")
    %15 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %16 = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %17 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put")
    %18 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put")
    %__o87_0 = "moec.slice"(%__o84_0, %15, %16, %17, %18) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put")
    %__o89_0 = "moec.concat"(%__o83_0, %__o87_0) {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64> loc("index_put")
    %__o91_0 = "moec.expand"(%__o76_0, %__o89_0) : (tensor<?x4xf32>, tensor<2xi64>) -> tensor<?x4xf32> loc("index_put")
    %__o94_0 = "moec.scatter_nd"(%__o22_0, %__o79_0, %__o91_0) {reduction = "add"} : (tensor<?x4xf32, "T">, tensor<?x1xi64>, tensor<?x4xf32>) -> tensor<?x4xf32, "T"> loc("index_put")
    %19 = "moec.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64>
    %__o96_0 = "moec.equal"(%__o13_0, %19) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi1, "T"> loc("eq_29")
    %__o97_0 = "moec.nonzero"(%__o96_0) : (tensor<?x2xi1, "T">) -> tensor<2x?xi64> loc("nonzero_1")
    %__o98_0 = "moec.transpose"(%__o97_0) {perm = array<i64: 1, 0>} : (tensor<2x?xi64>) -> tensor<?x2xi64> loc("nonzero_1")
    %20 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %21 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %22 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %23 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o106_0 = "moec.slice"(%__o98_0, %20, %21, %22, %23) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_3")
    %24 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %25 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %26 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %27 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o111_0 = "moec.slice"(%__o98_0, %24, %25, %26, %27) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_4")
    %__o113_0 = "moec.squeeze"(%__o106_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_2")
    %__o115_0 = "moec.squeeze"(%__o111_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_3")
    %__o117_0 = "moec.gather"(%x, %__o113_0) : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("index_2")
    %__o120_0 = "moec.constant"() {value = dense<[[-0.30679154, 0.21984792, -0.051154826, 0.26143023], [0.01579637, 0.056205593, 0.396222, 1.1511027], [-0.24633849, 0.32039618, -0.14483385, -0.73444694], [0.12420738, 0.22057813, 0.026253743, -0.7933444]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32> loc("permute_3")
    %__o122_0 = "moec.matmul"(%__o117_0, %__o120_0) : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32> loc("mm_3")
    %28 = "moec.constant"() {value = dense<2> : tensor<2xi64>} : () -> tensor<2xi64>
    %__o124_0:2 = "moec.split"(%__o122_0, %28) {axis = -1 : i64} : (tensor<?x4xf32>, tensor<2xi64>) -> (tensor<?x2xf32>, tensor<?x2xf32>) loc("split_with_sizes_1")
    %__o125_0 = "moec.sigmoid"(%__o124_0#0) : (tensor<?x2xf32>) -> tensor<?x2xf32> loc("sigmoid_1")
    %__o127_0 = "moec.mul"(%__o124_0#0, %__o125_0) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_58")
    %__o129_0 = "moec.mul"(%__o127_0, %__o124_0#1) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_61")
    %__o132_0 = "moec.constant"() {value = dense<[[-0.17394894, -1.3305552, -0.7389115, 0.023710605], [1.6281251, -0.035162315, -0.6763482, 0.502107]]> : tensor<2x4xf32>} : () -> tensor<2x4xf32> loc("permute_4")
    %__o134_0 = "moec.matmul"(%__o129_0, %__o132_0) : (tensor<?x2xf32>, tensor<2x4xf32>) -> tensor<?x4xf32> loc("mm_4")
    %__o138_0 = "moec.unsqueeze"(%__o113_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_3")
    %__o140_0 = "moec.unsqueeze"(%__o115_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_3")
    %__o142_0 = "moec.concat"(%__o138_0, %__o140_0) {axis = -1 : i64} : (tensor<?x1xi64>, tensor<?x1xi64>) -> tensor<?x2xi64> loc("index_3")
    %__o144_0 = "moec.gather_nd"(%__o20_0, %__o142_0) : (tensor<?x2xf32, "T">, tensor<?x2xi64>) -> tensor<?xf32> loc("index_3")
    %__o146_0 = "moec.unsqueeze"(%__o144_0) {axes = array<i64: -1>} : (tensor<?xf32>) -> tensor<?x1xf32> loc("unsqueeze_1")
    %__o148_0 = "moec.mul"(%__o134_0, %__o146_0) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("mul_68")
    %__o151_0 = "moec.unsqueeze"(%__o113_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_put_1")
    %__o152_0 = "moec.shape"(%__o151_0) : (tensor<?x1xi64>) -> tensor<2xi64> loc("index_put_1")
    %29 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %30 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %31 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_1")
    %32 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_1")
    %__o155_0 = "moec.slice"(%__o152_0, %29, %30, %31, %32) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_1")
    %__o156_0 = "moec.shape"(%__o94_0) : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("index_put_1")
    %33 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %34 = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %35 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_1")
    %36 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_1")
    %__o159_0 = "moec.slice"(%__o156_0, %33, %34, %35, %36) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_1")
    %__o161_0 = "moec.concat"(%__o155_0, %__o159_0) {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64> loc("index_put_1")
    %__o163_0 = "moec.expand"(%__o148_0, %__o161_0) : (tensor<?x4xf32>, tensor<2xi64>) -> tensor<?x4xf32> loc("index_put_1")
    %__o166_0 = "moec.scatter_nd"(%__o94_0, %__o151_0, %__o163_0) {reduction = "add"} : (tensor<?x4xf32, "T">, tensor<?x1xi64>, tensor<?x4xf32>) -> tensor<?x4xf32, "T"> loc("index_put_1")
    %37 = "moec.constant"() {value = dense<2> : tensor<i64>} : () -> tensor<i64>
    %__o168_0 = "moec.equal"(%__o13_0, %37) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi1, "T"> loc("eq_48")
    %__o169_0 = "moec.nonzero"(%__o168_0) : (tensor<?x2xi1, "T">) -> tensor<2x?xi64> loc("nonzero_2")
    %__o170_0 = "moec.transpose"(%__o169_0) {perm = array<i64: 1, 0>} : (tensor<2x?xi64>) -> tensor<?x2xi64> loc("nonzero_2")
    %38 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %39 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %40 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %41 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o178_0 = "moec.slice"(%__o170_0, %38, %39, %40, %41) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_5")
    %42 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %43 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %44 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %45 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o183_0 = "moec.slice"(%__o170_0, %42, %43, %44, %45) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_6")
    %__o185_0 = "moec.squeeze"(%__o178_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_4")
    %__o187_0 = "moec.squeeze"(%__o183_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_5")
    %__o189_0 = "moec.gather"(%x, %__o185_0) : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("index_4")
    %__o192_0 = "moec.constant"() {value = dense<[[-0.33654496, -0.11516774, -0.22310859, -0.76559216], [0.4364156, -0.1958772, 0.37201035, -0.6170675], [0.5276787, 0.27164736, 0.76048976, 0.90986264], [0.08892186, -0.19757877, 1.7052513, -0.27576435]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32> loc("permute_5")
    %__o194_0 = "moec.matmul"(%__o189_0, %__o192_0) : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32> loc("mm_5")
    %46 = "moec.constant"() {value = dense<2> : tensor<2xi64>} : () -> tensor<2xi64>
    %__o196_0:2 = "moec.split"(%__o194_0, %46) {axis = -1 : i64} : (tensor<?x4xf32>, tensor<2xi64>) -> (tensor<?x2xf32>, tensor<?x2xf32>) loc("split_with_sizes_2")
    %__o197_0 = "moec.sigmoid"(%__o196_0#0) : (tensor<?x2xf32>) -> tensor<?x2xf32> loc("sigmoid_2")
    %__o199_0 = "moec.mul"(%__o196_0#0, %__o197_0) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_87")
    %__o201_0 = "moec.mul"(%__o199_0, %__o196_0#1) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_90")
    %__o204_0 = "moec.constant"() {value = dense<[[1.1638037, 0.24364455, -1.8478981, -0.16139132], [-0.9617847, 0.367602, -1.1995885, 0.19795808]]> : tensor<2x4xf32>} : () -> tensor<2x4xf32> loc("permute_6")
    %__o206_0 = "moec.matmul"(%__o201_0, %__o204_0) : (tensor<?x2xf32>, tensor<2x4xf32>) -> tensor<?x4xf32> loc("mm_6")
    %__o210_0 = "moec.unsqueeze"(%__o185_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_5")
    %__o212_0 = "moec.unsqueeze"(%__o187_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_5")
    %__o214_0 = "moec.concat"(%__o210_0, %__o212_0) {axis = -1 : i64} : (tensor<?x1xi64>, tensor<?x1xi64>) -> tensor<?x2xi64> loc("index_5")
    %__o216_0 = "moec.gather_nd"(%__o20_0, %__o214_0) : (tensor<?x2xf32, "T">, tensor<?x2xi64>) -> tensor<?xf32> loc("index_5")
    %__o218_0 = "moec.unsqueeze"(%__o216_0) {axes = array<i64: -1>} : (tensor<?xf32>) -> tensor<?x1xf32> loc("unsqueeze_2")
    %__o220_0 = "moec.mul"(%__o206_0, %__o218_0) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("mul_97")
    %__o223_0 = "moec.unsqueeze"(%__o185_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_put_2")
    %__o224_0 = "moec.shape"(%__o223_0) : (tensor<?x1xi64>) -> tensor<2xi64> loc("index_put_2")
    %47 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %48 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %49 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_2")
    %50 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_2")
    %__o227_0 = "moec.slice"(%__o224_0, %47, %48, %49, %50) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_2")
    %__o228_0 = "moec.shape"(%__o166_0) : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("index_put_2")
    %51 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %52 = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %53 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_2")
    %54 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_2")
    %__o231_0 = "moec.slice"(%__o228_0, %51, %52, %53, %54) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_2")
    %__o233_0 = "moec.concat"(%__o227_0, %__o231_0) {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64> loc("index_put_2")
    %__o235_0 = "moec.expand"(%__o220_0, %__o233_0) : (tensor<?x4xf32>, tensor<2xi64>) -> tensor<?x4xf32> loc("index_put_2")
    %__o238_0 = "moec.scatter_nd"(%__o166_0, %__o223_0, %__o235_0) {reduction = "add"} : (tensor<?x4xf32, "T">, tensor<?x1xi64>, tensor<?x4xf32>) -> tensor<?x4xf32, "T"> loc("index_put_2")
    %55 = "moec.constant"() {value = dense<3> : tensor<i64>} : () -> tensor<i64>
    %__o240_0 = "moec.equal"(%__o13_0, %55) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi1, "T"> loc("eq_67")
    %__o241_0 = "moec.nonzero"(%__o240_0) : (tensor<?x2xi1, "T">) -> tensor<2x?xi64> loc("nonzero_3")
    %__o242_0 = "moec.transpose"(%__o241_0) {perm = array<i64: 1, 0>} : (tensor<2x?xi64>) -> tensor<?x2xi64> loc("nonzero_3")
    %56 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %57 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %58 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %59 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o250_0 = "moec.slice"(%__o242_0, %56, %57, %58, %59) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_7")
    %60 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %61 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %62 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %63 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o255_0 = "moec.slice"(%__o242_0, %60, %61, %62, %63) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_8")
    %__o257_0 = "moec.squeeze"(%__o250_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_6")
    %__o259_0 = "moec.squeeze"(%__o255_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_7")
    %__o261_0 = "moec.gather"(%x, %__o257_0) : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("index_6")
    %__o264_0 = "moec.constant"() {value = dense<[[-0.28462404, -0.739087, -0.814663, -0.5334902], [0.4599857, 1.2836164, -0.27487183, 0.5574698], [0.55540806, -0.2365599, -0.23991713, -0.070335716], [0.64493704, 0.16777538, -0.24984077, 0.4028768]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32> loc("permute_7")
    %__o266_0 = "moec.matmul"(%__o261_0, %__o264_0) : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32> loc("mm_7")
    %64 = "moec.constant"() {value = dense<2> : tensor<2xi64>} : () -> tensor<2xi64>
    %__o268_0:2 = "moec.split"(%__o266_0, %64) {axis = -1 : i64} : (tensor<?x4xf32>, tensor<2xi64>) -> (tensor<?x2xf32>, tensor<?x2xf32>) loc("split_with_sizes_3")
    %__o269_0 = "moec.sigmoid"(%__o268_0#0) : (tensor<?x2xf32>) -> tensor<?x2xf32> loc("sigmoid_3")
    %__o271_0 = "moec.mul"(%__o268_0#0, %__o269_0) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_116")
    %__o273_0 = "moec.mul"(%__o271_0, %__o268_0#1) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_119")
    %__o276_0 = "moec.constant"() {value = dense<[[0.17460333, 0.2390062, 0.32310548, 0.5524681], [0.054367322, 0.32131058, -0.61191, -0.65533906]]> : tensor<2x4xf32>} : () -> tensor<2x4xf32> loc("permute_8")
    %__o278_0 = "moec.matmul"(%__o273_0, %__o276_0) : (tensor<?x2xf32>, tensor<2x4xf32>) -> tensor<?x4xf32> loc("mm_8")
    %__o282_0 = "moec.unsqueeze"(%__o257_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_7")
    %__o284_0 = "moec.unsqueeze"(%__o259_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_7")
    %__o286_0 = "moec.concat"(%__o282_0, %__o284_0) {axis = -1 : i64} : (tensor<?x1xi64>, tensor<?x1xi64>) -> tensor<?x2xi64> loc("index_7")
    %__o288_0 = "moec.gather_nd"(%__o20_0, %__o286_0) : (tensor<?x2xf32, "T">, tensor<?x2xi64>) -> tensor<?xf32> loc("index_7")
    %__o290_0 = "moec.unsqueeze"(%__o288_0) {axes = array<i64: -1>} : (tensor<?xf32>) -> tensor<?x1xf32> loc("unsqueeze_3")
    %__o292_0 = "moec.mul"(%__o278_0, %__o290_0) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("mul_126")
    %__o295_0 = "moec.unsqueeze"(%__o257_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_put_3")
    %__o296_0 = "moec.shape"(%__o295_0) : (tensor<?x1xi64>) -> tensor<2xi64> loc("index_put_3")
    %65 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %66 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %67 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_3")
    %68 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_3")
    %__o299_0 = "moec.slice"(%__o296_0, %65, %66, %67, %68) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_3")
    %__o300_0 = "moec.shape"(%__o238_0) : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("index_put_3")
    %69 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %70 = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %71 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_3")
    %72 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_3")
    %__o303_0 = "moec.slice"(%__o300_0, %69, %70, %71, %72) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_3")
    %__o305_0 = "moec.concat"(%__o299_0, %__o303_0) {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64> loc("index_put_3")
    %__o307_0 = "moec.expand"(%__o292_0, %__o305_0) : (tensor<?x4xf32>, tensor<2xi64>) -> tensor<?x4xf32> loc("index_put_3")
    %__o310_0 = "moec.scatter_nd"(%__o238_0, %__o295_0, %__o307_0) {reduction = "add"} : (tensor<?x4xf32, "T">, tensor<?x1xi64>, tensor<?x4xf32>) -> tensor<?x4xf32, "T"> loc("index_put_3")
    %experts_w_in = "moec.constant"() {value = dense_resource<experts_w_in> : tensor<4x4x4xf32>} : () -> tensor<4x4x4xf32>
    %experts_w_out = "moec.constant"() {value = dense_resource<experts_w_out> : tensor<4x4x2xf32>} : () -> tensor<4x4x2xf32>
    %73:2 = "moe.route"(%__o3_0) {k = 2 : i64, post = "softmax", scoring = "none"} : (tensor<?x4xf32, "T">) -> (tensor<?x2xf32, "T">, tensor<?x2xi64, "T">) loc("moe.route")
    %74:2 = "moe.dispatch"(%73#1) {num_experts = 4 : i64} : (tensor<?x2xi64, "T">) -> (tensor<?xi64>, tensor<5xi64>) loc("moe.dispatch")
    %75 = "moe.experts"(%x, %73#1, %74#0, %74#1, %experts_w_in, %experts_w_out) : (tensor<?x4xf32, "T">, tensor<?x2xi64, "T">, tensor<?xi64>, tensor<5xi64>, tensor<4x4x4xf32>, tensor<4x4x2xf32>) -> tensor<?x2x4xf32, "T"> loc("moe.experts")
    %76 = "moe.combine"(%75, %73#0) {layer = "moe0"} : (tensor<?x2x4xf32, "T">, tensor<?x2xf32, "T">) -> tensor<?x4xf32, "T"> loc("moe.combine")
    func.return %76 : tensor<?x4xf32, "T">
  }
}
