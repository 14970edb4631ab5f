#!/usr/bin/env python3
"""Times the authors' image-flow training step (train_img.py, imported from --ref, not copied)
on MNIST on the CPU, at the model of configs/mnist.toml: `--data mnist --imagesize 28
--nblocks 6-6-6 --dimh 64 --num_hidden_layers 3 --icnn 1`, batch 64, f32, their defaults
otherwise (actnorm, no factor-out, LogitTransform(1e-6), CG atol = rtol = 1e-3).

What runs is theirs: `train_img.cpflow_block_fn`, `MultiscaleFlow`, their data-dependent init
(the first forward), `train_img.compute_loss`, backward, `clip_grad_norm_(.., 1.)`, Adam(lr
1e-3, betas (0.9, 0.99), wd 1e-6) step, zero_grad and `ExponentialMovingAverage.apply` - the
body of `train_img.train` per batch. Their per-batch `gc.collect()` is timed apart (gc_s).

Differences (no code of theirs is changed):
  * torchvision (and tqdm, when missing) are not installed here, and their `lib.datasets`
    imports pandas for the tabular loaders: `train_img.py` imports all three at module level
    for its data loaders, `save_image` and progress bars, none of which the step uses; stub
    modules stand in.
  * batches are MNIST training images (the idx file of ../shared/data/mnist, first
    64 * (warmup + steps) images in order) dequantised with their `add_noise`, not drawn by
    their DataLoader (torchvision's MNIST class);
  * the DistributedDataParallel wrapper of their `main` is left out (one process, no
    process group on a CPU machine);
  * `torch.symeig` (removed from PyTorch) is installed as a wrapper of `torch.linalg.eigh`;
  * `Conv2d._conv_forward(x, weight)` (their PosConv2d; PyTorch 1.7 read the bias from `self`)
    is given back that signature: a missing bias argument means `self.bias`.

Prints one JSON object: seconds per step (median, mean, all), CG iterations per step (sum over
blocks, as their CG_ITERS_TRACER meter) and per block call, parameter count, threads.

Usage:
  ~/torch-venv/bin/python ref_img_step.py --ref ~/cpflow-ref [--steps 10] [--warmup 2]
      [--threads 2] [--batch 64] [--nblocks 6-6-6] [--out file.json]
"""
import argparse
import gc
import gzip
import json
import os
import statistics
import sys
import time
import types

MNIST_IDX = "/work/shared/data/mnist/train-images-idx3-ubyte.gz"


def stub_module(name):
    """An empty module with a spec (importlib.util.find_spec looks at it)."""
    import importlib.machinery
    m = types.ModuleType(name)
    m.__spec__ = importlib.machinery.ModuleSpec(name, None)
    sys.modules[name] = m
    return m


def stub_unused_imports():
    """torchvision, tqdm and lib.datasets are imported by train_img.py at module level for its
    data loaders, `save_image` and progress bars, none of which the step uses."""
    try:
        import tqdm  # noqa: F401
    except ImportError:
        stub_module("tqdm").tqdm = lambda it=None, *a, **k: it
    # Their `lib.datasets` (tabular loaders, imports pandas) only serves the MNIST loader.
    stub_module("lib.datasets")
    tv = stub_module("torchvision")
    for sub in ("transforms", "utils", "datasets"):
        setattr(tv, sub, stub_module("torchvision." + sub))
    sys.modules["torchvision.utils"].save_image = lambda *a, **k: None


def load_mnist(n, np):
    with gzip.open(MNIST_IDX, "rb") as f:
        raw = f.read()
    count = int.from_bytes(raw[4:8], "big")
    if n > count:
        raise SystemExit(f"{n} images requested, the file has {count}")
    pix = np.frombuffer(raw, dtype=np.uint8, offset=16, count=n * 784)
    return pix.reshape(n, 1, 28, 28).astype(np.float32) / 255.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ref", default=os.path.expanduser("~/cpflow-ref"))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--nblocks", default="6-6-6")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    a = p.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    def symeig(x, eigenvectors=False, upper=True):
        w, v = torch.linalg.eigh(x, UPLO="U" if upper else "L")
        return w, v
    torch.symeig = symeig
    # Their PosConv2d calls `Conv2d._conv_forward(x, weight)`, the PyTorch 1.7 signature (the
    # bias was read from `self`); PyTorch ≥ 1.8 takes the bias as an argument.
    conv_forward = torch.nn.Conv2d._conv_forward

    def conv_forward_17(self, x, weight, bias=None):
        return conv_forward(self, x, weight, self.bias if bias is None else bias)
    torch.nn.Conv2d._conv_forward = conv_forward_17
    stub_unused_imports()
    sys.path.insert(0, a.ref)
    real_stdout = sys.stdout
    sys.stdout = sys.stderr
    import train_img as ti
    import lib.flows as flows
    import lib.utils as utils
    from lib.multiscale_flow import MultiscaleFlow
    from functools import partial

    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    input_size = (a.batch, 1, 28, 28)
    model = MultiscaleFlow(
        input_size,
        block_fn=partial(ti.cpflow_block_fn, block_type="cvx", dimh=64, num_hidden_layers=3,
                         icnn_version=1, num_pooling=0),
        n_blocks=list(map(int, a.nblocks.split("-"))),
        factor_out=False,
        init_layer=flows.LogitTransform(1e-6),
        actnorm=True,
        fc_end=False,
        glow=False,
    )
    ema = utils.ExponentialMovingAverage(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=1e-6)
    nparams = ti.count_parameters(model)

    total = a.warmup + a.steps
    images = torch.from_numpy(load_mnist(a.batch * total, np))
    model.train()
    times, gcs, cg_sums, cg_calls, losses = [], [], [], [], []
    for i in range(total):
        x = ti.add_noise(images[i * a.batch:(i + 1) * a.batch].clone())
        flows.CG_ITERS_TRACER.clear()
        t0 = time.perf_counter()
        bpd = ti.compute_loss(x, model)
        bpd.backward()
        torch.nn.utils.clip_grad.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        ema.apply(decay=0.0)
        dt = time.perf_counter() - t0
        t1 = time.perf_counter()
        gc.collect()
        g = time.perf_counter() - t1
        if i >= a.warmup:
            times.append(dt)
            gcs.append(g)
            cg_sums.append(float(sum(flows.CG_ITERS_TRACER)))
            cg_calls.append(len(flows.CG_ITERS_TRACER))
            losses.append(float(bpd.item()))
    sys.stdout = real_stdout
    out = {
        "model": f"train_img.py mnist ConvICNN(64, 3) blocks {a.nblocks}",
        "parameters": nparams,
        "batch": a.batch,
        "threads": a.threads,
        "torch": torch.__version__,
        "warmup": a.warmup,
        "steps": a.steps,
        "step_s_median": statistics.median(times),
        "step_s_mean": statistics.fmean(times),
        "step_s": times,
        "gc_s_mean": statistics.fmean(gcs),
        "cg_iterations_per_step": statistics.fmean(cg_sums),
        "cg_iterations_per_block_call": sum(cg_sums) / max(sum(cg_calls), 1),
        "block_calls_per_step": statistics.fmean(cg_calls),
        "loss": losses,
    }
    text = json.dumps(out)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
