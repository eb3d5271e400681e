use super::*;
use crate::schedule::WarmupMode;

fn configs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

fn err(text: &str, overrides: &[&str]) -> String {
    let o: Vec<Override> = overrides
        .iter()
        .map(|s| Override::parse(s).unwrap())
        .collect();
    RunConfig::from_yaml(text, "test.yaml", &o)
        .unwrap_err()
        .to_string()
}

#[test]
fn built_in_config_is_the_documented_default_and_the_paper_recipe() {
    let cfg = RunConfig::paper_default();
    assert_eq!(cfg, RunConfig::default());
    assert_eq!(RunConfig::from_yaml("", "empty.yaml", &[]).unwrap(), cfg);
    assert_eq!(cfg.model, ResNetConfig::resnet20());
    assert_eq!(cfg.data.split.val_size, 5000);
    assert_eq!(cfg.data.normalization, NormalizationConfig::PerPixelMean);
    assert_eq!(
        cfg.data.augment,
        Some(AugmentConfig {
            pad: 4,
            crop: true,
            flip: true
        })
    );
    assert_eq!(
        (cfg.optimizer.momentum, cfg.optimizer.weight_decay),
        (0.9, 1e-4)
    );
    assert_eq!(cfg.schedule, LrScheduleConfig::paper());
    assert_eq!(cfg.training.batch_size, 128);
    assert_eq!(cfg.training.max_iterations, 64_000);
}

#[test]
fn every_shipped_config_is_valid() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(configs_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let cfg = RunConfig::from_file(&path, &[]).unwrap();
            names.push((
                path.file_stem().unwrap().to_string_lossy().into_owned(),
                cfg,
            ));
        }
    }
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let get = |n: &str| &names.iter().find(|(k, _)| k == n).unwrap().1;
    for (n, depth) in [
        ("resnet20", 20),
        ("resnet32", 32),
        ("resnet44", 44),
        ("resnet56", 56),
        ("resnet110", 110),
    ] {
        let c = get(n);
        assert_eq!(c.model.depth, depth);
        assert_eq!(c.name, n);
        // Everything but the depth, the name and the ResNet-110 warm-up is the paper recipe.
        let mut same = c.clone();
        same.model.depth = 20;
        same.name = "resnet20".into();
        same.schedule.warmup = None;
        assert_eq!(same, RunConfig::default(), "{n}");
    }
    let w = get("resnet110").schedule.warmup.clone().unwrap();
    assert_eq!(w.iterations, 400);
    assert_eq!(w.mode, WarmupMode::Constant { lr: 0.01 });
    assert_eq!(get("resnet110").schedule.lr_at(399), 0.01);
    assert_eq!(get("resnet110").schedule.lr_at(400), 0.1);
    let smoke = get("smoke");
    assert_eq!(smoke.model.depth, 8);
    assert!(smoke.training.max_iterations <= 100);
}

#[test]
fn unknown_keys_and_wrong_types_name_key_and_line() {
    let e = err("name: x\nmodel:\n  depth: 20\n  dpth: 3\n", &[]);
    assert!(
        e.contains("test.yaml") && e.contains("model") && e.contains("dpth"),
        "{e}"
    );
    assert!(e.contains("line 4"), "{e}");
    let e = err("training:\n  batch_size: lots\n", &[]);
    assert!(
        e.contains("training.batch_size") && e.contains("line 2"),
        "{e}"
    );
    let e = err("bogus: 1\n", &[]);
    assert!(e.contains("bogus") && e.contains("line 1"), "{e}");
    let e = err("name: x\nseed: 1\nbogus: 1\n", &[]);
    assert!(e.contains("bogus") && e.contains("line 3"), "{e}");
    let e = err("model: [1, 2\n", &[]);
    assert!(e.contains("test.yaml") && e.contains("line"), "{e}");
}

#[test]
fn invalid_values_name_key_and_line() {
    let text = "name: x\nmodel:\n  depth: 21\n";
    let e = err(text, &[]);
    assert!(
        e.starts_with("test.yaml line 3: invalid value for `model.depth`"),
        "{e}"
    );
    assert!(e.contains("6n + 2") && e.contains("21"), "{e}");

    let e = err(
        "schedule:\n  kind: {type: constant}\n  base_lr: -0.1\n",
        &[],
    );
    assert!(
        e.starts_with("test.yaml line 3: invalid value for `schedule.base_lr`"),
        "{e}"
    );

    let e = err("training:\n  max_iterations: 10\n  batch_size: 0\n", &[]);
    assert!(
        e.starts_with("test.yaml line 3: invalid value for `training.batch_size`"),
        "{e}"
    );

    let e = err(
        "schedule:\n  kind: {type: piecewise, milestones: [5, 3], gamma: 0.1}\n",
        &[],
    );
    assert!(
        e.contains("line 2: invalid value for `schedule.kind.milestones`"),
        "{e}"
    );

    let e = err("optimizer:\n  momentum: 1.5\n", &[]);
    assert!(
        e.contains("line 2: invalid value for `optimizer.momentum`"),
        "{e}"
    );

    let e = err("name: a/b\n", &[]);
    assert!(e.contains("line 1: invalid value for `name`"), "{e}");

    let e = err("data:\n  split: {strategy: last, val_size: 0}\n", &[]);
    assert!(
        e.contains("line 2: invalid value for `data.split.val_size`"),
        "{e}"
    );
}

#[test]
fn overrides_apply_and_are_named_in_errors() {
    let text = "model:\n  depth: 20\n";
    let o = |s: &str| Override::parse(s).unwrap();
    let cfg = RunConfig::from_yaml(
        text,
        "t.yaml",
        &[
            o("model.depth=56"),
            o("training.max_iterations=400"),
            o("data.augment=null"),
        ],
    )
    .unwrap();
    assert_eq!(cfg.model.depth, 56);
    assert_eq!(cfg.training.max_iterations, 400);
    assert_eq!(cfg.data.augment, None);

    let e = err(text, &["model.depth=21"]);
    assert!(
        e.contains("(set by `--set model.depth=21`)") && e.contains("`model.depth`"),
        "{e}"
    );
    let e = err(text, &["model.dpth=3"]);
    assert!(
        e.contains("dpth") && e.contains("--set model.dpth=3"),
        "{e}"
    );
    let e = err(text, &["training.batch_size=big"]);
    assert!(e.contains("training.batch_size"), "{e}");
}

#[test]
fn yaml_round_trip_and_digest() {
    let cfg = RunConfig::paper_default();
    let back = RunConfig::from_yaml(&cfg.to_yaml(), "round-trip", &[]).unwrap();
    assert_eq!(back, cfg);
    assert_eq!(back.digest(), cfg.digest());
    let mut other = cfg.clone();
    other.seed = 1;
    assert_ne!(other.digest(), cfg.digest());
    assert_eq!(cfg.digest().len(), 64);
}

/// An empty or comment-only config file is refused (it used to start the full paper run);
/// a file with some keys keeps the defaults for the others.
#[test]
fn empty_config_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("empty.yaml", ""),
        ("blank.yaml", "\n  \n"),
        ("comments.yaml", "# nothing here\n# still nothing\n"),
        ("null.yaml", "~\n"),
    ] {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        let e = RunConfig::from_file(&p, &[]).unwrap_err().to_string();
        assert!(
            e.contains(name) && e.contains("holds no settings") && e.contains("give no CONFIG"),
            "{e}"
        );
    }
    let p = tmp.path().join("some.yaml");
    std::fs::write(&p, "seed: 3\n").unwrap();
    let cfg = RunConfig::from_file(&p, &[]).unwrap();
    assert_eq!(cfg.seed, 3);
    assert_eq!(cfg.training.max_iterations, 64_000);
}

/// Sizes beyond what can be built are config errors with the limit in the message (a depth
/// of 6,000,002 used to abort the process in the allocator).
#[test]
fn sizes_are_bounded_with_the_limit_named() {
    let e = err("", &["model.depth=6000002"]);
    assert!(
        e.contains("`model.depth`") && e.contains("at most 2000") && e.contains("6000002"),
        "{e}"
    );
    let e = err("model:\n  base_width: 4096\n", &[]);
    assert!(
        e.contains("line 2") && e.contains("`model.base_width`") && e.contains("at most 1024"),
        "{e}"
    );
    let e = err("", &["training.batch_size=1000000"]);
    assert!(
        e.contains("`training.batch_size`") && e.contains("at most 65536"),
        "{e}"
    );
    let e = err("", &["training.eval_batch_size=70000"]);
    assert!(e.contains("`training.eval_batch_size`"), "{e}");
    // The limits themselves are accepted.
    let ok = |set: &str| {
        RunConfig::from_yaml("", "t.yaml", &[Override::parse(set).unwrap()]).unwrap();
    };
    ok("model.depth=1202");
    ok(&format!("training.batch_size={MAX_BATCH}"));
}

/// A `--set` value of the wrong type names the key and the argument (it used to say only
/// "invalid type: string \"abc\", expected usize").
#[test]
fn set_type_error_names_the_key() {
    let e = err("", &["seed=4", "training.batch_size=abc"]);
    assert!(
        e.contains("invalid value for `training.batch_size`")
            && e.contains("--set training.batch_size=abc")
            && e.contains("expected usize"),
        "{e}"
    );
    let e = err("", &["model.depth=[1]"]);
    assert!(e.contains("`model.depth`"), "{e}");
}
