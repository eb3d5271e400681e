//! Unit tests of the SGD update rule against hand computations and an f64 reference.

use super::*;
use candle_core::Device;

fn scalar_var(v: f32) -> Var {
    Var::new(&[v], &Device::Cpu).unwrap()
}

fn grads_for(vars: &[(&Var, f32)]) -> GradStore {
    let mut g = GradStore::default();
    for (v, x) in vars {
        g.insert(v.as_tensor(), Tensor::new(&[*x], &Device::Cpu).unwrap());
    }
    g
}

fn val(v: &Var) -> f64 {
    v.as_tensor().to_vec1::<f32>().unwrap()[0] as f64
}

/// Reference implementation on f64 scalars, transcribed from torch.optim.SGD.
fn reference(p0: f64, grads: &[f64], lr: f64, c: SgdConfig) -> Vec<f64> {
    let (mut p, mut buf, mut out) = (p0, None::<f64>, vec![]);
    for &g in grads {
        let mut d = g + c.weight_decay * p;
        if c.momentum != 0.0 {
            let b = match buf {
                None => d,
                Some(b) => c.momentum * b + (1.0 - c.dampening) * d,
            };
            buf = Some(b);
            d = if c.nesterov { d + c.momentum * b } else { b };
        }
        p -= lr * d;
        out.push(p);
    }
    out
}

#[test]
fn hand_computed_nesterov_and_dampening() -> Result<()> {
    // Nesterov, momentum 0.9, wd 0.1, p0 = 1, lr 0.5, grads 2 then -1:
    // step 1: d = 2 + 0.1 = 2.1, buf = 2.1, d = 2.1 + 0.9*2.1 = 3.99, p = 1 - 1.995 = -0.995
    // step 2: d = -1 - 0.0995 = -1.0995, buf = 1.89 - 1.0995 = 0.7905,
    //         d = -1.0995 + 0.71145 = -0.38805, p = -0.995 + 0.194025 = -0.800975
    let c = SgdConfig {
        momentum: 0.9,
        weight_decay: 0.1,
        dampening: 0.0,
        nesterov: true,
        decay_bn_and_bias: true,
    };
    let p = scalar_var(1.0);
    let mut opt = Sgd::new(vec![("p".into(), p.clone())], c)?;
    opt.step(&grads_for(&[(&p, 2.0)]), 0.5)?;
    assert!((val(&p) + 0.995).abs() < 1e-6, "{}", val(&p));
    opt.step(&grads_for(&[(&p, -1.0)]), 0.5)?;
    assert!((val(&p) + 0.800975).abs() < 1e-6, "{}", val(&p));

    // Dampening 0.5, momentum 0.5, no decay, p0 = 0, lr 1, grads 1, 1, 1:
    // buf: 1, 0.5 + 0.5 = 1, 1; p: -1, -2, -3 (the first step is undampened).
    let c = SgdConfig {
        momentum: 0.5,
        weight_decay: 0.0,
        dampening: 0.5,
        nesterov: false,
        decay_bn_and_bias: true,
    };
    let p = scalar_var(0.0);
    let mut opt = Sgd::new(vec![("p".into(), p.clone())], c)?;
    for want in [-1.0, -2.0, -3.0] {
        opt.step(&grads_for(&[(&p, 1.0)]), 1.0)?;
        assert!((val(&p) - want).abs() < 1e-6, "{} vs {want}", val(&p));
    }
    Ok(())
}

#[test]
fn matches_reference_for_config_grid() -> Result<()> {
    let grads = [0.3, -1.2, 0.7, 2.0, -0.1];
    for momentum in [0.0, 0.9] {
        for dampening in [0.0, 0.3] {
            for nesterov in [false, true] {
                let c = SgdConfig {
                    momentum,
                    weight_decay: 5e-2,
                    dampening,
                    nesterov,
                    decay_bn_and_bias: true,
                };
                if c.validate().is_err() {
                    continue;
                }
                let p = scalar_var(0.8);
                let mut opt = Sgd::new(vec![("p".into(), p.clone())], c)?;
                for (g, want) in grads.iter().zip(reference(0.8, &grads, 0.05, c)) {
                    opt.step(&grads_for(&[(&p, *g as f32)]), 0.05)?;
                    assert!(
                        (val(&p) - want).abs() < 1e-5,
                        "{c:?}: {} vs {want}",
                        val(&p)
                    );
                }
            }
        }
    }
    Ok(())
}

#[test]
fn no_decay_for_1d_params_when_disabled() -> Result<()> {
    let dev = Device::Cpu;
    let w = Var::new(&[[1f32, 1.0], [1.0, 1.0]], &dev)?;
    let b = Var::new(&[1f32, 1.0], &dev)?;
    let c = SgdConfig {
        momentum: 0.0,
        weight_decay: 0.5,
        decay_bn_and_bias: false,
        ..SgdConfig::default()
    };
    let mut opt = Sgd::new(vec![("b".into(), b.clone()), ("w".into(), w.clone())], c)?;
    let mut g = GradStore::default();
    g.insert(
        w.as_tensor(),
        Tensor::zeros((2, 2), candle_core::DType::F32, &dev)?,
    );
    g.insert(
        b.as_tensor(),
        Tensor::zeros(2, candle_core::DType::F32, &dev)?,
    );
    opt.step(&g, 1.0)?;
    assert_eq!(b.as_tensor().to_vec1::<f32>()?, vec![1.0, 1.0]);
    assert_eq!(
        w.as_tensor().to_vec2::<f32>()?,
        vec![vec![0.5, 0.5], vec![0.5, 0.5]]
    );
    // With the default, the bias decays too.
    let b2 = Var::new(&[1f32, 1.0], &dev)?;
    let mut opt = Sgd::new(
        vec![("b".into(), b2.clone())],
        SgdConfig {
            decay_bn_and_bias: true,
            ..c
        },
    )?;
    let mut g = GradStore::default();
    g.insert(
        b2.as_tensor(),
        Tensor::zeros(2, candle_core::DType::F32, &dev)?,
    );
    opt.step(&g, 1.0)?;
    assert_eq!(b2.as_tensor().to_vec1::<f32>()?, vec![0.5, 0.5]);
    Ok(())
}

#[test]
fn param_without_grad_is_untouched() -> Result<()> {
    let (a, b) = (scalar_var(1.0), scalar_var(1.0));
    let mut opt = Sgd::new(
        vec![("a".into(), a.clone()), ("b".into(), b.clone())],
        SgdConfig::default(),
    )?;
    opt.step(&grads_for(&[(&a, 1.0)]), 0.1)?;
    assert_eq!(val(&b), 1.0);
    assert_ne!(val(&a), 1.0);
    let names: Vec<String> = opt.momentum_buffers().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["a"]);
    Ok(())
}

#[test]
fn momentum_buffers_round_trip() -> Result<()> {
    let grads = [0.5f32, -0.25, 1.0, 0.125];
    let run = |split: Option<usize>| -> Result<f64> {
        let p = scalar_var(2.0);
        let q = Var::new(&[[0.5f32, -0.5]], &Device::Cpu)?;
        let mk = |p: &Var, q: &Var| {
            Sgd::new(
                vec![("q".into(), q.clone()), ("p".into(), p.clone())],
                SgdConfig::default(),
            )
        };
        let mut opt = mk(&p, &q)?;
        for (i, g) in grads.iter().enumerate() {
            if Some(i) == split {
                // Simulate a checkpoint: fresh optimizer, restore buffers from a map.
                let saved: HashMap<String, Tensor> = opt.momentum_buffers().into_iter().collect();
                assert_eq!(saved.len(), 2);
                opt = mk(&p, &q)?;
                opt.load_momentum_buffers(&saved)?;
            }
            let mut gs = grads_for(&[(&p, *g)]);
            gs.insert(q.as_tensor(), Tensor::new(&[[*g, -*g]], &Device::Cpu)?);
            opt.step(&gs, 0.1)?;
        }
        Ok(val(&p))
    };
    let straight = run(None)?;
    assert_eq!(straight, run(Some(2))?);
    // Without restoring, the result differs (the buffers matter).
    assert_ne!(straight, {
        let p = scalar_var(2.0);
        let mut opt = Sgd::new(vec![("p".into(), p.clone())], SgdConfig::default())?;
        for (i, g) in grads.iter().enumerate() {
            if i == 2 {
                opt = Sgd::new(vec![("p".into(), p.clone())], SgdConfig::default())?;
            }
            opt.step(&grads_for(&[(&p, *g)]), 0.1)?;
        }
        val(&p)
    });
    Ok(())
}

#[test]
fn strict_buffer_loading() -> Result<()> {
    let p = scalar_var(1.0);
    let mut opt = Sgd::new(vec![("p".into(), p.clone())], SgdConfig::default())?;
    let unknown = HashMap::from([("zz".to_string(), Tensor::new(&[1f32], &Device::Cpu)?)]);
    let e = opt.load_momentum_buffers(&unknown).unwrap_err().to_string();
    assert!(e.contains("`zz`"), "{e}");
    let wrong = HashMap::from([("p".to_string(), Tensor::new(&[1f32, 2.0], &Device::Cpu)?)]);
    let e = opt.load_momentum_buffers(&wrong).unwrap_err().to_string();
    assert!(e.contains("`p`") && e.contains("shape"), "{e}");
    assert!(opt.momentum_buffers().is_empty());
    Ok(())
}

#[test]
fn config_validation_names_field() {
    let f = |c: SgdConfig| c.validate().unwrap_err().field;
    let d = SgdConfig::default();
    d.validate().unwrap();
    assert_eq!(
        f(SgdConfig {
            momentum: -0.1,
            ..d
        }),
        "momentum"
    );
    assert_eq!(
        f(SgdConfig {
            weight_decay: -1e-4,
            ..d
        }),
        "weight_decay"
    );
    assert_eq!(
        f(SgdConfig {
            dampening: 1.5,
            ..d
        }),
        "dampening"
    );
    assert_eq!(
        f(SgdConfig {
            nesterov: true,
            momentum: 0.0,
            ..d
        }),
        "nesterov"
    );
    assert_eq!(
        f(SgdConfig {
            nesterov: true,
            dampening: 0.1,
            ..d
        }),
        "nesterov"
    );
    let dup = Sgd::new(
        vec![("p".into(), scalar_var(0.0)), ("p".into(), scalar_var(0.0))],
        d,
    );
    assert!(dup.err().unwrap().to_string().contains("`p`"));
}
