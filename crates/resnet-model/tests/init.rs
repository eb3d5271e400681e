//! Seeded He initialization: determinism and the documented distributions.

use candle_core::{Device, Tensor};
use resnet_model::{ResNetConfig, ResNetModel, Shortcut};

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn same_seed_same_weights_different_seed_different_weights() {
    let cfg = ResNetConfig::resnet20().with_shortcut(Shortcut::Projection);
    let a = ResNetModel::new(&cfg, &Device::Cpu, 42)
        .unwrap()
        .state_dict()
        .unwrap();
    let b = ResNetModel::new(&cfg, &Device::Cpu, 42)
        .unwrap()
        .state_dict()
        .unwrap();
    let c = ResNetModel::new(&cfg, &Device::Cpu, 43)
        .unwrap()
        .state_dict()
        .unwrap();
    for (name, t) in &a {
        let (x, y, z) = (values(t), values(&b[name]), values(&c[name]));
        assert!(
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{name}: same seed gave different values"
        );
        let random = name.ends_with("conv1.weight")
            || name.ends_with("conv2.weight")
            || name.starts_with("linear.")
            || name.ends_with("shortcut.0.weight");
        if random {
            assert_ne!(x, z, "{name}: different seeds gave the same values");
        } else {
            assert_eq!(x, z, "{name}: constant init should not depend on the seed");
        }
    }
}

fn mean_std(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn he_normal_conv_and_linear_uniform_bias() {
    let model = ResNetModel::new(&ResNetConfig::resnet56(), &Device::Cpu, 3).unwrap();
    let state = model.state_dict().unwrap();
    // layer3 conv2 weights pooled: fan_in = 64 * 9, many samples.
    let mut pooled = Vec::new();
    for i in 0..9 {
        pooled.extend(values(&state[&format!("layer3.{i}.conv2.weight")]));
    }
    let (mean, std) = mean_std(&pooled);
    let expected = (2.0f64 / (64.0 * 9.0)).sqrt();
    assert!(mean.abs() < 0.02 * expected * 10.0, "mean {mean}");
    assert!(
        (std / expected - 1.0).abs() < 0.01,
        "std {std} vs {expected}"
    );

    let (_, std) = mean_std(&values(&state["linear.weight"]));
    let expected = (2.0f64 / 64.0).sqrt();
    assert!(
        (std / expected - 1.0).abs() < 0.1,
        "linear std {std} vs {expected}"
    );

    let bias = values(&state["linear.bias"]);
    assert!(bias.iter().all(|b| b.abs() <= 0.125), "{bias:?}");
    assert!(bias.iter().any(|&b| b != 0.0));

    for (name, t) in &state {
        let v = values(t);
        let constant = if name.ends_with(".running_var")
            || (name.contains("bn") && name.ends_with(".weight"))
        {
            Some(1.0)
        } else if name.ends_with(".running_mean")
            || (name.contains("bn") && name.ends_with(".bias"))
        {
            Some(0.0)
        } else {
            None
        };
        if let Some(c) = constant {
            assert!(v.iter().all(|&x| x == c), "{name} should be all {c}");
        }
    }
}
