//! Property tests of the loaders that read user files: YAML run configs, safetensors weights
//! and checkpoints, and image files. Random and mutated inputs give an error or a valid
//! result, never a panic.

use std::collections::HashMap;

use candle_core::Device;
use proptest::prelude::*;
use resnet_model::{ResNetConfig, ResNetModel};
use trainer::checkpoint::WeightsFile;
use trainer::config::{RunConfig, DEFAULT_CONFIG_YAML};

/// A small valid weights file (ResNet-8) as bytes.
fn weights_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.safetensors");
    ResNetModel::new(&ResNetConfig::with_depth(8), &Device::Cpu, 1)
        .unwrap()
        .save(&p)
        .unwrap();
    std::fs::read(p).unwrap()
}

/// A small valid PNG as bytes.
fn png_bytes() -> Vec<u8> {
    let img = image::RgbImage::from_fn(7, 5, |x, y| image::Rgb([x as u8 * 30, y as u8 * 40, 9]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
    for &(at, v) in edits {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = v;
        }
    }
    let keep = bytes.len().saturating_sub(cut);
    bytes.truncate(keep);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// The built-in config with characters replaced: parses and validates, or an error.
    #[test]
    fn mutated_yaml_configs_fail_cleanly(
        edits in proptest::collection::vec((any::<usize>(), prop::sample::select(
            vec![b' ', b':', b'-', b'[', b'{', b'\n', b'0', b'9', b'x', b'#', b'"', b'\t'],
        )), 1..6),
        cut in 0usize..200,
    ) {
        let bytes = mutate(DEFAULT_CONFIG_YAML.as_bytes().to_vec(), &edits, cut);
        let text = String::from_utf8_lossy(&bytes);
        match RunConfig::from_yaml(&text, "mutated.yaml", &[]) {
            Ok(cfg) => prop_assert!(cfg.model.depth >= 8),
            Err(e) => prop_assert!(e.to_string().contains("mutated.yaml"), "{}", e),
        }
    }

    /// Arbitrary text as a config.
    #[test]
    fn random_yaml_fails_cleanly(text in "[ -~\n]{0,300}") {
        let _ = RunConfig::from_yaml(&text, "random.yaml", &[]);
    }

    /// A weights file with bytes overwritten (header length, JSON header, tensor data) and cut
    /// short: loads (and then builds the model) or is refused with the file named.
    #[test]
    fn mutated_weights_files_fail_cleanly(
        edits in proptest::collection::vec((0usize..4096, any::<u8>()), 0..6),
        cut in prop_oneof![Just(0usize), 1usize..100_000],
        huge_len in any::<bool>(),
    ) {
        let mut bytes = mutate(weights_bytes(), &edits, cut);
        if huge_len && bytes.len() >= 8 {
            // A header length far beyond the file: must not be trusted.
            bytes[..8].copy_from_slice(&(u64::MAX / 3).to_le_bytes());
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mutated.safetensors");
        std::fs::write(&p, &bytes).unwrap();
        match WeightsFile::open(&p, &Device::Cpu) {
            Ok(WeightsFile::Raw { tensors, .. }) => {
                let map: HashMap<_, _> = tensors;
                let _ = ResNetModel::from_tensors(&ResNetConfig::with_depth(8), &map, &Device::Cpu);
            }
            Ok(_) => {}
            Err(e) => prop_assert!(e.to_string().contains("mutated.safetensors"), "{}", e),
        }
    }

    /// Image files with bytes overwritten or cut: a 32x32 image or a clear error.
    #[test]
    fn mutated_images_fail_cleanly(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in 0usize..64,
    ) {
        let bytes = mutate(png_bytes(), &edits, cut);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mutated.png");
        std::fs::write(&p, &bytes).unwrap();
        match trainer::predict::load_image(&p) {
            Ok(chw) => prop_assert_eq!(chw.len(), 3 * 32 * 32),
            Err(e) => prop_assert!(e.to_string().contains("mutated.png"), "{}", e),
        }
    }
}
