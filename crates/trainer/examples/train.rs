//! ResNet-20 on CIFAR-10 with a hand-written loop over the library's pieces (data, model,
//! optimizer, schedule, loss, evaluation): what `resnet-cli train` does, minus checkpoints,
//! metrics and validation. `cargo run --release -p trainer --example train -- DATA_DIR
//! ITERATIONS` (defaults: data/cifar-10, 300; install the data with `cargo xtask fetch-cifar`).
use std::sync::Arc;

use candle_core::Device;
use cifar_data::{BatchLoader, LoaderConfig, NormalizationConfig, Normalizer, SplitConfig};
use resnet_model::{ResNetConfig, ResNetModel};
use trainer::sgd::{Sgd, SgdConfig};
use trainer::{evaluate::evaluate, loss::cross_entropy, schedule::LrScheduleConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "data/cifar-10".into());
    let iterations: u64 = args.next().map_or(Ok(300), |n| n.parse())?;
    let device = Device::Cpu;

    // The paper's data: 45k/5k split, per-pixel mean subtraction, pad-crop-flip, batch 128.
    let splits = cifar_data::split(&cifar_data::load(dir.as_ref())?, &SplitConfig::default())?;
    let train = Arc::new(splits.train);
    let normalizer = Arc::new(Normalizer::fit(&NormalizationConfig::PerPixelMean, &train));
    let loader = BatchLoader::new(train, Arc::clone(&normalizer), LoaderConfig::default());

    // ResNet-20 (option-A shortcuts, He init from seed 0); SGD with momentum 0.9 and weight
    // decay 1e-4; lr 0.1, divided by 10 at iterations 32k and 48k.
    let model = ResNetModel::new(&ResNetConfig::with_depth(20), &device, 0)?;
    let mut sgd = Sgd::new(model.parameters(), SgdConfig::default())?;
    let schedule = LrScheduleConfig::paper();

    let mut iteration = 0;
    'training: for epoch in 0.. {
        for batch in loader.epoch(epoch, 0) {
            let (x, y) = batch.to_tensors(&device)?;
            let loss = cross_entropy(&model.forward_t(&x, true)?, &y, 0.0)?;
            sgd.step(&loss.backward()?, schedule.lr_at(iteration))?;
            iteration += 1;
            if iteration % 50 == 0 {
                println!(
                    "iteration {iteration}: loss {:.4}",
                    loss.to_scalar::<f32>()?
                );
            }
            if iteration == iterations {
                break 'training;
            }
        }
    }

    let names: Vec<String> = cifar_data::CLASS_NAMES.map(String::from).to_vec();
    let test = evaluate(&model, &Arc::new(splits.test), &normalizer, 500, &names)?;
    println!(
        "test accuracy after {iteration} iterations: {:.2}% ({}/{})",
        100.0 * test.accuracy,
        test.correct,
        test.total
    );
    Ok(())
}
