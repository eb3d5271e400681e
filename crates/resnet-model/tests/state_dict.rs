//! Strict loading (named errors), save → load round trips, and `num_batches_tracked`.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use resnet_model::{io, ResNetConfig, ResNetModel, Shortcut};

fn state_of(model: &ResNetModel) -> HashMap<String, Tensor> {
    model.state_dict().unwrap().into_iter().collect()
}

fn err_text(r: candle_core::Result<ResNetModel>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn wrong_shape_is_named() {
    let cfg = ResNetConfig::resnet20();
    let model = ResNetModel::new(&cfg, &Device::Cpu, 1).unwrap();
    let mut state = state_of(&model);
    state.insert(
        "layer2.1.conv1.weight".into(),
        Tensor::zeros((32, 16, 3, 3), DType::F32, &Device::Cpu).unwrap(),
    );
    let msg = err_text(ResNetModel::from_tensors(&cfg, &state, &Device::Cpu));
    assert!(
        msg.contains("`layer2.1.conv1.weight` expected [32, 32, 3, 3] found [32, 16, 3, 3]"),
        "{msg}"
    );
    assert!(msg.contains("wrong shape"), "{msg}");
}

#[test]
fn missing_and_unexpected_are_named() {
    let cfg = ResNetConfig::resnet20();
    let model = ResNetModel::new(&cfg, &Device::Cpu, 1).unwrap();
    let mut state = state_of(&model);
    state.remove("bn1.running_var");
    state.remove("linear.bias");
    state.insert(
        "fc.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let msg = err_text(ResNetModel::from_tensors(&cfg, &state, &Device::Cpu));
    assert!(
        msg.contains("2 missing tensor(s): `bn1.running_var`, `linear.bias`"),
        "{msg}"
    );
    assert!(msg.contains("1 unexpected tensor(s): `fc.weight`"), "{msg}");
    assert!(msg.contains("resnet20-a"), "{msg}");
}

#[test]
fn option_mismatch_lists_projection_tensors() {
    let b = ResNetConfig::resnet20().with_shortcut(Shortcut::Projection);
    let state = state_of(&ResNetModel::new(&b, &Device::Cpu, 1).unwrap());
    let msg = err_text(ResNetModel::from_tensors(
        &ResNetConfig::resnet20(),
        &state,
        &Device::Cpu,
    ));
    assert!(msg.contains("10 unexpected tensor(s)"), "{msg}");
    assert!(msg.contains("`layer2.0.shortcut.0.weight`"), "{msg}");
}

#[test]
fn integer_tensor_is_rejected_and_f64_converted() {
    let cfg = ResNetConfig::with_depth(8);
    let model = ResNetModel::new(&cfg, &Device::Cpu, 1).unwrap();
    let mut state = state_of(&model);
    let w = state["linear.weight"].to_dtype(DType::F64).unwrap();
    state.insert("linear.weight".into(), w);
    let copy = ResNetModel::from_tensors(&cfg, &state, &Device::Cpu).unwrap();
    assert_eq!(
        to_vec(&copy.state_dict().unwrap()["linear.weight"]),
        to_vec(&model.state_dict().unwrap()["linear.weight"])
    );
    state.insert(
        "bn1.bias".into(),
        Tensor::zeros(16, DType::I64, &Device::Cpu).unwrap(),
    );
    let msg = err_text(ResNetModel::from_tensors(&cfg, &state, &Device::Cpu));
    assert!(msg.contains("`bn1.bias` has dtype I64"), "{msg}");
}

#[test]
fn bad_depth_is_named() {
    for depth in [0, 7, 19, 21] {
        let cfg = ResNetConfig::with_depth(depth);
        let msg = err_text(ResNetModel::new(&cfg, &Device::Cpu, 0));
        assert!(msg.contains("`depth` must be 6n + 2"), "{msg}");
        assert!(msg.contains(&format!("got {depth}")), "{msg}");
    }
}

#[test]
fn num_batches_tracked_is_ignored() {
    let cfg = ResNetConfig::with_depth(8);
    let model = ResNetModel::new(&cfg, &Device::Cpu, 1).unwrap();
    let mut state = state_of(&model);
    for name in ["bn1", "layer1.0.bn1", "layer3.0.bn2"] {
        state.insert(
            format!("{name}.num_batches_tracked"),
            Tensor::new(5i64, &Device::Cpu).unwrap(),
        );
    }
    ResNetModel::from_tensors(&cfg, &state, &Device::Cpu).unwrap();
    model.load_state_dict(&state).unwrap();
}

#[test]
fn load_state_dict_is_all_or_nothing() {
    let cfg = ResNetConfig::with_depth(8);
    let model = ResNetModel::new(&cfg, &Device::Cpu, 1).unwrap();
    let before = model.state_dict().unwrap();
    let mut other = state_of(&ResNetModel::new(&cfg, &Device::Cpu, 2).unwrap());
    other.remove("linear.bias");
    let err = model.load_state_dict(&other).unwrap_err().to_string();
    assert!(err.contains("`linear.bias`"), "{err}");
    let after = model.state_dict().unwrap();
    for (name, t) in &before {
        assert_eq!(
            to_vec(t),
            to_vec(&after[name]),
            "{name} changed by a failed load"
        );
    }
    // A complete state dict replaces everything.
    let other = ResNetModel::new(&cfg, &Device::Cpu, 2).unwrap();
    model.load_state_dict(&state_of(&other)).unwrap();
    for (name, t) in other.state_dict().unwrap() {
        assert_eq!(
            to_vec(&t),
            to_vec(&model.state_dict().unwrap()[&name]),
            "{name}"
        );
    }
}

#[test]
fn save_load_round_trip_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let cfg = ResNetConfig::resnet20().with_shortcut(Shortcut::Projection);
    let model = ResNetModel::new(&cfg, &Device::Cpu, 7).unwrap();
    // Move the running statistics away from their initial values first.
    let x = Tensor::arange(0f32, (4 * 3 * 32 * 32) as f32, &Device::Cpu)
        .unwrap()
        .reshape((4, 3, 32, 32))
        .unwrap()
        .affine(1e-4, -0.5)
        .unwrap();
    model.forward_t(&x, true).unwrap();
    model.save(&path).unwrap();
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1, "temporary file left behind");
    assert_eq!(io::read_config(&path).unwrap(), Some(cfg.clone()));

    let loaded = ResNetModel::load(&cfg, &path, &Device::Cpu).unwrap();
    let (a, b) = (model.state_dict().unwrap(), loaded.state_dict().unwrap());
    assert_eq!(a.len(), b.len());
    for (name, t) in &a {
        let (x, y) = (to_vec(t), to_vec(&b[name]));
        assert!(
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{name} differs after save/load"
        );
    }
    let ya = model.forward_t(&x, false).unwrap();
    let yb = loaded.forward_t(&x, false).unwrap();
    assert_eq!(to_vec(&ya), to_vec(&yb));

    let wrong = err_text(ResNetModel::load(
        &ResNetConfig::resnet20(),
        &path,
        &Device::Cpu,
    ));
    assert!(
        wrong.contains("model.safetensors"),
        "error does not name the file: {wrong}"
    );
    let missing = err_text(ResNetModel::load(
        &cfg,
        &dir.path().join("nope.safetensors"),
        &Device::Cpu,
    ));
    assert!(missing.contains("nope.safetensors"), "{missing}");
}

#[test]
fn save_into_missing_directory_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/model.safetensors");
    let model = ResNetModel::new(&ResNetConfig::with_depth(8), &Device::Cpu, 0).unwrap();
    let err = model.save(&path).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(!path.exists());
}

#[test]
fn fixture_init_state_loads_by_name() {
    let fx = common::load_fixture("resnet20_option_b.safetensors");
    let init = common::with_prefix(&fx, "init.");
    let cfg = ResNetConfig::resnet20().with_shortcut(Shortcut::Projection);
    let model = ResNetModel::from_tensors(&cfg, &init, &Device::Cpu).unwrap();
    for (name, t) in model.state_dict().unwrap() {
        assert_eq!(to_vec(&t), to_vec(&init[&name]), "{name}");
    }
}
