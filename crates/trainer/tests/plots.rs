//! Chart rendering: real PNG files with two series, a log axis, and degenerate inputs.

use trainer::plots::{line_chart, PlotError, Series, CHART_SIZE};

fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    (w, h)
}

fn curves() -> Vec<Series> {
    let train = (0..=200)
        .map(|i| (i as f64 * 10.0, 2.3 * (-(i as f64) / 60.0).exp() + 0.05))
        .collect();
    let val = (0..=20)
        .map(|i| (i as f64 * 100.0, 2.3 * (-(i as f64) / 6.5).exp() + 0.25))
        .collect();
    vec![
        Series {
            name: "train".into(),
            points: train,
        },
        Series {
            name: "validation".into(),
            points: val,
        },
    ]
}

#[test]
fn renders_two_series_png() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loss.png");
    line_chart(
        &path,
        "Cross-entropy loss",
        "iteration",
        "loss",
        &curves(),
        false,
    )
    .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(png_size(&bytes), CHART_SIZE);
    // Keep a copy for eyeballing when asked to.
    if let Ok(out) = std::env::var("PLOT_OUT_DIR") {
        std::fs::copy(&path, std::path::Path::new(&out).join("loss.png")).unwrap();
        line_chart(
            &std::path::Path::new(&out).join("loss_log.png"),
            "Loss (log)",
            "iteration",
            "loss",
            &curves(),
            true,
        )
        .unwrap();
    }
    // Only the chart is left in the folder (the temporary file was renamed).
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("loss.png")]);
}

#[test]
fn log_axis_and_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lr.png");
    let lr = Series {
        name: "lr".into(),
        points: vec![
            (0.0, 0.1),
            (31900.0, 0.1),
            (32000.0, 0.01),
            (47900.0, 0.01),
            (48000.0, 0.001),
            (64000.0, 0.001),
        ],
    };
    line_chart(
        &path,
        "Learning rate",
        "iteration",
        "lr",
        std::slice::from_ref(&lr),
        true,
    )
    .unwrap();
    if let Ok(out) = std::env::var("PLOT_OUT_DIR") {
        std::fs::copy(&path, std::path::Path::new(&out).join("lr.png")).unwrap();
    }
    let first = std::fs::read(&path).unwrap();
    line_chart(
        &path,
        "Learning rate",
        "iteration",
        "lr",
        &[lr.clone(), lr],
        true,
    )
    .unwrap();
    assert_ne!(first, std::fs::read(&path).unwrap());
}

#[test]
fn degenerate_inputs_still_render() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<Series>, bool)> = vec![
        ("none.png", vec![], false),
        (
            "empty.png",
            vec![Series {
                name: "a".into(),
                points: vec![],
            }],
            true,
        ),
        (
            "single.png",
            vec![Series {
                name: "a".into(),
                points: vec![(5.0, 0.0)],
            }],
            false,
        ),
        (
            "nan.png",
            vec![Series {
                name: "a".into(),
                points: vec![
                    (0.0, 1.0),
                    (1.0, f64::NAN),
                    (2.0, f64::INFINITY),
                    (3.0, 2.0),
                ],
            }],
            false,
        ),
        (
            "log_nonpositive.png",
            vec![Series {
                name: "a".into(),
                points: vec![(0.0, 0.0), (1.0, -1.0)],
            }],
            true,
        ),
    ];
    for (name, series, log_y) in cases {
        let path = dir.path().join(name);
        line_chart(&path, name, "x", "y", &series, log_y).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            png_size(&std::fs::read(&path).unwrap()),
            CHART_SIZE,
            "{name}"
        );
    }
}

#[test]
fn missing_directory_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/dir/loss.png");
    let err = line_chart(&path, "t", "x", "y", &curves(), false).unwrap_err();
    assert!(
        matches!(err, PlotError::Draw { .. } | PlotError::Io { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("loss.png"), "{err}");
}
