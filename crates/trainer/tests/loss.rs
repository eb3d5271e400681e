//! Cross-entropy against PyTorch: `stepk.loss` is the mean cross-entropy of `stepk.logits` on
//! `batchk.labels` (i64 labels, as PyTorch stores them).

use std::path::PathBuf;

use candle_core::Device;
use trainer::loss::{accuracy_count, cross_entropy};

#[test]
fn cross_entropy_matches_pytorch_fixtures() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures");
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
            let n = accuracy_count(logits, labels).unwrap();
            assert!(n <= 8, "{file}: {n} correct of 8");
        }
    }
}
