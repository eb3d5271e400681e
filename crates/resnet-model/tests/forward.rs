//! Forward-pass behaviour: shapes, train vs eval, running statistics, input errors.

use candle_core::{DType, Device, Tensor};
use resnet_model::{ResNetConfig, ResNetModel, Shortcut};

fn batch(n: usize) -> Tensor {
    Tensor::arange(0f32, (n * 3 * 32 * 32) as f32, &Device::Cpu)
        .unwrap()
        .reshape((n, 3, 32, 32))
        .unwrap()
        .affine(1.0 / 4096.0, -0.5)
        .unwrap()
        .sin()
        .unwrap()
}

fn buffers(model: &ResNetModel) -> Vec<Vec<f32>> {
    model
        .buffers()
        .iter()
        .map(|(_, v)| v.as_tensor().to_vec1::<f32>().unwrap())
        .collect()
}

#[test]
fn logits_shape_and_eval_leaves_state_alone() {
    for shortcut in [
        Shortcut::IdentityPad,
        Shortcut::Projection,
        Shortcut::AllProjection,
    ] {
        let cfg = ResNetConfig {
            num_classes: 7,
            ..ResNetConfig::with_depth(8).with_shortcut(shortcut)
        };
        let model = ResNetModel::new(&cfg, &Device::Cpu, 5).unwrap();
        let before = buffers(&model);
        let y = model.forward_t(&batch(3), false).unwrap();
        assert_eq!(y.dims(), [3, 7]);
        assert_eq!(
            buffers(&model),
            before,
            "{shortcut:?}: eval changed running stats"
        );
        let y2 = model.forward_t(&batch(3), false).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), y2.to_vec2::<f32>().unwrap());

        model.forward_t(&batch(3), true).unwrap();
        let after = buffers(&model);
        assert!(
            after.iter().zip(&before).all(|(a, b)| a != b),
            "{shortcut:?}: train left some running stats unchanged"
        );
    }
}

#[test]
fn train_mode_updates_running_stats_like_pytorch() {
    let model = ResNetModel::new(&ResNetConfig::with_depth(8), &Device::Cpu, 5).unwrap();
    let x = batch(2);
    model.forward_t(&x, true).unwrap();
    // The stem BatchNorm sees conv1(x): check its update by recomputing the batch stats.
    let w = model.state_dict().unwrap()["conv1.weight"].clone();
    let h = x.conv2d(&w, 1, 1, 1, 1).unwrap(); // [2, 16, 32, 32]
    let ht = h.transpose(0, 1).unwrap().flatten_from(1).unwrap();
    let m = ht.dim(1).unwrap() as f64;
    let mean = ht.mean(1).unwrap();
    let var = ht
        .broadcast_sub(&mean.unsqueeze(1).unwrap())
        .unwrap()
        .sqr()
        .unwrap()
        .mean(1)
        .unwrap();
    let rm = (mean * 0.1).unwrap();
    let rv = ((var * (0.1 * m / (m - 1.0))).unwrap() + 0.9).unwrap();
    let state = model.state_dict().unwrap();
    for (name, expected) in [("bn1.running_mean", rm), ("bn1.running_var", rv)] {
        let got = state[name].to_vec1::<f32>().unwrap();
        let exp = expected.to_vec1::<f32>().unwrap();
        for (g, e) in got.iter().zip(&exp) {
            assert!(
                (g - e).abs() <= 1e-5 * e.abs().max(1.0),
                "{name}: {g} vs {e}"
            );
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    let model = ResNetModel::new(&ResNetConfig::with_depth(8), &Device::Cpu, 5).unwrap();
    let gray = Tensor::zeros((2, 1, 32, 32), DType::F32, &Device::Cpu).unwrap();
    let err = model.forward_t(&gray, false).unwrap_err().to_string();
    assert!(err.contains("[N, 3, H, W]"), "{err}");
    let flat = Tensor::zeros((2, 3072), DType::F32, &Device::Cpu).unwrap();
    assert!(model.forward_t(&flat, false).is_err());
    // One value per channel cannot be batch-normalized (PyTorch raises too).
    let one = Tensor::zeros((1, 3, 1, 1), DType::F32, &Device::Cpu).unwrap();
    let err = model.forward_t(&one, true).unwrap_err().to_string();
    assert!(err.contains("more than one value per channel"), "{err}");
    // 2x2 images: the stem sees 4 values per channel, the last stage 1; the error comes
    // before any running statistic changes
    let before = buffers(&model);
    let small = Tensor::zeros((1, 3, 2, 2), DType::F32, &Device::Cpu).unwrap();
    let err = model.forward_t(&small, true).unwrap_err().to_string();
    assert!(err.contains("more than one value per channel"), "{err}");
    assert_eq!(
        buffers(&model),
        before,
        "a failed step changed running stats"
    );
}

#[test]
fn gradients_reach_every_parameter_and_no_buffer() {
    let cfg = ResNetConfig::with_depth(8).with_shortcut(Shortcut::AllProjection);
    let model = ResNetModel::new(&cfg, &Device::Cpu, 9).unwrap();
    let y = model.forward_t(&batch(2), true).unwrap();
    let loss = candle_nn::loss::cross_entropy(&y, &Tensor::new(&[1u32, 4], &Device::Cpu).unwrap())
        .unwrap();
    let grads = loss.backward().unwrap();
    for (name, var) in model.parameters() {
        assert!(
            grads.get(var.as_tensor()).is_some(),
            "no gradient for {name}"
        );
    }
    for (name, var) in model.buffers() {
        assert!(
            grads.get(var.as_tensor()).is_none(),
            "gradient for buffer {name}"
        );
    }
}

#[test]
fn predict_equals_eval_forward_and_records_no_graph() {
    for shortcut in [
        Shortcut::IdentityPad,
        Shortcut::Projection,
        Shortcut::AllProjection,
    ] {
        let cfg = ResNetConfig::with_depth(8).with_shortcut(shortcut);
        let model = ResNetModel::new(&cfg, &Device::Cpu, 11).unwrap();
        // move the running statistics away from their initial values first
        model.forward_t(&batch(4), true).unwrap();
        let before = buffers(&model);
        let x = batch(3);
        let eval = model.forward_t(&x, false).unwrap();
        let pred = model.predict(&x).unwrap();
        assert!(
            eval.track_op(),
            "an eval forward through Var weights records the graph"
        );
        assert!(!pred.track_op(), "predict must not record the graph");
        let (a, b) = (
            eval.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            pred.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(
            a, b,
            "{shortcut:?}: predict differs from forward_t(x, false)"
        );
        assert_eq!(
            buffers(&model),
            before,
            "predict changed the running statistics"
        );
        // gradients still flow after a predict call (the no-grad mode ends with it)
        let loss = model.forward_t(&x, true).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let (_, w) = &model.parameters()[0];
        assert!(grads.get(w.as_tensor()).is_some());
    }
}

/// A batch larger than `PREDICT_SUB_BATCH` goes through the network in sub-batches: the
/// logits are those of one eval pass over the whole batch, bit for bit for the full
/// sub-batches and up to the last bits for a shorter last one (candle's matmul in the final
/// linear layer picks its kernels by the number of rows).
#[test]
fn predict_in_sub_batches_equals_one_eval_pass() {
    let cfg = ResNetConfig::with_depth(8).with_shortcut(Shortcut::Projection);
    let model = ResNetModel::new(&cfg, &Device::Cpu, 12).unwrap();
    model.forward_t(&batch(4), true).unwrap();
    let sub = resnet_model::PREDICT_SUB_BATCH;
    let n = 2 * sub + 21;
    let x = batch(n);
    let pred = model.predict(&x).unwrap();
    assert_eq!(pred.dims(), [n, 10]);
    assert!(!pred.track_op());
    let whole = model.forward_t(&x, false).unwrap();
    let (p, w) = (
        pred.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        whole.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    );
    let max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = p
        .iter()
        .zip(&w)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        worst <= 1e-6 * max,
        "sub-batches differ by {worst} (max |logit| {max})"
    );
    // the full sub-batches match their rows of the single pass bit for bit
    assert_eq!(p[..2 * sub * 10], w[..2 * sub * 10]);
    // a sub-batch equal to the whole batch: bit for bit
    let x = batch(sub);
    let (a, b) = (
        model.predict(&x).unwrap(),
        model.forward_t(&x, false).unwrap(),
    );
    assert_eq!(
        a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
}
