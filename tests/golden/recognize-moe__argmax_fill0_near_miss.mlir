module attributes {moec.frontend = "torch.export", moec.opset = 25 : i64, moec.source = "ArgmaxFill0"} {
  func.func @main(%x: tensor<?x4xf32, "T">) -> (tensor<?x4xf32, "T">) attributes {moec.inputs = ["x"], moec.outputs = ["output"]} {
    %__o1_0 = "moec.constant"() {value = dense<[[-0.00374341, -0.19257718, -0.044372022, -0.47767425], [0.2682218, 0.13407868, 0.13230628, -0.33114105], [-0.41152257, -0.00990659, -0.15110654, -0.20611155], [-0.3679695, 0.39644474, -0.098282695, 0.018521786]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32> loc("permute")
    %__o3_0 = "moec.matmul"(%x, %__o1_0) : (tensor<?x4xf32, "T">, tensor<4x4xf32>) -> tensor<?x4xf32, "T"> loc("mm")
    %0 = "moec.constant"() {value = dense<0.5> : tensor<f32>} : () -> tensor<f32>
    %__o5_0 = "moec.sub"(%__o3_0, %0) : (tensor<?x4xf32, "T">, tensor<f32>) -> tensor<?x4xf32, "T"> loc("sub_1")
    %__o6_0 = "moec.argmax"(%__o5_0) {axis = -1 : i64, keepdims = true, select_last_index = false} : (tensor<?x4xf32, "T">) -> tensor<?x1xi64, "T"> loc("argmax")
    %1 = "moec.constant"() {value = dense<0.0> : tensor<f32>} : () -> tensor<f32>
    %__o7_0 = "moec.shape"(%__o6_0) {start = 0 : i64} : (tensor<?x1xi64, "T">) -> tensor<2xi64> loc("scatter")
    %__o9_0 = "moec.expand"(%1, %__o7_0) : (tensor<f32>, tensor<2xi64>) -> tensor<?x1xf32, "T"> loc("scatter")
    %__o12_0 = "moec.scatter_elements"(%__o5_0, %__o6_0, %__o9_0) {axis = -1 : i64, reduction = "none"} : (tensor<?x4xf32, "T">, tensor<?x1xi64, "T">, tensor<?x1xf32, "T">) -> tensor<?x4xf32, "T"> loc("scatter")
    %__o13_0 = "moec.argmax"(%__o12_0) {axis = -1 : i64, keepdims = true, select_last_index = false} : (tensor<?x4xf32, "T">) -> tensor<?x1xi64, "T"> loc("argmax_1")
    %__o15_0 = "moec.concat"(%__o6_0, %__o13_0) {axis = -1 : i64} : (tensor<?x1xi64, "T">, tensor<?x1xi64, "T">) -> tensor<?x2xi64, "T"> loc("cat")
    %__o16_0 = "moec.softmax"(%__o5_0) {axis = -1 : i64} : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T"> loc("_softmax")
    %__o18_0 = "moec.gather_elements"(%__o16_0, %__o15_0) {axis = -1 : i64} : (tensor<?x4xf32, "T">, tensor<?x2xi64, "T">) -> tensor<?x2xf32, "T"> loc("gather")
    %__o20_0 = "moec.reduce_sum"(%__o18_0) {axes = array<i64: -1>, keepdims = true, noop_with_empty_axes = false} : (tensor<?x2xf32, "T">) -> tensor<?x1xf32, "T"> loc("sum_1")
    %__o22_0 = "moec.div"(%__o18_0, %__o20_0) : (tensor<?x2xf32, "T">, tensor<?x1xf32, "T">) -> tensor<?x2xf32, "T"> loc("div")
    %__o23_0 = "moec.shape"(%x) {start = 0 : i64} : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("full_like")
    %__o24_0 = "moec.constant_of_shape"(%__o23_0) {value = dense<[0.0]> : tensor<1xf32>} : (tensor<2xi64>) -> tensor<?x4xf32, "T"> loc("full_like")
    %2 = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %__o26_0 = "moec.equal"(%__o15_0, %2) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi1, "T"> loc("eq_11")
    %__o27_0 = "moec.nonzero"(%__o26_0) : (tensor<?x2xi1, "T">) -> tensor<2x?xi64> loc("nonzero")
    %__o28_0 = "moec.transpose"(%__o27_0) {perm = array<i64: 1, 0>} : (tensor<2x?xi64>) -> tensor<?x2xi64> loc("nonzero")
    %3 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %4 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %5 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %6 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o36_0 = "moec.slice"(%__o28_0, %3, %4, %5, %6) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_1")
    %7 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %8 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %9 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %10 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o41_0 = "moec.slice"(%__o28_0, %7, %8, %9, %10) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_2")
    %__o43_0 = "moec.squeeze"(%__o36_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze")
    %__o45_0 = "moec.squeeze"(%__o41_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_1")
    %__o47_0 = "moec.gather"(%x, %__o43_0) {axis = 0 : i64} : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("index")
    %__o50_0 = "moec.constant"() {value = dense<[[-0.6763269, 0.29941973, 0.37509474, 0.6946831], [-0.8479656, -0.77754754, -0.29274878, 0.7931671], [0.2833253, -0.1706802, -0.086698376, 0.47314918], [0.39675418, 0.92650306, 0.09173897, -0.42183837]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32> loc("permute_1")
    %__o52_0 = "moec.matmul"(%__o47_0, %__o50_0) : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32> loc("mm_1")
    %11 = "moec.constant"() {value = dense<2> : tensor<2xi64>} : () -> tensor<2xi64>
    %__o54_0:2 = "moec.split"(%__o52_0, %11) {axis = -1 : i64} : (tensor<?x4xf32>, tensor<2xi64>) -> (tensor<?x2xf32>, tensor<?x2xf32>) loc("split_with_sizes")
    %__o55_0 = "moec.sigmoid"(%__o54_0#0) : (tensor<?x2xf32>) -> tensor<?x2xf32> loc("sigmoid")
    %__o57_0 = "moec.mul"(%__o54_0#0, %__o55_0) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_31")
    %__o59_0 = "moec.mul"(%__o57_0, %__o54_0#1) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_34")
    %__o62_0 = "moec.constant"() {value = dense<[[-0.066007175, -0.5927785, 0.595309, 0.7350106], [0.48581788, 0.00063061324, -0.28286687, 0.2532525]]> : tensor<2x4xf32>} : () -> tensor<2x4xf32> loc("permute_2")
    %__o64_0 = "moec.matmul"(%__o59_0, %__o62_0) : (tensor<?x2xf32>, tensor<2x4xf32>) -> tensor<?x4xf32> loc("mm_2")
    %__o68_0 = "moec.unsqueeze"(%__o43_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_1")
    %__o70_0 = "moec.unsqueeze"(%__o45_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_1")
    %__o72_0 = "moec.concat"(%__o68_0, %__o70_0) {axis = -1 : i64} : (tensor<?x1xi64>, tensor<?x1xi64>) -> tensor<?x2xi64> loc("index_1")
    %__o74_0 = "moec.gather_nd"(%__o22_0, %__o72_0) {batch_dims = 0 : i64} : (tensor<?x2xf32, "T">, tensor<?x2xi64>) -> tensor<?xf32> loc("index_1")
    %__o76_0 = "moec.unsqueeze"(%__o74_0) {axes = array<i64: -1>} : (tensor<?xf32>) -> tensor<?x1xf32> loc("unsqueeze")
    %__o78_0 = "moec.mul"(%__o64_0, %__o76_0) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("mul_41")
    %__o81_0 = "moec.unsqueeze"(%__o43_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_put")
    %__o82_0 = "moec.shape"(%__o81_0) {start = 0 : i64} : (tensor<?x1xi64>) -> tensor<2xi64> loc("index_put")
    %12 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %13 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %14 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put")
    %15 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put")
    %__o85_0 = "moec.slice"(%__o82_0, %12, %13, %14, %15) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put")
    %__o86_0 = "moec.shape"(%__o24_0) {start = 0 : i64} : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("index_put")
    %16 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %17 = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %18 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put")
    %19 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put")
    %__o89_0 = "moec.slice"(%__o86_0, %16, %17, %18, %19) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put")
    %__o91_0 = "moec.concat"(%__o85_0, %__o89_0) {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64> loc("index_put")
    %__o93_0 = "moec.expand"(%__o78_0, %__o91_0) : (tensor<?x4xf32>, tensor<2xi64>) -> tensor<?x4xf32> loc("index_put")
    %__o96_0 = "moec.scatter_nd"(%__o24_0, %__o81_0, %__o93_0) {reduction = "add"} : (tensor<?x4xf32, "T">, tensor<?x1xi64>, tensor<?x4xf32>) -> tensor<?x4xf32, "T"> loc("index_put")
    %20 = "moec.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64>
    %__o98_0 = "moec.equal"(%__o15_0, %20) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi1, "T"> loc("eq_30")
    %__o99_0 = "moec.nonzero"(%__o98_0) : (tensor<?x2xi1, "T">) -> tensor<2x?xi64> loc("nonzero_1")
    %__o100_0 = "moec.transpose"(%__o99_0) {perm = array<i64: 1, 0>} : (tensor<2x?xi64>) -> tensor<?x2xi64> loc("nonzero_1")
    %21 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %22 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %23 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %24 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o108_0 = "moec.slice"(%__o100_0, %21, %22, %23, %24) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_3")
    %25 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %26 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %27 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %28 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o113_0 = "moec.slice"(%__o100_0, %25, %26, %27, %28) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_4")
    %__o115_0 = "moec.squeeze"(%__o108_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_2")
    %__o117_0 = "moec.squeeze"(%__o113_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_3")
    %__o119_0 = "moec.gather"(%x, %__o115_0) {axis = 0 : i64} : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("index_2")
    %__o122_0 = "moec.constant"() {value = dense<[[-0.30679154, 0.21984792, -0.051154826, 0.26143023], [0.01579637, 0.056205593, 0.396222, 1.1511027], [-0.24633849, 0.32039618, -0.14483385, -0.73444694], [0.12420738, 0.22057813, 0.026253743, -0.7933444]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32> loc("permute_3")
    %__o124_0 = "moec.matmul"(%__o119_0, %__o122_0) : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32> loc("mm_3")
    %29 = "moec.constant"() {value = dense<2> : tensor<2xi64>} : () -> tensor<2xi64>
    %__o126_0:2 = "moec.split"(%__o124_0, %29) {axis = -1 : i64} : (tensor<?x4xf32>, tensor<2xi64>) -> (tensor<?x2xf32>, tensor<?x2xf32>) loc("split_with_sizes_1")
    %__o127_0 = "moec.sigmoid"(%__o126_0#0) : (tensor<?x2xf32>) -> tensor<?x2xf32> loc("sigmoid_1")
    %__o129_0 = "moec.mul"(%__o126_0#0, %__o127_0) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_60")
    %__o131_0 = "moec.mul"(%__o129_0, %__o126_0#1) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_63")
    %__o134_0 = "moec.constant"() {value = dense<[[-0.17394894, -1.3305552, -0.7389115, 0.023710605], [1.6281251, -0.035162315, -0.6763482, 0.502107]]> : tensor<2x4xf32>} : () -> tensor<2x4xf32> loc("permute_4")
    %__o136_0 = "moec.matmul"(%__o131_0, %__o134_0) : (tensor<?x2xf32>, tensor<2x4xf32>) -> tensor<?x4xf32> loc("mm_4")
    %__o140_0 = "moec.unsqueeze"(%__o115_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_3")
    %__o142_0 = "moec.unsqueeze"(%__o117_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_3")
    %__o144_0 = "moec.concat"(%__o140_0, %__o142_0) {axis = -1 : i64} : (tensor<?x1xi64>, tensor<?x1xi64>) -> tensor<?x2xi64> loc("index_3")
    %__o146_0 = "moec.gather_nd"(%__o22_0, %__o144_0) {batch_dims = 0 : i64} : (tensor<?x2xf32, "T">, tensor<?x2xi64>) -> tensor<?xf32> loc("index_3")
    %__o148_0 = "moec.unsqueeze"(%__o146_0) {axes = array<i64: -1>} : (tensor<?xf32>) -> tensor<?x1xf32> loc("unsqueeze_1")
    %__o150_0 = "moec.mul"(%__o136_0, %__o148_0) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("mul_70")
    %__o153_0 = "moec.unsqueeze"(%__o115_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_put_1")
    %__o154_0 = "moec.shape"(%__o153_0) {start = 0 : i64} : (tensor<?x1xi64>) -> tensor<2xi64> loc("index_put_1")
    %30 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %31 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %32 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_1")
    %33 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_1")
    %__o157_0 = "moec.slice"(%__o154_0, %30, %31, %32, %33) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_1")
    %__o158_0 = "moec.shape"(%__o96_0) {start = 0 : i64} : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("index_put_1")
    %34 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %35 = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %36 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_1")
    %37 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_1")
    %__o161_0 = "moec.slice"(%__o158_0, %34, %35, %36, %37) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_1")
    %__o163_0 = "moec.concat"(%__o157_0, %__o161_0) {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64> loc("index_put_1")
    %__o165_0 = "moec.expand"(%__o150_0, %__o163_0) : (tensor<?x4xf32>, tensor<2xi64>) -> tensor<?x4xf32> loc("index_put_1")
    %__o168_0 = "moec.scatter_nd"(%__o96_0, %__o153_0, %__o165_0) {reduction = "add"} : (tensor<?x4xf32, "T">, tensor<?x1xi64>, tensor<?x4xf32>) -> tensor<?x4xf32, "T"> loc("index_put_1")
    %38 = "moec.constant"() {value = dense<2> : tensor<i64>} : () -> tensor<i64>
    %__o170_0 = "moec.equal"(%__o15_0, %38) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi1, "T"> loc("eq_49")
    %__o171_0 = "moec.nonzero"(%__o170_0) : (tensor<?x2xi1, "T">) -> tensor<2x?xi64> loc("nonzero_2")
    %__o172_0 = "moec.transpose"(%__o171_0) {perm = array<i64: 1, 0>} : (tensor<2x?xi64>) -> tensor<?x2xi64> loc("nonzero_2")
    %39 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %40 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %41 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %42 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o180_0 = "moec.slice"(%__o172_0, %39, %40, %41, %42) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_5")
    %43 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %44 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %45 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %46 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o185_0 = "moec.slice"(%__o172_0, %43, %44, %45, %46) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_6")
    %__o187_0 = "moec.squeeze"(%__o180_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_4")
    %__o189_0 = "moec.squeeze"(%__o185_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_5")
    %__o191_0 = "moec.gather"(%x, %__o187_0) {axis = 0 : i64} : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("index_4")
    %__o194_0 = "moec.constant"() {value = dense<[[-0.33654496, -0.11516774, -0.22310859, -0.76559216], [0.4364156, -0.1958772, 0.37201035, -0.6170675], [0.5276787, 0.27164736, 0.76048976, 0.90986264], [0.08892186, -0.19757877, 1.7052513, -0.27576435]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32> loc("permute_5")
    %__o196_0 = "moec.matmul"(%__o191_0, %__o194_0) : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32> loc("mm_5")
    %47 = "moec.constant"() {value = dense<2> : tensor<2xi64>} : () -> tensor<2xi64>
    %__o198_0:2 = "moec.split"(%__o196_0, %47) {axis = -1 : i64} : (tensor<?x4xf32>, tensor<2xi64>) -> (tensor<?x2xf32>, tensor<?x2xf32>) loc("split_with_sizes_2")
    %__o199_0 = "moec.sigmoid"(%__o198_0#0) : (tensor<?x2xf32>) -> tensor<?x2xf32> loc("sigmoid_2")
    %__o201_0 = "moec.mul"(%__o198_0#0, %__o199_0) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_89")
    %__o203_0 = "moec.mul"(%__o201_0, %__o198_0#1) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_92")
    %__o206_0 = "moec.constant"() {value = dense<[[1.1638037, 0.24364455, -1.8478981, -0.16139132], [-0.9617847, 0.367602, -1.1995885, 0.19795808]]> : tensor<2x4xf32>} : () -> tensor<2x4xf32> loc("permute_6")
    %__o208_0 = "moec.matmul"(%__o203_0, %__o206_0) : (tensor<?x2xf32>, tensor<2x4xf32>) -> tensor<?x4xf32> loc("mm_6")
    %__o212_0 = "moec.unsqueeze"(%__o187_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_5")
    %__o214_0 = "moec.unsqueeze"(%__o189_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_5")
    %__o216_0 = "moec.concat"(%__o212_0, %__o214_0) {axis = -1 : i64} : (tensor<?x1xi64>, tensor<?x1xi64>) -> tensor<?x2xi64> loc("index_5")
    %__o218_0 = "moec.gather_nd"(%__o22_0, %__o216_0) {batch_dims = 0 : i64} : (tensor<?x2xf32, "T">, tensor<?x2xi64>) -> tensor<?xf32> loc("index_5")
    %__o220_0 = "moec.unsqueeze"(%__o218_0) {axes = array<i64: -1>} : (tensor<?xf32>) -> tensor<?x1xf32> loc("unsqueeze_2")
    %__o222_0 = "moec.mul"(%__o208_0, %__o220_0) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("mul_99")
    %__o225_0 = "moec.unsqueeze"(%__o187_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_put_2")
    %__o226_0 = "moec.shape"(%__o225_0) {start = 0 : i64} : (tensor<?x1xi64>) -> tensor<2xi64> loc("index_put_2")
    %48 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %49 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %50 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_2")
    %51 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_2")
    %__o229_0 = "moec.slice"(%__o226_0, %48, %49, %50, %51) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_2")
    %__o230_0 = "moec.shape"(%__o168_0) {start = 0 : i64} : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("index_put_2")
    %52 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %53 = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %54 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_2")
    %55 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_2")
    %__o233_0 = "moec.slice"(%__o230_0, %52, %53, %54, %55) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_2")
    %__o235_0 = "moec.concat"(%__o229_0, %__o233_0) {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64> loc("index_put_2")
    %__o237_0 = "moec.expand"(%__o222_0, %__o235_0) : (tensor<?x4xf32>, tensor<2xi64>) -> tensor<?x4xf32> loc("index_put_2")
    %__o240_0 = "moec.scatter_nd"(%__o168_0, %__o225_0, %__o237_0) {reduction = "add"} : (tensor<?x4xf32, "T">, tensor<?x1xi64>, tensor<?x4xf32>) -> tensor<?x4xf32, "T"> loc("index_put_2")
    %56 = "moec.constant"() {value = dense<3> : tensor<i64>} : () -> tensor<i64>
    %__o242_0 = "moec.equal"(%__o15_0, %56) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi1, "T"> loc("eq_68")
    %__o243_0 = "moec.nonzero"(%__o242_0) : (tensor<?x2xi1, "T">) -> tensor<2x?xi64> loc("nonzero_3")
    %__o244_0 = "moec.transpose"(%__o243_0) {perm = array<i64: 1, 0>} : (tensor<2x?xi64>) -> tensor<?x2xi64> loc("nonzero_3")
    %57 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %58 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %59 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %60 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o252_0 = "moec.slice"(%__o244_0, %57, %58, %59, %60) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_7")
    %61 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %62 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %63 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %64 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o257_0 = "moec.slice"(%__o244_0, %61, %62, %63, %64) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_8")
    %__o259_0 = "moec.squeeze"(%__o252_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_6")
    %__o261_0 = "moec.squeeze"(%__o257_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_7")
    %__o263_0 = "moec.gather"(%x, %__o259_0) {axis = 0 : i64} : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("index_6")
    %__o266_0 = "moec.constant"() {value = dense<[[-0.28462404, -0.739087, -0.814663, -0.5334902], [0.4599857, 1.2836164, -0.27487183, 0.5574698], [0.55540806, -0.2365599, -0.23991713, -0.070335716], [0.64493704, 0.16777538, -0.24984077, 0.4028768]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32> loc("permute_7")
    %__o268_0 = "moec.matmul"(%__o263_0, %__o266_0) : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32> loc("mm_7")
    %65 = "moec.constant"() {value = dense<2> : tensor<2xi64>} : () -> tensor<2xi64>
    %__o270_0:2 = "moec.split"(%__o268_0, %65) {axis = -1 : i64} : (tensor<?x4xf32>, tensor<2xi64>) -> (tensor<?x2xf32>, tensor<?x2xf32>) loc("split_with_sizes_3")
    %__o271_0 = "moec.sigmoid"(%__o270_0#0) : (tensor<?x2xf32>) -> tensor<?x2xf32> loc("sigmoid_3")
    %__o273_0 = "moec.mul"(%__o270_0#0, %__o271_0) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_118")
    %__o275_0 = "moec.mul"(%__o273_0, %__o270_0#1) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_121")
    %__o278_0 = "moec.constant"() {value = dense<[[0.17460333, 0.2390062, 0.32310548, 0.5524681], [0.054367322, 0.32131058, -0.61191, -0.65533906]]> : tensor<2x4xf32>} : () -> tensor<2x4xf32> loc("permute_8")
    %__o280_0 = "moec.matmul"(%__o275_0, %__o278_0) : (tensor<?x2xf32>, tensor<2x4xf32>) -> tensor<?x4xf32> loc("mm_8")
    %__o284_0 = "moec.unsqueeze"(%__o259_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_7")
    %__o286_0 = "moec.unsqueeze"(%__o261_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_7")
    %__o288_0 = "moec.concat"(%__o284_0, %__o286_0) {axis = -1 : i64} : (tensor<?x1xi64>, tensor<?x1xi64>) -> tensor<?x2xi64> loc("index_7")
    %__o290_0 = "moec.gather_nd"(%__o22_0, %__o288_0) {batch_dims = 0 : i64} : (tensor<?x2xf32, "T">, tensor<?x2xi64>) -> tensor<?xf32> loc("index_7")
    %__o292_0 = "moec.unsqueeze"(%__o290_0) {axes = array<i64: -1>} : (tensor<?xf32>) -> tensor<?x1xf32> loc("unsqueeze_3")
    %__o294_0 = "moec.mul"(%__o280_0, %__o292_0) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("mul_128")
    %__o297_0 = "moec.unsqueeze"(%__o259_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_put_3")
    %__o298_0 = "moec.shape"(%__o297_0) {start = 0 : i64} : (tensor<?x1xi64>) -> tensor<2xi64> loc("index_put_3")
    %66 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %67 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %68 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_3")
    %69 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_3")
    %__o301_0 = "moec.slice"(%__o298_0, %66, %67, %68, %69) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_3")
    %__o302_0 = "moec.shape"(%__o240_0) {start = 0 : i64} : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("index_put_3")
    %70 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %71 = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %72 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_3")
    %73 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_3")
    %__o305_0 = "moec.slice"(%__o302_0, %70, %71, %72, %73) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_3")
    %__o307_0 = "moec.concat"(%__o301_0, %__o305_0) {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64> loc("index_put_3")
    %__o309_0 = "moec.expand"(%__o294_0, %__o307_0) : (tensor<?x4xf32>, tensor<2xi64>) -> tensor<?x4xf32> loc("index_put_3")
    %__o312_0 = "moec.scatter_nd"(%__o240_0, %__o297_0, %__o309_0) {reduction = "add"} : (tensor<?x4xf32, "T">, tensor<?x1xi64>, tensor<?x4xf32>) -> tensor<?x4xf32, "T"> loc("index_put_3")
    func.return %__o312_0 : tensor<?x4xf32, "T">
  }
}
// ----- expected
module attributes {moec.frontend = "torch.export", moec.opset = 25 : i64, moec.source = "ArgmaxFill0"} {
  func.func @main(%x: tensor<?x4xf32, "T">) -> (tensor<?x4xf32, "T">) attributes {moec.inputs = ["x"], moec.outputs = ["output"]} {
    %__o1_0 = "moec.constant"() {value = dense<[[-0.00374341, -0.19257718, -0.044372022, -0.47767425], [0.2682218, 0.13407868, 0.13230628, -0.33114105], [-0.41152257, -0.00990659, -0.15110654, -0.20611155], [-0.3679695, 0.39644474, -0.098282695, 0.018521786]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32> loc("permute")
    %__o3_0 = "moec.matmul"(%x, %__o1_0) : (tensor<?x4xf32, "T">, tensor<4x4xf32>) -> tensor<?x4xf32, "T"> loc("mm")
    %0 = "moec.constant"() {value = dense<0.5> : tensor<f32>} : () -> tensor<f32>
    %__o5_0 = "moec.sub"(%__o3_0, %0) : (tensor<?x4xf32, "T">, tensor<f32>) -> tensor<?x4xf32, "T"> loc("sub_1")
    %__o6_0 = "moec.argmax"(%__o5_0) {axis = -1 : i64} : (tensor<?x4xf32, "T">) -> tensor<?x1xi64, "T"> loc("argmax")
    %1 = "moec.constant"() {value = dense<0.0> : tensor<f32>} : () -> tensor<f32>
    %__o7_0 = "moec.shape"(%__o6_0) : (tensor<?x1xi64, "T">) -> tensor<2xi64> loc("scatter")
    %__o9_0 = "moec.expand"(%1, %__o7_0) : (tensor<f32>, tensor<2xi64>) -> tensor<?x1xf32, "T"> loc("scatter")
    %__o12_0 = "moec.scatter_elements"(%__o5_0, %__o6_0, %__o9_0) {axis = -1 : i64} : (tensor<?x4xf32, "T">, tensor<?x1xi64, "T">, tensor<?x1xf32, "T">) -> tensor<?x4xf32, "T"> loc("scatter")
    %__o13_0 = "moec.argmax"(%__o12_0) {axis = -1 : i64} : (tensor<?x4xf32, "T">) -> tensor<?x1xi64, "T"> loc("argmax_1")
    %__o15_0 = "moec.concat"(%__o6_0, %__o13_0) {axis = -1 : i64} : (tensor<?x1xi64, "T">, tensor<?x1xi64, "T">) -> tensor<?x2xi64, "T"> loc("cat")
    %__o16_0 = "moec.softmax"(%__o5_0) : (tensor<?x4xf32, "T">) -> tensor<?x4xf32, "T"> loc("_softmax")
    %__o18_0 = "moec.gather_elements"(%__o16_0, %__o15_0) {axis = -1 : i64} : (tensor<?x4xf32, "T">, tensor<?x2xi64, "T">) -> tensor<?x2xf32, "T"> loc("gather")
    %__o20_0 = "moec.reduce_sum"(%__o18_0) {axes = array<i64: -1>} : (tensor<?x2xf32, "T">) -> tensor<?x1xf32, "T"> loc("sum_1")
    %__o22_0 = "moec.div"(%__o18_0, %__o20_0) : (tensor<?x2xf32, "T">, tensor<?x1xf32, "T">) -> tensor<?x2xf32, "T"> loc("div")
    %__o23_0 = "moec.shape"(%x) : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("full_like")
    %__o24_0 = "moec.constant_of_shape"(%__o23_0) {value = dense<[0.0]> : tensor<1xf32>} : (tensor<2xi64>) -> tensor<?x4xf32, "T"> loc("full_like")
    %2 = "moec.constant"() {value = dense<0> : tensor<i64>} : () -> tensor<i64>
    %__o26_0 = "moec.equal"(%__o15_0, %2) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi1, "T"> loc("eq_11")
    %__o27_0 = "moec.nonzero"(%__o26_0) : (tensor<?x2xi1, "T">) -> tensor<2x?xi64> loc("nonzero")
    %__o28_0 = "moec.transpose"(%__o27_0) {perm = array<i64: 1, 0>} : (tensor<2x?xi64>) -> tensor<?x2xi64> loc("nonzero")
    %3 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %4 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %5 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %6 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o36_0 = "moec.slice"(%__o28_0, %3, %4, %5, %6) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_1")
    %7 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %8 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %9 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %10 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o41_0 = "moec.slice"(%__o28_0, %7, %8, %9, %10) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_2")
    %__o43_0 = "moec.squeeze"(%__o36_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze")
    %__o45_0 = "moec.squeeze"(%__o41_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_1")
    %__o47_0 = "moec.gather"(%x, %__o43_0) : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("index")
    %__o50_0 = "moec.constant"() {value = dense<[[-0.6763269, 0.29941973, 0.37509474, 0.6946831], [-0.8479656, -0.77754754, -0.29274878, 0.7931671], [0.2833253, -0.1706802, -0.086698376, 0.47314918], [0.39675418, 0.92650306, 0.09173897, -0.42183837]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32> loc("permute_1")
    %__o52_0 = "moec.matmul"(%__o47_0, %__o50_0) : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32> loc("mm_1")
    %11 = "moec.constant"() {value = dense<2> : tensor<2xi64>} : () -> tensor<2xi64>
    %__o54_0:2 = "moec.split"(%__o52_0, %11) {axis = -1 : i64} : (tensor<?x4xf32>, tensor<2xi64>) -> (tensor<?x2xf32>, tensor<?x2xf32>) loc("split_with_sizes")
    %__o55_0 = "moec.sigmoid"(%__o54_0#0) : (tensor<?x2xf32>) -> tensor<?x2xf32> loc("sigmoid")
    %__o57_0 = "moec.mul"(%__o54_0#0, %__o55_0) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_31")
    %__o59_0 = "moec.mul"(%__o57_0, %__o54_0#1) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_34")
    %__o62_0 = "moec.constant"() {value = dense<[[-0.066007175, -0.5927785, 0.595309, 0.7350106], [0.48581788, 0.00063061324, -0.28286687, 0.2532525]]> : tensor<2x4xf32>} : () -> tensor<2x4xf32> loc("permute_2")
    %__o64_0 = "moec.matmul"(%__o59_0, %__o62_0) : (tensor<?x2xf32>, tensor<2x4xf32>) -> tensor<?x4xf32> loc("mm_2")
    %__o68_0 = "moec.unsqueeze"(%__o43_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_1")
    %__o70_0 = "moec.unsqueeze"(%__o45_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_1")
    %__o72_0 = "moec.concat"(%__o68_0, %__o70_0) {axis = -1 : i64} : (tensor<?x1xi64>, tensor<?x1xi64>) -> tensor<?x2xi64> loc("index_1")
    %__o74_0 = "moec.gather_nd"(%__o22_0, %__o72_0) : (tensor<?x2xf32, "T">, tensor<?x2xi64>) -> tensor<?xf32> loc("index_1")
    %__o76_0 = "moec.unsqueeze"(%__o74_0) {axes = array<i64: -1>} : (tensor<?xf32>) -> tensor<?x1xf32> loc("unsqueeze")
    %__o78_0 = "moec.mul"(%__o64_0, %__o76_0) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("mul_41")
    %__o81_0 = "moec.unsqueeze"(%__o43_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_put")
    %__o82_0 = "moec.shape"(%__o81_0) : (tensor<?x1xi64>) -> tensor<2xi64> loc("index_put")
    %12 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %13 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %14 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put")
    %15 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put")
    %__o85_0 = "moec.slice"(%__o82_0, %12, %13, %14, %15) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put")
    %__o86_0 = "moec.shape"(%__o24_0) : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("index_put")
    %16 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %17 = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %18 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put")
    %19 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put")
    %__o89_0 = "moec.slice"(%__o86_0, %16, %17, %18, %19) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put")
    %__o91_0 = "moec.concat"(%__o85_0, %__o89_0) {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64> loc("index_put")
    %__o93_0 = "moec.expand"(%__o78_0, %__o91_0) : (tensor<?x4xf32>, tensor<2xi64>) -> tensor<?x4xf32> loc("index_put")
    %__o96_0 = "moec.scatter_nd"(%__o24_0, %__o81_0, %__o93_0) {reduction = "add"} : (tensor<?x4xf32, "T">, tensor<?x1xi64>, tensor<?x4xf32>) -> tensor<?x4xf32, "T"> loc("index_put")
    %20 = "moec.constant"() {value = dense<1> : tensor<i64>} : () -> tensor<i64>
    %__o98_0 = "moec.equal"(%__o15_0, %20) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi1, "T"> loc("eq_30")
    %__o99_0 = "moec.nonzero"(%__o98_0) : (tensor<?x2xi1, "T">) -> tensor<2x?xi64> loc("nonzero_1")
    %__o100_0 = "moec.transpose"(%__o99_0) {perm = array<i64: 1, 0>} : (tensor<2x?xi64>) -> tensor<?x2xi64> loc("nonzero_1")
    %21 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %22 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %23 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %24 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o108_0 = "moec.slice"(%__o100_0, %21, %22, %23, %24) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_3")
    %25 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %26 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %27 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %28 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o113_0 = "moec.slice"(%__o100_0, %25, %26, %27, %28) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_4")
    %__o115_0 = "moec.squeeze"(%__o108_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_2")
    %__o117_0 = "moec.squeeze"(%__o113_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_3")
    %__o119_0 = "moec.gather"(%x, %__o115_0) : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("index_2")
    %__o122_0 = "moec.constant"() {value = dense<[[-0.30679154, 0.21984792, -0.051154826, 0.26143023], [0.01579637, 0.056205593, 0.396222, 1.1511027], [-0.24633849, 0.32039618, -0.14483385, -0.73444694], [0.12420738, 0.22057813, 0.026253743, -0.7933444]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32> loc("permute_3")
    %__o124_0 = "moec.matmul"(%__o119_0, %__o122_0) : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32> loc("mm_3")
    %29 = "moec.constant"() {value = dense<2> : tensor<2xi64>} : () -> tensor<2xi64>
    %__o126_0:2 = "moec.split"(%__o124_0, %29) {axis = -1 : i64} : (tensor<?x4xf32>, tensor<2xi64>) -> (tensor<?x2xf32>, tensor<?x2xf32>) loc("split_with_sizes_1")
    %__o127_0 = "moec.sigmoid"(%__o126_0#0) : (tensor<?x2xf32>) -> tensor<?x2xf32> loc("sigmoid_1")
    %__o129_0 = "moec.mul"(%__o126_0#0, %__o127_0) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_60")
    %__o131_0 = "moec.mul"(%__o129_0, %__o126_0#1) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_63")
    %__o134_0 = "moec.constant"() {value = dense<[[-0.17394894, -1.3305552, -0.7389115, 0.023710605], [1.6281251, -0.035162315, -0.6763482, 0.502107]]> : tensor<2x4xf32>} : () -> tensor<2x4xf32> loc("permute_4")
    %__o136_0 = "moec.matmul"(%__o131_0, %__o134_0) : (tensor<?x2xf32>, tensor<2x4xf32>) -> tensor<?x4xf32> loc("mm_4")
    %__o140_0 = "moec.unsqueeze"(%__o115_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_3")
    %__o142_0 = "moec.unsqueeze"(%__o117_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_3")
    %__o144_0 = "moec.concat"(%__o140_0, %__o142_0) {axis = -1 : i64} : (tensor<?x1xi64>, tensor<?x1xi64>) -> tensor<?x2xi64> loc("index_3")
    %__o146_0 = "moec.gather_nd"(%__o22_0, %__o144_0) : (tensor<?x2xf32, "T">, tensor<?x2xi64>) -> tensor<?xf32> loc("index_3")
    %__o148_0 = "moec.unsqueeze"(%__o146_0) {axes = array<i64: -1>} : (tensor<?xf32>) -> tensor<?x1xf32> loc("unsqueeze_1")
    %__o150_0 = "moec.mul"(%__o136_0, %__o148_0) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("mul_70")
    %__o153_0 = "moec.unsqueeze"(%__o115_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_put_1")
    %__o154_0 = "moec.shape"(%__o153_0) : (tensor<?x1xi64>) -> tensor<2xi64> loc("index_put_1")
    %30 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %31 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %32 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_1")
    %33 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_1")
    %__o157_0 = "moec.slice"(%__o154_0, %30, %31, %32, %33) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_1")
    %__o158_0 = "moec.shape"(%__o96_0) : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("index_put_1")
    %34 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %35 = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %36 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_1")
    %37 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_1")
    %__o161_0 = "moec.slice"(%__o158_0, %34, %35, %36, %37) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_1")
    %__o163_0 = "moec.concat"(%__o157_0, %__o161_0) {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64> loc("index_put_1")
    %__o165_0 = "moec.expand"(%__o150_0, %__o163_0) : (tensor<?x4xf32>, tensor<2xi64>) -> tensor<?x4xf32> loc("index_put_1")
    %__o168_0 = "moec.scatter_nd"(%__o96_0, %__o153_0, %__o165_0) {reduction = "add"} : (tensor<?x4xf32, "T">, tensor<?x1xi64>, tensor<?x4xf32>) -> tensor<?x4xf32, "T"> loc("index_put_1")
    %38 = "moec.constant"() {value = dense<2> : tensor<i64>} : () -> tensor<i64>
    %__o170_0 = "moec.equal"(%__o15_0, %38) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi1, "T"> loc("eq_49")
    %__o171_0 = "moec.nonzero"(%__o170_0) : (tensor<?x2xi1, "T">) -> tensor<2x?xi64> loc("nonzero_2")
    %__o172_0 = "moec.transpose"(%__o171_0) {perm = array<i64: 1, 0>} : (tensor<2x?xi64>) -> tensor<?x2xi64> loc("nonzero_2")
    %39 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %40 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %41 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %42 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o180_0 = "moec.slice"(%__o172_0, %39, %40, %41, %42) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_5")
    %43 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %44 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %45 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %46 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o185_0 = "moec.slice"(%__o172_0, %43, %44, %45, %46) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_6")
    %__o187_0 = "moec.squeeze"(%__o180_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_4")
    %__o189_0 = "moec.squeeze"(%__o185_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_5")
    %__o191_0 = "moec.gather"(%x, %__o187_0) : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("index_4")
    %__o194_0 = "moec.constant"() {value = dense<[[-0.33654496, -0.11516774, -0.22310859, -0.76559216], [0.4364156, -0.1958772, 0.37201035, -0.6170675], [0.5276787, 0.27164736, 0.76048976, 0.90986264], [0.08892186, -0.19757877, 1.7052513, -0.27576435]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32> loc("permute_5")
    %__o196_0 = "moec.matmul"(%__o191_0, %__o194_0) : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32> loc("mm_5")
    %47 = "moec.constant"() {value = dense<2> : tensor<2xi64>} : () -> tensor<2xi64>
    %__o198_0:2 = "moec.split"(%__o196_0, %47) {axis = -1 : i64} : (tensor<?x4xf32>, tensor<2xi64>) -> (tensor<?x2xf32>, tensor<?x2xf32>) loc("split_with_sizes_2")
    %__o199_0 = "moec.sigmoid"(%__o198_0#0) : (tensor<?x2xf32>) -> tensor<?x2xf32> loc("sigmoid_2")
    %__o201_0 = "moec.mul"(%__o198_0#0, %__o199_0) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_89")
    %__o203_0 = "moec.mul"(%__o201_0, %__o198_0#1) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_92")
    %__o206_0 = "moec.constant"() {value = dense<[[1.1638037, 0.24364455, -1.8478981, -0.16139132], [-0.9617847, 0.367602, -1.1995885, 0.19795808]]> : tensor<2x4xf32>} : () -> tensor<2x4xf32> loc("permute_6")
    %__o208_0 = "moec.matmul"(%__o203_0, %__o206_0) : (tensor<?x2xf32>, tensor<2x4xf32>) -> tensor<?x4xf32> loc("mm_6")
    %__o212_0 = "moec.unsqueeze"(%__o187_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_5")
    %__o214_0 = "moec.unsqueeze"(%__o189_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_5")
    %__o216_0 = "moec.concat"(%__o212_0, %__o214_0) {axis = -1 : i64} : (tensor<?x1xi64>, tensor<?x1xi64>) -> tensor<?x2xi64> loc("index_5")
    %__o218_0 = "moec.gather_nd"(%__o22_0, %__o216_0) : (tensor<?x2xf32, "T">, tensor<?x2xi64>) -> tensor<?xf32> loc("index_5")
    %__o220_0 = "moec.unsqueeze"(%__o218_0) {axes = array<i64: -1>} : (tensor<?xf32>) -> tensor<?x1xf32> loc("unsqueeze_2")
    %__o222_0 = "moec.mul"(%__o208_0, %__o220_0) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("mul_99")
    %__o225_0 = "moec.unsqueeze"(%__o187_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_put_2")
    %__o226_0 = "moec.shape"(%__o225_0) : (tensor<?x1xi64>) -> tensor<2xi64> loc("index_put_2")
    %48 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %49 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %50 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_2")
    %51 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_2")
    %__o229_0 = "moec.slice"(%__o226_0, %48, %49, %50, %51) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_2")
    %__o230_0 = "moec.shape"(%__o168_0) : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("index_put_2")
    %52 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %53 = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %54 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_2")
    %55 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_2")
    %__o233_0 = "moec.slice"(%__o230_0, %52, %53, %54, %55) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_2")
    %__o235_0 = "moec.concat"(%__o229_0, %__o233_0) {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64> loc("index_put_2")
    %__o237_0 = "moec.expand"(%__o222_0, %__o235_0) : (tensor<?x4xf32>, tensor<2xi64>) -> tensor<?x4xf32> loc("index_put_2")
    %__o240_0 = "moec.scatter_nd"(%__o168_0, %__o225_0, %__o237_0) {reduction = "add"} : (tensor<?x4xf32, "T">, tensor<?x1xi64>, tensor<?x4xf32>) -> tensor<?x4xf32, "T"> loc("index_put_2")
    %56 = "moec.constant"() {value = dense<3> : tensor<i64>} : () -> tensor<i64>
    %__o242_0 = "moec.equal"(%__o15_0, %56) : (tensor<?x2xi64, "T">, tensor<i64>) -> tensor<?x2xi1, "T"> loc("eq_68")
    %__o243_0 = "moec.nonzero"(%__o242_0) : (tensor<?x2xi1, "T">) -> tensor<2x?xi64> loc("nonzero_3")
    %__o244_0 = "moec.transpose"(%__o243_0) {perm = array<i64: 1, 0>} : (tensor<2x?xi64>) -> tensor<?x2xi64> loc("nonzero_3")
    %57 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %58 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %59 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %60 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o252_0 = "moec.slice"(%__o244_0, %57, %58, %59, %60) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_7")
    %61 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %62 = "moec.constant"() {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
    %63 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %64 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %__o257_0 = "moec.slice"(%__o244_0, %61, %62, %63, %64) : (tensor<?x2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<?x1xi64> loc("slice_8")
    %__o259_0 = "moec.squeeze"(%__o252_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_6")
    %__o261_0 = "moec.squeeze"(%__o257_0) {axes = array<i64: 1>} : (tensor<?x1xi64>) -> tensor<?xi64> loc("squeeze_7")
    %__o263_0 = "moec.gather"(%x, %__o259_0) : (tensor<?x4xf32, "T">, tensor<?xi64>) -> tensor<?x4xf32> loc("index_6")
    %__o266_0 = "moec.constant"() {value = dense<[[-0.28462404, -0.739087, -0.814663, -0.5334902], [0.4599857, 1.2836164, -0.27487183, 0.5574698], [0.55540806, -0.2365599, -0.23991713, -0.070335716], [0.64493704, 0.16777538, -0.24984077, 0.4028768]]> : tensor<4x4xf32>} : () -> tensor<4x4xf32> loc("permute_7")
    %__o268_0 = "moec.matmul"(%__o263_0, %__o266_0) : (tensor<?x4xf32>, tensor<4x4xf32>) -> tensor<?x4xf32> loc("mm_7")
    %65 = "moec.constant"() {value = dense<2> : tensor<2xi64>} : () -> tensor<2xi64>
    %__o270_0:2 = "moec.split"(%__o268_0, %65) {axis = -1 : i64} : (tensor<?x4xf32>, tensor<2xi64>) -> (tensor<?x2xf32>, tensor<?x2xf32>) loc("split_with_sizes_3")
    %__o271_0 = "moec.sigmoid"(%__o270_0#0) : (tensor<?x2xf32>) -> tensor<?x2xf32> loc("sigmoid_3")
    %__o273_0 = "moec.mul"(%__o270_0#0, %__o271_0) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_118")
    %__o275_0 = "moec.mul"(%__o273_0, %__o270_0#1) : (tensor<?x2xf32>, tensor<?x2xf32>) -> tensor<?x2xf32> loc("mul_121")
    %__o278_0 = "moec.constant"() {value = dense<[[0.17460333, 0.2390062, 0.32310548, 0.5524681], [0.054367322, 0.32131058, -0.61191, -0.65533906]]> : tensor<2x4xf32>} : () -> tensor<2x4xf32> loc("permute_8")
    %__o280_0 = "moec.matmul"(%__o275_0, %__o278_0) : (tensor<?x2xf32>, tensor<2x4xf32>) -> tensor<?x4xf32> loc("mm_8")
    %__o284_0 = "moec.unsqueeze"(%__o259_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_7")
    %__o286_0 = "moec.unsqueeze"(%__o261_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_7")
    %__o288_0 = "moec.concat"(%__o284_0, %__o286_0) {axis = -1 : i64} : (tensor<?x1xi64>, tensor<?x1xi64>) -> tensor<?x2xi64> loc("index_7")
    %__o290_0 = "moec.gather_nd"(%__o22_0, %__o288_0) : (tensor<?x2xf32, "T">, tensor<?x2xi64>) -> tensor<?xf32> loc("index_7")
    %__o292_0 = "moec.unsqueeze"(%__o290_0) {axes = array<i64: -1>} : (tensor<?xf32>) -> tensor<?x1xf32> loc("unsqueeze_3")
    %__o294_0 = "moec.mul"(%__o280_0, %__o292_0) : (tensor<?x4xf32>, tensor<?x1xf32>) -> tensor<?x4xf32> loc("mul_128")
    %__o297_0 = "moec.unsqueeze"(%__o259_0) {axes = array<i64: -1>} : (tensor<?xi64>) -> tensor<?x1xi64> loc("index_put_3")
    %__o298_0 = "moec.shape"(%__o297_0) : (tensor<?x1xi64>) -> tensor<2xi64> loc("index_put_3")
    %66 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
    %67 = "moec.constant"() {value = dense<[-1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %68 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_3")
    %69 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_3")
    %__o301_0 = "moec.slice"(%__o298_0, %66, %67, %68, %69) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_3")
    %__o302_0 = "moec.shape"(%__o240_0) : (tensor<?x4xf32, "T">) -> tensor<2xi64> loc("index_put_3")
    %70 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
    %71 = "moec.constant"() {value = dense<[9223372036854775807]> : tensor<1xi64>} : () -> tensor<1xi64>
    %72 = "moec.constant"() {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_3")
    %73 = "moec.constant"() {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64> loc("index_put_3")
    %__o305_0 = "moec.slice"(%__o302_0, %70, %71, %72, %73) : (tensor<2xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64> loc("index_put_3")
    %__o307_0 = "moec.concat"(%__o301_0, %__o305_0) {axis = 0 : i64} : (tensor<1xi64>, tensor<1xi64>) -> tensor<2xi64> loc("index_put_3")
    %__o309_0 = "moec.expand"(%__o294_0, %__o307_0) : (tensor<?x4xf32>, tensor<2xi64>) -> tensor<?x4xf32> loc("index_put_3")
    %__o312_0 = "moec.scatter_nd"(%__o240_0, %__o297_0, %__o309_0) {reduction = "add"} : (tensor<?x4xf32, "T">, tensor<?x1xi64>, tensor<?x4xf32>) -> tensor<?x4xf32, "T"> loc("index_put_3")
    func.return %__o312_0 : tensor<?x4xf32, "T">
  }
}
