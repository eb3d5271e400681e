use super::*;
use resnet_model::ResNetModel;

fn sample(iteration: u64) -> Checkpoint {
    let cfg = ResNetConfig::with_depth(8);
    let model = ResNetModel::new(&cfg, &Device::Cpu, 3).unwrap();
    let state = model.state_dict().unwrap();
    let momentum: BTreeMap<String, Tensor> = model
        .parameters()
        .into_iter()
        .map(|(k, v)| (k, (v.as_tensor() * 0.5).unwrap()))
        .collect();
    let mean: Vec<f32> = (0..cifar_data::IMAGE_BYTES)
        .map(|i| i as f32 / 4000.0)
        .collect();
    let std = vec![0.25; cifar_data::IMAGE_BYTES];
    Checkpoint {
        meta: CheckpointMeta {
            format_version: FORMAT_VERSION,
            iteration,
            epoch: iteration / 7,
            batch_in_epoch: iteration % 7,
            batches_per_epoch: 7,
            seed: 11,
            best_val: Some((0.5, 7)),
            epoch_stats: RunningStats {
                loss_sum: 1.5,
                correct: 3,
                images: 9,
                steps: 2,
                seconds: 0.25,
            },
            window_stats: RunningStats::default(),
            elapsed_s: 12.5,
            architecture: cfg,
            class_names: vec!["a".into(), "b".into()],
            config_yaml: "name: t\n".into(),
            config_digest: "00".into(),
            written_at: "now".into(),
            data_crc32c: None,
        },
        model: state,
        momentum,
        normalizer: Normalizer::from_parts(mean, std).unwrap(),
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

/// The running sums in the metadata go through JSON; an exact resume needs every f64 back
/// bit for bit. serde_json's default float parser is off by one ulp for ~10% of values
/// (994.1414234139935 is one), which made a resumed run log a different training loss;
/// the workspace enables its `float_roundtrip` feature.
#[test]
fn metadata_floats_round_trip_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    let mut c = sample(9);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64 * 1000.0
    };
    for i in 0..20 {
        let v = if i == 0 { 994.1414234139935 } else { next() };
        c.meta.window_stats.loss_sum = v;
        c.meta.epoch_stats.loss_sum = next();
        c.meta.window_stats.seconds = next();
        c.meta.elapsed_s = next();
        c.meta.best_val = Some((next() / 1000.0, 7));
        c.write(&path).unwrap();
        let mut back = Checkpoint::read_meta(&path).unwrap();
        assert_eq!(
            back.window_stats.loss_sum.to_bits(),
            v.to_bits(),
            "{v:?} came back as {:?}",
            back.window_stats.loss_sum
        );
        // The writer adds the data checksum; everything else comes back as it was.
        assert!(back.data_crc32c.take().is_some());
        assert_eq!(back, c.meta);
    }
}

#[test]
fn round_trip_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    let c = sample(9);
    c.write(&path).unwrap();
    let mut back = Checkpoint::read(&path, &Device::Cpu).unwrap();
    assert!(back.meta.data_crc32c.take().is_some());
    assert_eq!(back.meta, c.meta);
    assert_eq!(back.normalizer, c.normalizer);
    assert_eq!(
        back.model.keys().collect::<Vec<_>>(),
        c.model.keys().collect::<Vec<_>>()
    );
    for (k, t) in &c.model {
        assert_eq!(bits(t), bits(&back.model[k]), "{k}");
    }
    for (k, t) in &c.momentum {
        assert_eq!(bits(t), bits(&back.momentum[k]), "{k}");
    }
    let mut meta = Checkpoint::read_meta(&path).unwrap();
    assert!(meta.data_crc32c.take().is_some());
    assert_eq!(meta, c.meta);
    // The model crate reads the architecture from the same file.
    assert_eq!(
        resnet_model::io::read_config(&path).unwrap(),
        Some(ResNetConfig::with_depth(8))
    );
    // Names follow the documented layout.
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names = st.names();
    assert!(names.contains(&"model.conv1.weight"));
    assert!(names.contains(&"model.bn1.running_var"));
    assert!(names.contains(&"optim.momentum_buffer.linear.weight"));
    assert!(names.contains(&"data.mean") && names.contains(&"data.std"));
}

#[test]
fn truncated_and_plain_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.safetensors");
    sample(1).write(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = Checkpoint::read(&cut, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cut.safetensors") && e.contains("truncated or corrupt"),
        "{e}"
    );
    std::fs::write(&cut, b"hello").unwrap();
    let e = WeightsFile::open(&cut, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a valid safetensors file"), "{e}");

    // A plain state dict (as PyTorch exports it) opens as raw weights, not as a checkpoint.
    let model = ResNetModel::new(&ResNetConfig::with_depth(8), &Device::Cpu, 0).unwrap();
    let plain = dir.path().join("plain.safetensors");
    let state: HashMap<String, Tensor> = model.state_dict().unwrap().into_iter().collect();
    candle_core::safetensors::save(&state, &plain).unwrap();
    match WeightsFile::open(&plain, &Device::Cpu).unwrap() {
        WeightsFile::Raw {
            tensors,
            architecture,
        } => {
            assert!(tensors.contains_key("conv1.weight"));
            assert_eq!(architecture, None);
        }
        WeightsFile::Checkpoint(_) => panic!("a plain file is not a checkpoint"),
    }
    let e = Checkpoint::read_meta(&plain).unwrap_err().to_string();
    assert!(
        e.contains("plain weights file") && e.contains("but not resumed"),
        "{e}"
    );
}

#[test]
fn keeps_last_k_latest_and_best() {
    let dir = tempfile::tempdir().unwrap();
    let ck = CheckpointDir::new(dir.path().join("checkpoints"), 2).unwrap();
    assert_eq!(ck.newest().unwrap(), None);
    for (it, best) in [(7, true), (14, false), (21, true), (28, false)] {
        let p = ck.save(&sample(it), best).unwrap();
        assert_eq!(p, ck.iteration_path(it));
    }
    let kept: Vec<u64> = ck.periodic().unwrap().into_iter().map(|(i, _)| i).collect();
    assert_eq!(kept, [21, 28]);
    assert_eq!(Checkpoint::read_meta(&ck.latest()).unwrap().iteration, 28);
    assert_eq!(Checkpoint::read_meta(&ck.best()).unwrap().iteration, 21);
    assert_eq!(ck.newest().unwrap(), Some(ck.latest()));
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(ck.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
}

/// NaN or Inf anywhere (model, momentum, bare weights) is refused with the first bad tensor
/// named, instead of scoring a meaningless accuracy.
#[test]
fn non_finite_weights_are_refused_with_the_tensor_named() {
    let tmp = tempfile::tempdir().unwrap();
    // A checkpoint whose layer2.0.conv1.weight holds a NaN.
    let mut ck = sample(5);
    let name = "layer2.0.conv1.weight";
    let t = &ck.model[name];
    let mut v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[3] = f32::NAN;
    ck.model.insert(
        name.into(),
        Tensor::from_vec(v, t.dims(), &Device::Cpu).unwrap(),
    );
    let p = tmp.path().join("nan.safetensors");
    ck.write(&p).unwrap();
    for e in [
        Checkpoint::read(&p, &Device::Cpu).unwrap_err().to_string(),
        WeightsFile::open(&p, &Device::Cpu).unwrap_err().to_string(),
    ] {
        assert!(
            e.contains("nan.safetensors")
                && e.contains("`model.layer2.0.conv1.weight` holds NaN at flat index 3"),
            "{e}"
        );
    }
    // Bare weights with +Inf in a running variance.
    let model = ResNetModel::new(&ResNetConfig::with_depth(8), &Device::Cpu, 1).unwrap();
    let mut state = model.state_dict().unwrap();
    let rv = "bn1.running_var";
    let n = state[rv].elem_count();
    state.insert(
        rv.into(),
        Tensor::from_vec(vec![f32::INFINITY; n], n, &Device::Cpu).unwrap(),
    );
    let p = tmp.path().join("inf.safetensors");
    resnet_model::io::write_state(&ResNetConfig::with_depth(8), &state, &p).unwrap();
    let e = WeightsFile::open(&p, &Device::Cpu).unwrap_err().to_string();
    assert!(
        e.contains("`bn1.running_var` holds inf at flat index 0"),
        "{e}"
    );
    // The untouched checkpoint still loads.
    let p = tmp.path().join("ok.safetensors");
    sample(5).write(&p).unwrap();
    Checkpoint::read(&p, &Device::Cpu).unwrap();
}

/// Resume takes the newest checkpoint (by iteration) that verifies: a truncated `latest`
/// falls back to the intact `iter-N` beside it; an `iter-N` newer than `latest` (a kill
/// between the two writes) wins; a flipped data byte is caught by the checksum.
#[test]
fn newest_good_skips_damaged_and_stale_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let ck = CheckpointDir::new(dir.path().join("checkpoints"), 5).unwrap();
    assert_eq!(ck.newest_good().unwrap(), None);
    ck.save(&sample(7), false).unwrap();
    ck.save(&sample(14), false).unwrap();
    assert_eq!(ck.newest_good().unwrap(), Some((ck.latest(), 14)));

    // latest truncated: iter-14 is used.
    let bytes = std::fs::read(ck.latest()).unwrap();
    std::fs::write(ck.latest(), &bytes[..bytes.len() / 2]).unwrap();
    assert_eq!(ck.newest_good().unwrap(), Some((ck.iteration_path(14), 14)));

    // A kill after iter-21 was written but before latest was replaced.
    std::fs::write(ck.latest(), &bytes).unwrap();
    let newer = sample(21);
    newer.write(&ck.iteration_path(21)).unwrap();
    assert_eq!(ck.newest_good().unwrap(), Some((ck.iteration_path(21), 21)));

    // One flipped byte in iter-21's tensor data: the checksum refuses it, latest (14) wins.
    let mut b = std::fs::read(ck.iteration_path(21)).unwrap();
    let last = b.len() - 5;
    b[last] ^= 0x40;
    std::fs::write(ck.iteration_path(21), &b).unwrap();
    let e = Checkpoint::read(&ck.iteration_path(21), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not match the checksum"), "{e}");
    assert_eq!(ck.newest_good().unwrap(), Some((ck.latest(), 14)));

    // Nothing usable: the error lists every file.
    for (_, p) in ck.periodic().unwrap() {
        std::fs::write(&p, b"junk").unwrap();
    }
    std::fs::write(ck.latest(), b"junk").unwrap();
    let e = ck.newest_good().unwrap_err().to_string();
    assert!(
        e.contains("no checkpoint can be resumed")
            && e.contains("iter-0000007")
            && e.contains("latest.safetensors"),
        "{e}"
    );
}

/// A checkpoint written before checksums existed (no `data_crc32c`) still reads.
#[test]
fn checkpoints_without_a_checksum_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("old.safetensors");
    let bytes = sample(3).to_bytes().unwrap();
    let (_, st) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let md = st.metadata().clone().unwrap();
    let mut meta: serde_json::Value = serde_json::from_str(&md[METADATA_KEY]).unwrap();
    assert!(meta["data_crc32c"].is_u64());
    meta.as_object_mut().unwrap().remove("data_crc32c");
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut md2 = md.clone();
    md2.insert(METADATA_KEY.into(), meta.to_string());
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors.tensors();
    let old = safetensors::serialize(views, Some(md2)).unwrap();
    std::fs::write(&p, old).unwrap();
    let back = Checkpoint::read(&p, &Device::Cpu).unwrap();
    assert_eq!(back.meta.data_crc32c, None);
    assert_eq!(back.meta.iteration, 3);
}

/// Temporaries of dead processes are removed on start; those of live ones stay; the
/// retention rule is re-applied.
#[test]
fn clean_up_removes_stale_temporaries_and_extra_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let ck = CheckpointDir::new(dir.path().join("checkpoints"), 2).unwrap();
    for it in [7, 14] {
        ck.save(&sample(it), false).unwrap();
    }
    // A kill during pruning left a third periodic checkpoint.
    sample(3).write(&ck.iteration_path(3)).unwrap();
    // A PID beyond the kernel's maximum cannot be running.
    let dead = ck.dir().join(".iter-0000021.safetensors.tmp-4294967295");
    let dead_root = dir.path().join(".report.json.tmp-4294967295");
    let live = ck
        .dir()
        .join(format!(".latest.safetensors.tmp-{}", std::process::id()));
    for p in [&dead, &dead_root, &live] {
        std::fs::write(p, b"partial").unwrap();
    }
    let removed = ck.clean_up(&[dir.path()]).unwrap();
    if Path::new("/proc/self").exists() {
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(!dead.exists() && !dead_root.exists());
    }
    assert!(live.exists(), "a live process's temporary is kept");
    let kept: Vec<u64> = ck.periodic().unwrap().into_iter().map(|(i, _)| i).collect();
    assert_eq!(kept, [7, 14]);
}
