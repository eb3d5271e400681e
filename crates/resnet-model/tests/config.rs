//! `ResNetConfig` / `Shortcut` serde forms and validation.

use resnet_model::{ResNetConfig, Shortcut};

#[test]
fn defaults_are_resnet20_option_a() {
    let cfg: ResNetConfig = serde_yaml::from_str("{}").unwrap();
    assert_eq!(cfg, ResNetConfig::resnet20());
    assert_eq!(cfg, ResNetConfig::default());
    assert_eq!(
        (
            cfg.depth,
            cfg.shortcut,
            cfg.num_classes,
            cfg.base_width,
            cfg.n()
        ),
        (20, Shortcut::IdentityPad, 10, 16, 3)
    );
}

#[test]
fn shortcut_names_and_letters() {
    for (text, expected) in [
        ("identity_pad", Shortcut::IdentityPad),
        ("a", Shortcut::IdentityPad),
        ("A", Shortcut::IdentityPad),
        ("projection", Shortcut::Projection),
        ("B", Shortcut::Projection),
        ("all_projection", Shortcut::AllProjection),
        ("c", Shortcut::AllProjection),
    ] {
        let cfg: ResNetConfig = serde_yaml::from_str(&format!("shortcut: {text}")).unwrap();
        assert_eq!(cfg.shortcut, expected, "{text}");
    }
    let yaml =
        serde_yaml::to_string(&ResNetConfig::resnet110().with_shortcut(Shortcut::AllProjection))
            .unwrap();
    assert!(yaml.contains("shortcut: all_projection"), "{yaml}");
    let back: ResNetConfig = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(back.depth, 110);
    assert!(serde_yaml::from_str::<ResNetConfig>("shortcut: d").is_err());
}

#[test]
fn unknown_fields_are_rejected() {
    let err = serde_yaml::from_str::<ResNetConfig>("depth: 20\nwidth: 3").unwrap_err();
    assert!(err.to_string().contains("width"), "{err}");
}

#[test]
fn validation() {
    for depth in [8, 14, 20, 32, 44, 56, 110, 1202] {
        let cfg = ResNetConfig::with_depth(depth);
        cfg.validate().unwrap();
        assert_eq!(6 * cfg.n() + 2, depth);
    }
    for depth in [0, 1, 2, 6, 9, 18, 21, 100] {
        let err = ResNetConfig::with_depth(depth)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`depth`") && err.contains(&depth.to_string()),
            "{err}"
        );
    }
    let odd = ResNetConfig {
        base_width: 15,
        ..Default::default()
    };
    assert!(odd
        .validate()
        .unwrap_err()
        .to_string()
        .contains("`base_width`"));
    odd.clone()
        .with_shortcut(Shortcut::Projection)
        .validate()
        .unwrap();
    let none = ResNetConfig {
        num_classes: 0,
        ..Default::default()
    };
    assert!(none
        .validate()
        .unwrap_err()
        .to_string()
        .contains("`num_classes`"));
}
