//! Loading bare weights for inference, architecture inference, image preprocessing.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use resnet_model::{ResNetConfig, ResNetModel, Shortcut};
use trainer::inference::{infer_architecture, LoadedModel};
use trainer::predict::{load_image, predict_files};
use trainer::RunConfig;

fn export(model: &ResNetModel, path: &std::path::Path) {
    let state: HashMap<String, Tensor> = model.state_dict().unwrap().into_iter().collect();
    candle_core::safetensors::save(&state, path).unwrap();
}

#[test]
fn architecture_is_read_from_tensor_names() {
    for (depth, shortcut) in [
        (8, Shortcut::IdentityPad),
        (14, Shortcut::Projection),
        (8, Shortcut::AllProjection),
    ] {
        let cfg = ResNetConfig::with_depth(depth).with_shortcut(shortcut);
        let model = ResNetModel::new(&cfg, &Device::Cpu, 0).unwrap();
        let state: HashMap<String, Tensor> = model.state_dict().unwrap().into_iter().collect();
        assert_eq!(infer_architecture(&state), Some(cfg));
    }
    assert_eq!(infer_architecture(&HashMap::new()), None);
}

#[test]
fn bare_weights_use_the_configs_per_channel_normalization() {
    let dir = tempfile::tempdir().unwrap();
    let model = ResNetModel::new(&ResNetConfig::with_depth(8), &Device::Cpu, 1).unwrap();
    let raw = dir.path().join("pytorch.safetensors");
    export(&model, &raw);

    let yaml = "model: {depth: 8}\ndata:\n  normalization: {kind: per_channel, \
                mean: [0.4914, 0.4822, 0.4465], std: [0.2470, 0.2435, 0.2616]}\n";
    let cfg = RunConfig::from_yaml(yaml, "pc.yaml", &[]).unwrap();
    let loaded = LoadedModel::open(&raw, Some(&cfg), &Device::Cpu).unwrap();
    assert!(!loaded.needs_training_data());
    assert_eq!(loaded.iteration, None);
    let norm = loaded.normalizer(None);
    assert_eq!(norm.mean()[0], 0.4914);
    assert_eq!(norm.mean()[1024], 0.4822);
    assert_eq!(norm.std()[3071], 0.2616);
    // The weights are those of the file.
    let a = model.state_dict().unwrap();
    let b = loaded.model.state_dict().unwrap();
    for (k, t) in &a {
        let d = (t - &b[k]).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "{k}");
    }

    // Without a config: the paper config with the architecture read from the names; its
    // per-pixel mean must be fitted on training data.
    let loaded = LoadedModel::open(&raw, None, &Device::Cpu).unwrap();
    assert_eq!(loaded.model.config().depth, 8);
    assert!(loaded.needs_training_data());

    // A config for another network is a clear error naming both.
    let deeper = RunConfig::from_yaml("model: {depth: 20}\n", "r20.yaml", &[]).unwrap();
    let e = LoadedModel::open(&raw, Some(&deeper), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("pytorch.safetensors") && e.contains("resnet8-a") && e.contains("resnet20-a"),
        "{e}"
    );

    // A file that is not a ResNet state dict at all.
    let other = dir.path().join("other.safetensors");
    let t = HashMap::from([(
        "foo".to_string(),
        Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
    )]);
    candle_core::safetensors::save(&t, &other).unwrap();
    let e = LoadedModel::open(&other, Some(&cfg), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("other.safetensors") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn images_are_converted_resized_and_errors_are_per_file() {
    let dir = tempfile::tempdir().unwrap();
    // An exact 32x32 image keeps its pixels (CHW order).
    let img = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let small = dir.path().join("small.png");
    img.save(&small).unwrap();
    let px = load_image(&small).unwrap();
    assert_eq!(px.len(), 3072);
    assert_eq!((px[5], px[1024 + 32 * 9], px[2048]), (5, 9, 7));
    // A 96x64 uniform grey JPEG becomes a 32x32 uniform grey image.
    let grey = image::RgbImage::from_pixel(96, 64, image::Rgb([128, 128, 128]));
    let big = dir.path().join("big.jpg");
    grey.save(&big).unwrap();
    let px = load_image(&big).unwrap();
    assert!(
        px.iter().all(|&v| (126..=130).contains(&v)),
        "{:?}",
        &px[..8]
    );
    // A grayscale PNG with alpha is accepted too.
    let la = image::GrayAlphaImage::from_pixel(40, 40, image::LumaA([200, 10]));
    let la_path = dir.path().join("la.png");
    la.save(&la_path).unwrap();
    assert!(load_image(&la_path).unwrap().iter().all(|&v| v == 200));

    let text = dir.path().join("notes.png");
    std::fs::write(&text, "not an image").unwrap();
    let e = load_image(&text).unwrap_err().to_string();
    assert!(
        e.contains("notes.png") && e.contains("not a readable image"),
        "{e}"
    );
    let e = load_image(&dir.path().join("missing.png"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing.png") && e.contains("cannot open"),
        "{e}"
    );

    let model = ResNetModel::new(&ResNetConfig::with_depth(8), &Device::Cpu, 1).unwrap();
    let raw = dir.path().join("w.safetensors");
    export(&model, &raw);
    let cfg = RunConfig::from_yaml(
        "model: {depth: 8}\ndata: {normalization: {kind: per_channel, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]}}\n",
        "c.yaml",
        &[],
    )
    .unwrap();
    let loaded = LoadedModel::open(&raw, Some(&cfg), &Device::Cpu).unwrap();
    let norm = loaded.normalizer(None);
    let files = vec![small.clone(), text, big];
    let out = predict_files(&loaded, &norm, &files, 3).unwrap();
    assert_eq!(out.len(), 3);
    assert!(out[1].1.is_err());
    for i in [0, 2] {
        let preds = out[i].1.as_ref().unwrap();
        assert_eq!(preds.len(), 3);
        assert!(preds
            .windows(2)
            .all(|w| w[0].probability >= w[1].probability));
        assert!(preds
            .iter()
            .all(|p| p.probability > 0.0 && p.probability < 1.0));
        assert_eq!(preds[0].class, cifar_data::CLASS_NAMES[preds[0].index]);
    }
    // Batching does not change results: the same file alone gives the same probabilities.
    let alone = predict_files(&loaded, &norm, &[small], 3).unwrap();
    let (a, b) = (alone[0].1.as_ref().unwrap(), out[0].1.as_ref().unwrap());
    assert_eq!(a[0].index, b[0].index);
    assert!((a[0].probability - b[0].probability).abs() < 1e-6);
}
