//! Cross-entropy against PyTorch: `stepk.loss` is the mean cross-entropy of `stepk.logits` on
//! `batchk.labels` (i64 labels, as PyTorch stores them).

mod common;

use candle_core::Device;
use trainer::loss::{accuracy_count, cross_entropy};

#[test]
fn cross_entropy_matches_pytorch_fixtures() {
    let dir = common::fixtures_dir();
    for file in [
        "resnet20_option_a.safetensors",
        "resnet20_option_b.safetensors",
        "resnet8_option_a.safetensors",
    ] {
        let path = dir.join(file);
        assert!(path.is_file(), "fixture {} is missing", path.display());
        let t = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        for step in 1..=2 {
            let logits = &t[&format!("step{step}.logits")];
            let labels = &t[&format!("batch{step}.labels")];
            let want = t[&format!("step{step}.loss")]
                .to_dtype(candle_core::DType::F32)
                .unwrap();
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
            let ours = cross_entropy(logits, labels, 0.0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                (ours - want).abs() <= 1e-4 * want.abs(),
                "{file} step {step}: {ours} vs {want}"
            );
            // The count against an argmax computed here from PyTorch's logits.
            let rows = logits.to_vec2::<f32>().unwrap();
            let labs = labels
                .to_dtype(candle_core::DType::I64)
                .unwrap()
                .to_vec1::<i64>()
                .unwrap();
            let want_n = rows
                .iter()
                .zip(&labs)
                .filter(|(row, &l)| {
                    let arg = (0..row.len())
                        .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
                        .unwrap();
                    arg as i64 == l
                })
                .count();
            let n = accuracy_count(logits, labels).unwrap();
            assert_eq!(n, want_n, "{file} step {step}: correct count");
        }
    }
}
