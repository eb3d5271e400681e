//! Shared helpers of the `ops_*` tests: seeded random tensors, comparisons, gradients of a
//! random linear functional, finite differences in f64.
#![allow(dead_code)]

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// A seeded generator for test data (candle's own CPU RNG cannot be seeded).
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Values drawn from `N(mean, std²)`.
pub fn normal_vec(rng: &mut ChaCha8Rng, n: usize, mean: f32, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| mean + std * rng.sample::<f32, _>(StandardNormal))
        .collect()
}

/// A random f32 CPU tensor with `N(mean, std²)` entries.
pub fn randn(rng: &mut ChaCha8Rng, dims: &[usize], mean: f32, std: f32) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_vec(normal_vec(rng, n, mean, std), dims, &Device::Cpu).unwrap()
}

/// A random trainable f32 CPU variable.
pub fn randn_var(rng: &mut ChaCha8Rng, dims: &[usize], mean: f32, std: f32) -> Var {
    Var::from_tensor(&randn(rng, dims, mean, std)).unwrap()
}

/// All entries of a tensor as f64.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `max |a - b|` and `max |b|`.
pub fn diff(a: &Tensor, b: &Tensor) -> (f64, f64) {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let (a, b) = (values(a), values(b));
    let d = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    let m = b.iter().map(|y| y.abs()).fold(0.0, f64::max);
    (d, m)
}

/// The project's agreement criterion: `max |ours - ref| <= rel * max |ref|`.
pub fn assert_close(what: &str, ours: &Tensor, reference: &Tensor, rel: f64) {
    let (d, m) = diff(ours, reference);
    assert!(
        d <= rel * m,
        "{what}: max|d| = {d:e} > {rel:e} * max|ref| = {:e}",
        rel * m
    );
}

/// Bitwise equality of two f32 tensors.
pub fn assert_bits_eq(what: &str, a: &Tensor, b: &Tensor) {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a.len(), b.len(), "{what}: length");
    let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
    assert!(same, "{what}: results differ bitwise");
}

/// `Σ y * r`: a random linear functional of `y`, so that its gradient w.r.t. `y` is `r`.
pub fn functional(y: &Tensor, r: &Tensor) -> Result<Tensor> {
    (y * r)?.sum_all()
}

/// Gradients of `Σ y(vars) * r` w.r.t. each of `vars`, in order.
pub fn grads(y: &Tensor, r: &Tensor, vars: &[&Var]) -> Vec<Tensor> {
    let g = functional(y, r).unwrap().backward().unwrap();
    vars.iter()
        .map(|v| g.get(v.as_tensor()).expect("missing gradient").clone())
        .collect()
}

/// Central finite-difference gradient of the scalar `f(inputs)` w.r.t. input `which`,
/// evaluated in f64 on every coordinate (inputs are converted to f64 first).
pub fn numeric_grad(
    inputs: &[Tensor],
    which: usize,
    h: f64,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> Tensor {
    let base: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.to_dtype(DType::F64).unwrap())
        .collect();
    let dims = base[which].dims().to_vec();
    let flat = values(&base[which]);
    let eval = |vals: &[f64]| -> f64 {
        let mut args = base.clone();
        args[which] = Tensor::from_slice(vals, dims.as_slice(), &Device::Cpu).unwrap();
        f(&args).unwrap().to_scalar::<f64>().unwrap()
    };
    let mut out = Vec::with_capacity(flat.len());
    let mut v = flat.clone();
    for i in 0..flat.len() {
        v[i] = flat[i] + h;
        let up = eval(&v);
        v[i] = flat[i] - h;
        let down = eval(&v);
        v[i] = flat[i];
        out.push((up - down) / (2.0 * h));
    }
    Tensor::from_vec(out, dims, &Device::Cpu).unwrap()
}

/// Runs `f` on a private rayon pool of `threads` threads.
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}
