#!/usr/bin/env python3
"""PyTorch reference for the ResNet-20 benchmark (CPU, or CUDA with --device cuda).

Same architecture and shapes as the Rust benchmark (crates/resnet-model/benches/throughput.rs):
ResNet-20 for CIFAR-10 (He et al. 2016, sec. 4.2), option-A shortcuts (x[:, :, ::2, ::2] plus
channel zero-padding), NCHW (optionally channels_last), eager or torch.compile (inductor,
default mode: --compile; the compilation happens in the warm-up steps, which are not timed).

Modes (run each in its own process so that the peak-memory figures are separate):
  train:  forward, cross-entropy, backward and an SGD step (lr 0.1, momentum 0.9, weight
          decay 1e-4) at batch 128 (--train-batch);
  infer:  eval-mode forward under torch.inference_mode() at batch 512 (--infer-batch).

Prints one line per mode, the same format as the Rust benchmark:
  RESULT impl=pytorch-... mode=train batch=128 threads=2 images_per_s=... step_ms=... cpu_ms_per_step=... peak_rss_mib=...
cpu_capability= is ATen's (and inductor's) vector ISA: AVX512, or AVX2 under ATEN_CPU_CAPABILITY=avx2.
With --device cuda the model and the batch live on CUDA device 0, every timed step ends with
torch.cuda.synchronize(), and the line adds device=cuda and peak_gpu_mib (the caching
allocator's peak). cudnn.benchmark stays at PyTorch's default (off) unless --cudnn-benchmark.
"""

import argparse
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = (planes - in_planes) // 2 if (stride != 1 or in_planes != planes) else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.pad is None:
            short = x
        else:
            short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + short)


class ResNet(nn.Module):
    def __init__(self, n=3, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in [(16, 1), (32, 2), (64, 2)]:
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def peak_rss_mib():
    # ru_maxrss is VmHWM in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(args):
    torch.manual_seed(0)
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = args.cudnn_benchmark
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = ResNet(n=args.n).to(dev, memory_format=fmt)
    net = torch.compile(model) if args.compile else model
    train = args.mode == "train"
    batch = args.train_batch if train else args.infer_batch
    x = torch.randn(batch, 3, 32, 32).to(dev, memory_format=fmt)
    y = torch.randint(0, 10, (batch,)).to(dev)
    if train:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
    else:
        model.eval()

        sub = args.infer_sub_batch or batch

        def step():
            with torch.inference_mode():
                torch.cat([net(part) for part in x.split(sub)])

    t_warm = time.perf_counter()
    for _ in range(args.warmup):
        step()
    sync()
    warmup_s = time.perf_counter() - t_warm
    times = []
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(args.iters):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    total = sum(times)
    med = statistics.median(times)
    layout = "channels_last" if args.channels_last else "nchw"
    how = "compile" if args.compile else "eager"
    gpu = f" device=cuda peak_gpu_mib={torch.cuda.max_memory_allocated() / 2**20:.0f}" if cuda else ""
    print(
        f"RESULT impl=pytorch-{torch.__version__}-{layout}-{how}{gpu} mode={args.mode} batch={batch} "
        f"{'' if train or not args.infer_sub_batch else f'sub_batch={args.infer_sub_batch} '}"
        f"threads={torch.get_num_threads()} images_per_s={batch * len(times) / total:.1f} "
        f"step_ms={1000 * med:.1f} cpu_ms_per_step={1000 * cpu / len(times):.0f} "
        f"peak_rss_mib={peak_rss_mib():.0f} warmup_s={warmup_s:.1f} "
        f"cpu_capability={torch.backends.cpu.get_cpu_capability()}",
        flush=True,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["train", "infer"], required=True)
    p.add_argument("--threads", type=int, required=True, help="torch.set_num_threads (match RAYON_NUM_THREADS)")
    p.add_argument("--n", type=int, default=3, help="blocks per stage (3 = ResNet-20)")
    p.add_argument("--train-batch", type=int, default=128)
    p.add_argument("--infer-batch", type=int, default=512)
    p.add_argument("--infer-sub-batch", type=int, default=0,
                   help="infer: run the batch through the network this many images at a time and "
                        "concatenate the logits, as ResNetModel::predict does with 64 (0: one pass)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile (inductor, default mode)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True (CUDA)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    run(args)


if __name__ == "__main__":
    main()
