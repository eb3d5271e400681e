//! Parameter counts of the paper's CIFAR ResNets, cross-checked against an independent formula.

use candle_core::Device;
use resnet_model::{ResNetConfig, ResNetModel, Shortcut, TensorKind};

/// Trainable parameters counted by hand from the architecture.
fn formula(cfg: &ResNetConfig) -> usize {
    let w = cfg.base_width;
    let n = cfg.n();
    let mut total = 3 * w * 9 + 2 * w; // conv1 + bn1
    let mut cin = w;
    for stage in 0..3 {
        let c = w << stage;
        for i in 0..n {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            total += cin * c * 9 + 2 * c + c * c * 9 + 2 * c;
            let project = match cfg.shortcut {
                Shortcut::IdentityPad => false,
                Shortcut::Projection => stride != 1 || cin != c,
                Shortcut::AllProjection => true,
            };
            if project {
                total += cin * c + 2 * c;
            }
            cin = c;
        }
    }
    total + cin * cfg.num_classes + cfg.num_classes
}

fn count(cfg: &ResNetConfig) -> usize {
    ResNetModel::new(cfg, &Device::Cpu, 0)
        .unwrap()
        .num_parameters()
}

#[test]
fn paper_counts_option_a() {
    // He et al. 2016, table 6: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M.
    let expected = [
        (20, 269_722, 0.27),
        (32, 464_154, 0.46),
        (44, 658_586, 0.66),
        (56, 853_018, 0.85),
        (110, 1_727_962, 1.7),
    ];
    for (depth, exact, millions) in expected {
        let cfg = ResNetConfig::with_depth(depth);
        let got = count(&cfg);
        assert_eq!(got, exact, "ResNet-{depth} option A");
        assert_eq!(got, formula(&cfg), "ResNet-{depth} option A vs formula");
        let digits = if depth == 110 { 1 } else { 2 };
        let rounded = format!("{:.*}", digits, got as f64 / 1e6);
        assert_eq!(
            rounded,
            format!("{:.*}", digits, millions),
            "ResNet-{depth}"
        );
    }
}

#[test]
fn option_b_and_c_counts() {
    let b = ResNetConfig::resnet20().with_shortcut(Shortcut::Projection);
    assert_eq!(count(&b), 272_474);
    assert_eq!(count(&b), formula(&b));
    let resnet8 = ResNetConfig::with_depth(8);
    assert_eq!(count(&resnet8), 75_290);
    for depth in [8, 20, 56] {
        let c = ResNetConfig::with_depth(depth).with_shortcut(Shortcut::AllProjection);
        assert_eq!(count(&c), formula(&c), "ResNet-{depth} option C");
        assert!(
            count(&c) > count(&ResNetConfig::with_depth(depth).with_shortcut(Shortcut::Projection))
        );
    }
    let wide = ResNetConfig {
        base_width: 32,
        num_classes: 100,
        ..ResNetConfig::resnet20()
    };
    assert_eq!(count(&wide), formula(&wide));
}

#[test]
fn parameters_and_buffers_are_split_and_sorted() {
    let cfg = ResNetConfig::resnet20().with_shortcut(Shortcut::Projection);
    let model = ResNetModel::new(&cfg, &Device::Cpu, 0).unwrap();
    let params: Vec<String> = model.parameters().into_iter().map(|(n, _)| n).collect();
    let buffers: Vec<String> = model.buffers().into_iter().map(|(n, _)| n).collect();
    assert!(
        params.windows(2).all(|w| w[0] < w[1]),
        "parameters not sorted"
    );
    assert!(
        buffers.windows(2).all(|w| w[0] < w[1]),
        "buffers not sorted"
    );
    assert!(buffers
        .iter()
        .all(|n| TensorKind::of(n) == TensorKind::Buffer
            && (n.ends_with(".running_mean") || n.ends_with(".running_var"))));
    assert!(params
        .iter()
        .all(|n| TensorKind::of(n) == TensorKind::Parameter));
    // 19 BatchNorms in ResNet-20 + 2 projection BatchNorms, two buffers each.
    assert_eq!(buffers.len(), 2 * 21);
    for name in [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "layer1.2.conv2.weight",
        "layer2.0.shortcut.0.weight",
        "layer3.0.shortcut.1.bias",
        "linear.weight",
        "linear.bias",
    ] {
        assert!(params.iter().any(|n| n == name), "missing parameter {name}");
    }
    assert!(!params.iter().any(|n| n.starts_with("layer1.0.shortcut")));
    let state = model.state_dict().unwrap();
    assert_eq!(state.len(), params.len() + buffers.len());
}

#[test]
fn summary_matches_counts() {
    for cfg in [
        ResNetConfig::resnet20(),
        ResNetConfig::resnet20().with_shortcut(Shortcut::Projection),
        ResNetConfig::resnet56().with_shortcut(Shortcut::AllProjection),
    ] {
        let model = ResNetModel::new(&cfg, &Device::Cpu, 0).unwrap();
        let summary = model.summary();
        assert_eq!(summary.total_params, model.num_parameters());
        assert_eq!(summary.buffer_elements, model.num_buffer_elements());
        assert_eq!(summary.rows.len(), 3 + 3 * cfg.n() + 2);
        let last = summary.rows.last().unwrap();
        assert_eq!(
            (last.layer.as_str(), last.output_shape.clone()),
            ("linear", vec![10])
        );
        let l3 = summary.rows.iter().find(|r| r.layer == "layer3.0").unwrap();
        assert_eq!(l3.output_shape, vec![64, 8, 8]);
    }
    let text = ResNetModel::new(&ResNetConfig::resnet20(), &Device::Cpu, 0)
        .unwrap()
        .summary()
        .to_string();
    assert!(text.contains("Total params: 269,722"), "{text}");
    assert!(text.contains("layer2.0 (BasicBlock)"), "{text}");
    assert!(text.contains("[N, 32, 16, 16]"), "{text}");
    assert!(text.contains("Mult-adds per image: 40,551,040"), "{text}");
}

/// Multiply-accumulates per image, counted by hand from the layer shapes.
#[test]
fn summary_counts_mult_adds() {
    // stem 16*3*9 at 32x32; each 3x3 conv of width w at plane s: w*w*9*s*s (= 2,359,296 at
    // every stage); the two strided conv1s: 32*16*9*16*16 and 64*32*9*8*8 (1,179,648 each);
    // the linear layer 64*10.
    let stem = 16 * 3 * 9 * 32 * 32;
    let full = 16 * 16 * 9 * 32 * 32;
    let strided = 32 * 16 * 9 * 16 * 16;
    let linear = 64 * 10;
    let r20 = ResNetModel::new(&ResNetConfig::resnet20(), &Device::Cpu, 0)
        .unwrap()
        .summary();
    assert_eq!(r20.total_macs, stem + 16 * full + 2 * strided + linear);
    assert_eq!(r20.total_macs, 40_551_040);
    let row =
        |s: &resnet_model::Summary, l: &str| s.rows.iter().find(|r| r.layer == l).unwrap().macs;
    assert_eq!(row(&r20, "conv1"), stem);
    assert_eq!(row(&r20, "bn1"), 0);
    assert_eq!(row(&r20, "layer1.0"), 2 * full);
    assert_eq!(row(&r20, "layer2.0"), strided + full);
    assert_eq!(row(&r20, "linear"), linear);
    // option B adds the two 1x1 projections, at their output planes
    let b = ResNetModel::new(
        &ResNetConfig::resnet20().with_shortcut(Shortcut::Projection),
        &Device::Cpu,
        0,
    )
    .unwrap()
    .summary();
    assert_eq!(row(&b, "layer2.0"), strided + full + 32 * 16 * 16 * 16);
    assert_eq!(row(&b, "layer3.0"), strided + full + 64 * 32 * 8 * 8);
    assert_eq!(
        b.total_macs,
        r20.total_macs + 32 * 16 * 16 * 16 + 64 * 32 * 8 * 8
    );
}
