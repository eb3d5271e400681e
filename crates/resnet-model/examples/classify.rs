//! Classify images with a CIFAR ResNet loaded from a safetensors file.
//!
//! ```text
//! cargo run -p resnet-model --example classify -- WEIGHTS.safetensors [options]
//!
//! Weights:
//!   --prefix P           use only tensors named P<name>, stripping P (e.g. `init.` to load
//!                        the starting weights of a golden fixture file)
//!   --depth D            network depth 6n+2   (default: from the file's metadata, else 20)
//!   --shortcut S         a | b | c            (default: from the file's metadata, else a)
//!   --classes K          number of classes    (default: from the file's metadata, else 10)
//!   --init SEED          first write a freshly He-initialized model to WEIGHTS
//!   --summary            print the layer table
//! Images (default: tensor `batch1.input` of WEIGHTS with `batch1.labels` if present):
//!   --inputs FILE:NAME   an f32 tensor [N, 3, 32, 32] of normalized images
//!   --labels FILE:NAME   integer labels [N], to report accuracy
//!   --cifar FILE.bin     a CIFAR-10 binary batch (e.g. test_batch.bin), normalized per channel
//!   --count N            images to take from --cifar (default 16)
//!   --mean R,G,B --std R,G,B   per-channel normalization for --cifar (default: the usual
//!                        CIFAR-10 statistics 0.4914,0.4822,0.4465 / 0.2470,0.2435,0.2616);
//!                        use what the weights were trained with
//! ```
//!
//! For example, with the golden fixtures beside the workspace:
//!
//! ```text
//! cargo run -p resnet-model --example classify -- \
//!     ../shared/fixtures/resnet20_option_a.safetensors --prefix init.
//! cargo run -p resnet-model --example classify -- /tmp/fresh.safetensors --init 7 --summary \
//!     --cifar cifar-10-batches-bin/test_batch.bin --count 8
//! ```

use std::collections::HashMap;
use std::error::Error;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, D};
use cifar_data::CLASS_NAMES;
use resnet_model::{io, ResNetConfig, ResNetModel, Shortcut};

const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;

type Res<T> = Result<T, Box<dyn Error>>;

#[derive(Default)]
struct Args {
    weights: PathBuf,
    prefix: Option<String>,
    depth: Option<usize>,
    shortcut: Option<Shortcut>,
    classes: Option<usize>,
    init: Option<u64>,
    summary: bool,
    inputs: Option<(PathBuf, String)>,
    labels: Option<(PathBuf, String)>,
    cifar: Option<PathBuf>,
    count: usize,
    mean: [f32; 3],
    std: [f32; 3],
}

fn file_and_name(s: &str) -> Res<(PathBuf, String)> {
    let (file, name) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("expected FILE:TENSOR, got `{s}`"))?;
    Ok((PathBuf::from(file), name.to_string()))
}

fn triple(s: &str) -> Res<[f32; 3]> {
    let v: Vec<f32> = s
        .split(',')
        .map(|x| x.trim().parse())
        .collect::<Result<_, _>>()?;
    v.try_into()
        .map_err(|_| format!("expected three comma-separated numbers, got `{s}`").into())
}

fn parse_args() -> Res<Args> {
    let mut args = Args {
        count: 16,
        mean: [0.4914, 0.4822, 0.4465],
        std: [0.2470, 0.2435, 0.2616],
        ..Default::default()
    };
    let mut it = std::env::args().skip(1);
    let mut weights = None;
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--prefix" => args.prefix = Some(value()?),
            "--depth" => args.depth = Some(value()?.parse()?),
            "--shortcut" => {
                args.shortcut = Some(match value()?.to_ascii_lowercase().as_str() {
                    "a" | "identity_pad" => Shortcut::IdentityPad,
                    "b" | "projection" => Shortcut::Projection,
                    "c" | "all_projection" => Shortcut::AllProjection,
                    other => {
                        return Err(format!("--shortcut: expected a, b or c, got `{other}`").into())
                    }
                })
            }
            "--classes" => args.classes = Some(value()?.parse()?),
            "--init" => args.init = Some(value()?.parse()?),
            "--summary" => args.summary = true,
            "--inputs" => args.inputs = Some(file_and_name(&value()?)?),
            "--labels" => args.labels = Some(file_and_name(&value()?)?),
            "--cifar" => args.cifar = Some(PathBuf::from(value()?)),
            "--count" => args.count = value()?.parse()?,
            "--mean" => args.mean = triple(&value()?)?,
            "--std" => args.std = triple(&value()?)?,
            "-h" | "--help" => {
                return Err(
                    "usage: classify WEIGHTS.safetensors [--prefix P] [--depth D] \
                    [--shortcut a|b|c] [--classes K] [--init SEED] [--summary] \
                    [--inputs FILE:NAME [--labels FILE:NAME] | --cifar FILE.bin [--count N] \
                    [--mean R,G,B --std R,G,B]] (see the example's source for details)"
                        .into(),
                )
            }
            s if s.starts_with("--") => {
                return Err(format!("unknown option {s} (try --help)").into())
            }
            s if weights.is_none() => weights = Some(PathBuf::from(s)),
            s => return Err(format!("unexpected argument `{s}`").into()),
        }
    }
    args.weights = weights.ok_or("missing WEIGHTS.safetensors argument (try --help)")?;
    Ok(args)
}

fn config(args: &Args, from_file: Option<ResNetConfig>) -> ResNetConfig {
    let mut cfg = from_file.unwrap_or_default();
    if let Some(d) = args.depth {
        cfg.depth = d;
    }
    if let Some(s) = args.shortcut {
        cfg.shortcut = s;
    }
    if let Some(k) = args.classes {
        cfg.num_classes = k;
    }
    cfg
}

fn load_model(args: &Args, device: &Device) -> Res<ResNetModel> {
    if let Some(seed) = args.init {
        let cfg = config(args, None);
        ResNetModel::new(&cfg, device, seed)?.save(&args.weights)?;
        println!(
            "wrote a fresh {} (seed {seed}) to {}",
            cfg.name(),
            args.weights.display()
        );
    }
    let cfg = config(args, io::read_config(&args.weights)?);
    let model = match &args.prefix {
        None => ResNetModel::load(&cfg, &args.weights, device)?,
        Some(prefix) => {
            let all = io::read_tensors(&args.weights, device)?;
            let tensors: HashMap<String, Tensor> = all
                .into_iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix.as_str()).map(|n| (n.to_string(), v)))
                .collect();
            ResNetModel::from_tensors(&cfg, &tensors, device)
                .map_err(|e| format!("{} (prefix `{prefix}`): {e}", args.weights.display()))?
        }
    };
    Ok(model)
}

fn read_named(path: &Path, name: &str, device: &Device) -> Res<Tensor> {
    let mut tensors = io::read_tensors(path, device)?;
    tensors
        .remove(name)
        .ok_or_else(|| format!("{}: no tensor `{name}`", path.display()).into())
}

/// Up to `count` images and labels of a CIFAR-10 binary batch, normalized per channel.
fn read_cifar(args: &Args, path: &Path, device: &Device) -> Res<(Tensor, Tensor)> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.is_empty() || bytes.len() % CIFAR_RECORD != 0 {
        return Err(format!(
            "{}: {} bytes is not a whole number of {CIFAR_RECORD}-byte CIFAR-10 records",
            path.display(),
            bytes.len()
        )
        .into());
    }
    let n = args.count.min(bytes.len() / CIFAR_RECORD);
    let mut pixels = Vec::with_capacity(n * (CIFAR_RECORD - 1));
    let mut labels = Vec::with_capacity(n);
    for record in bytes.chunks_exact(CIFAR_RECORD).take(n) {
        labels.push(u32::from(record[0]));
        for (c, plane) in record[1..].chunks_exact(32 * 32).enumerate() {
            pixels.extend(
                plane
                    .iter()
                    .map(|&p| (p as f32 / 255.0 - args.mean[c]) / args.std[c]),
            );
        }
    }
    Ok((
        Tensor::from_vec(pixels, (n, 3, 32, 32), device)?,
        Tensor::from_vec(labels, n, device)?,
    ))
}

fn inputs(args: &Args, device: &Device) -> Res<(Tensor, Option<Tensor>)> {
    if let Some(path) = &args.cifar {
        let (x, y) = read_cifar(args, path, device)?;
        return Ok((x, Some(y)));
    }
    let (file, name) = args
        .inputs
        .clone()
        .unwrap_or_else(|| (args.weights.clone(), "batch1.input".to_string()));
    let x = read_named(&file, &name, device)
        .map_err(|e| format!("{e} (give images with --inputs FILE:NAME or --cifar FILE.bin)"))?;
    let labels = match &args.labels {
        Some((f, n)) => Some(read_named(f, n, device)?),
        None if args.inputs.is_none() => read_named(&args.weights, "batch1.labels", device).ok(),
        None => None,
    };
    Ok((x, labels))
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let args = parse_args()?;
    let device = resnet_model::default_device()?;
    let model = load_model(&args, &device)?;
    println!(
        "{}: {} parameters, on {:?}",
        model.config().name(),
        model.num_parameters(),
        device
    );
    if args.summary {
        println!("{}", model.summary());
    }
    let (x, labels) = inputs(&args, &device)?;
    let logits = model.predict(&x)?;
    let probs = candle_nn::ops::softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
    let predicted = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let labels = match labels {
        Some(l) => Some(l.to_dtype(candle_core::DType::U32)?.to_vec1::<u32>()?),
        None => None,
    };
    let name = |c: u32| -> String {
        match CLASS_NAMES.get(c as usize) {
            Some(s) if model.config().num_classes == 10 => s.to_string(),
            _ => format!("class {c}"),
        }
    };
    let mut correct = 0;
    for (i, (&p, row)) in predicted.iter().zip(&probs).enumerate() {
        let truth = labels.as_ref().map(|l| l[i]);
        correct += usize::from(truth == Some(p));
        let truth = truth.map_or(String::new(), |t| format!("  (label: {})", name(t)));
        println!(
            "image {i:3}: {:<10} p = {:.3}{truth}",
            name(p),
            row[p as usize]
        );
    }
    if labels.is_some() {
        println!(
            "accuracy: {correct}/{} = {:.1}%",
            predicted.len(),
            100.0 * correct as f64 / predicted.len() as f64
        );
    }
    Ok(())
}
