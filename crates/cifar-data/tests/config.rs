//! The serde configs as they appear inside a YAML run config.

use cifar_data::{AugmentConfig, LoaderConfig, NormalizationConfig, SplitConfig, SplitStrategy};
use serde::Deserialize;

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Run {
    #[serde(default)]
    split: SplitConfig,
    #[serde(default)]
    normalization: NormalizationConfig,
    #[serde(default)]
    loader: LoaderConfig,
}

fn parse(s: &str) -> Result<Run, serde_yaml::Error> {
    serde_yaml::from_str(s)
}

#[test]
fn empty_config_gives_documented_defaults() {
    let r = parse("{}").unwrap();
    assert_eq!(
        r.split,
        SplitConfig {
            strategy: SplitStrategy::Last,
            val_size: 5000,
            seed: 0
        }
    );
    assert_eq!(r.normalization, NormalizationConfig::PerPixelMean);
    assert_eq!(
        r.loader,
        LoaderConfig {
            batch_size: 128,
            shuffle: true,
            drop_last: false,
            augment: Some(AugmentConfig {
                pad: 4,
                crop: true,
                flip: true
            }),
            seed: 0,
            prefetch: 2,
        }
    );
}

#[test]
fn documented_examples_parse() {
    let r = parse(
        "split: { strategy: random, val_size: 100, seed: 7 }\n\
         normalization: { kind: per_channel, mean: [0.4914, 0.4822, 0.4465], std: [0.2470, 0.2435, 0.2616] }\n\
         loader: { batch_size: 500, shuffle: false, augment: null }\n",
    )
    .unwrap();
    assert_eq!(r.split.strategy, SplitStrategy::Random);
    assert_eq!((r.split.val_size, r.split.seed), (100, 7));
    assert_eq!(
        r.normalization,
        NormalizationConfig::PerChannel {
            mean: Some([0.4914, 0.4822, 0.4465]),
            std: Some([0.2470, 0.2435, 0.2616])
        }
    );
    assert_eq!(r.loader.augment, None);
    assert_eq!(r.loader.batch_size, 500);
    assert!(r.loader.prefetch == 2 && !r.loader.shuffle);

    let r = parse("split: { strategy: none }\nnormalization: { kind: per_channel }\nloader: { augment: { flip: false } }").unwrap();
    assert_eq!(r.split.strategy, SplitStrategy::None);
    assert_eq!(
        r.normalization,
        NormalizationConfig::PerChannel {
            mean: None,
            std: None
        }
    );
    assert_eq!(
        r.loader.augment,
        Some(AugmentConfig {
            flip: false,
            ..Default::default()
        })
    );
}

#[test]
fn unknown_fields_are_rejected() {
    for bad in [
        "split: { strategy: last, val: 5 }",
        "split: { strategy: sideways }",
        "normalization: { kind: per_channel, means: [0, 0, 0] }",
        "normalization: { kind: zca }",
        "loader: { batchsize: 3 }",
        "loader: { augment: { padding: 2 } }",
    ] {
        let err = parse(bad).expect_err(bad);
        let _ = err.to_string();
    }
}

#[test]
fn round_trip_through_yaml() {
    let r = parse("normalization: { kind: per_channel, std: [1, 2, 3] }").unwrap();
    let yaml = serde_yaml::to_string(&r.normalization).unwrap();
    let back: NormalizationConfig = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(back, r.normalization);
    let yaml = serde_yaml::to_string(&r.loader).unwrap();
    assert_eq!(
        serde_yaml::from_str::<LoaderConfig>(&yaml).unwrap(),
        r.loader
    );
    let yaml = serde_yaml::to_string(&r.split).unwrap();
    assert_eq!(serde_yaml::from_str::<SplitConfig>(&yaml).unwrap(), r.split);
}
