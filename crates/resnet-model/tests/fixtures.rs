//! The model against PyTorch golden fixtures (see `shared/fixtures/README.md`): eval logits,
//! two training steps' logits, loss and gradients, and the state after a reference SGD step
//! (running statistics included).

mod common;

use std::collections::{BTreeSet, HashMap};

use candle_core::{Device, Tensor, Var};
use common::{load_fixture, with_prefix, Report};
use resnet_model::{ResNetConfig, ResNetModel, Shortcut};

const LR: f64 = 0.1;
const MOMENTUM: f64 = 0.9;
const WEIGHT_DECAY: f64 = 1e-4;

/// PyTorch's SGD (dampening 0, no Nesterov): `d = g + wd * p`; `buf = d` on the first step,
/// else `buf = momentum * buf + d`; `p -= lr * buf`.
#[derive(Default)]
struct ReferenceSgd {
    buffers: HashMap<String, Tensor>,
}

impl ReferenceSgd {
    fn step(&mut self, params: &[(String, Var)], grads: &candle_core::backprop::GradStore) {
        for (name, var) in params {
            let p = var.as_tensor().detach();
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for `{name}`"));
            let d = (g + (&p * WEIGHT_DECAY).unwrap()).unwrap();
            let buf = match self.buffers.get(name) {
                None => d,
                Some(b) => ((b * MOMENTUM).unwrap() + d).unwrap(),
            };
            var.set(&(&p - (&buf * LR).unwrap()).unwrap()).unwrap();
            self.buffers.insert(name.clone(), buf);
        }
    }
}

fn run_fixture(file: &str, cfg: &ResNetConfig, expected_params: usize) {
    let fx = load_fixture(file);
    let dev = Device::Cpu;
    let model = ResNetModel::from_tensors(cfg, &with_prefix(&fx, "init."), &dev)
        .unwrap_or_else(|e| panic!("{file}: loading init.* failed: {e}"));
    assert_eq!(
        model.num_parameters(),
        expected_params,
        "{file}: parameter count"
    );
    let mut report = Report::default();

    // Eval mode on batch 1 with the initial running statistics.
    let x1 = &fx["batch1.input"];
    let logits = model.forward_t(x1, false).unwrap();
    report.check("eval.logits", &logits, &fx["eval.logits"]);

    let mut sgd = ReferenceSgd::default();
    for step in 1..=2 {
        let x = &fx[&format!("batch{step}.input")];
        let y = &fx[&format!("batch{step}.labels")];
        let logits = model.forward_t(x, true).unwrap();
        report.check(
            &format!("step{step}.logits"),
            &logits,
            &fx[&format!("step{step}.logits")],
        );
        let loss = candle_nn::loss::cross_entropy(&logits, y).unwrap();
        report.check(
            &format!("step{step}.loss"),
            &loss,
            &fx[&format!("step{step}.loss")],
        );

        let grads = loss.backward().unwrap();
        let params = model.parameters();
        let ref_grads = with_prefix(&fx, &format!("step{step}.grad."));
        let ours: BTreeSet<&String> = params.iter().map(|(n, _)| n).collect();
        let theirs: BTreeSet<&String> = ref_grads.keys().collect();
        if ours != theirs {
            report.fail(format!(
                "step{step}: parameter names differ from the fixture's gradients: \
                 ours only {:?}, fixture only {:?}",
                ours.difference(&theirs).collect::<Vec<_>>(),
                theirs.difference(&ours).collect::<Vec<_>>()
            ));
        }
        for (name, var) in &params {
            match (grads.get(var.as_tensor()), ref_grads.get(name)) {
                (Some(g), Some(r)) => report.check(&format!("step{step}.grad.{name}"), g, r),
                (None, _) => report.fail(format!("step{step}: no gradient for `{name}`")),
                (_, None) => {}
            }
        }

        sgd.step(&params, &grads);
        let state = model.state_dict().unwrap();
        let after = with_prefix(&fx, &format!("step{step}.after."));
        let ours: BTreeSet<&String> = state.keys().collect();
        let theirs: BTreeSet<&String> = after.keys().collect();
        assert_eq!(
            ours, theirs,
            "{file}: state names differ from step{step}.after.*"
        );
        for (name, t) in &state {
            report.check(&format!("step{step}.after.{name}"), t, &after[name]);
        }
    }
    report.finish(file);
}

#[test]
fn resnet20_option_a_matches_pytorch() {
    run_fixture(
        "resnet20_option_a.safetensors",
        &ResNetConfig::resnet20(),
        269_722,
    );
}

#[test]
fn resnet20_option_b_matches_pytorch() {
    run_fixture(
        "resnet20_option_b.safetensors",
        &ResNetConfig::resnet20().with_shortcut(Shortcut::Projection),
        272_474,
    );
}

#[test]
fn resnet8_option_a_matches_pytorch() {
    run_fixture(
        "resnet8_option_a.safetensors",
        &ResNetConfig::with_depth(8),
        75_290,
    );
}
