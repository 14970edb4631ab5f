#!/usr/bin/env python3
"""Golden fixtures from the authors' CP-Flow PyTorch code, for cpflow's parity tests.

    ~/torch-venv/bin/python benchmarks/reference_parity/export_fixtures.py \
        --ref ~/cpflow-ref --out cpflow/tests/fixtures/reference

Imports their modules from --ref (github.com/CW-Huang/CP-Flow at commit d01303c; nothing of
theirs is copied into this repository), switches PyTorch to float64, builds small models with
their builders, runs a few of their training steps (CG surrogate, train mode) so that the
ActNorms are initialised and the weights are away from their initial values, then evaluates
the models exactly and writes one safetensors file per model:

  model.<key>   the state_dict, float64, under their own key names
  in.<name>     the inputs of the evaluation
  out.<name>    their outputs
  metadata      the builder's settings (strings), the torch version and their commit

Models (see README.md beside this file for what each output is):
  tabular_icnn2.safetensors        train_tabular.py defaults (--arch icnn2), small
  tabular_icnn3.safetensors        --arch icnn3 --softplus-type gaussian_softplus
                                   --zero-softplus --symm_act_first
  tabular_denseicnn2.safetensors   --arch denseicnn2
  image_convicnn.safetensors       train_img.py --data mnist defaults (ConvICNN, logit 1e-6,
                                   ActNorms, squeezes, 3 scales), narrow, 1 block per scale
  image_convicnn2_factor_out.safetensors  --icnn 2 --factor_out True, 1x8x8 images
  image_convicnn3_fc_end.safetensors      --icnn 3 --fc_end True, 1x8x8 images
  vae_posterior.safetensors        train_vae.py -f cpflow (PICNN posterior), small

Exact log-determinants: their `forward_transform_bruteforce` (eval mode, no_bruteforce=False)
for the tabular flows and the VAE posterior. For image tensors their brute force stacks the
Hessian rows as (B, D, C, H, W), which torch.slogdet refuses; the script replaces that one
method on the image blocks by the same computation (D backward passes of their f = grad Phi)
with the rows reshaped to (B, D, D). Everything else (their MultiscaleFlow.forward,
LogitTransform, ActNorm, SqueezeLayer, train_img.compute_loss) runs unchanged.

Environment notes (all documented, nothing installed):
  * torch.symeig was removed from PyTorch; it is replaced by an equivalent on
    torch.linalg.eigh (as /work/shared/reference/bench/ref_tabular.py does). Only their SLQ
    path calls it; the fixtures use the exact path.
  * train_img.py / train_vae.py import tqdm, torchvision, h5py, pandas and matplotlib at
    module level for data loading and plotting. While they are imported, an empty stand-in
    module is registered for each of those that is not installed (and removed afterwards), so
    that the builders can be imported; nothing that runs here calls into them (the MNIST
    images are read from the idx files directly).
  * Everything runs on one thread: with more, the batched LU behind torch.slogdet in this
    PyTorch build (2.15.0, Intel oneMKL 2024.2) gives wrong log-dets for n >= 160 on AMD EPYC
    CPUs and hangs at n = 784; the image log-dets are also checked against a Cholesky
    factorisation.
  * safetensors files are written by `write_safetensors` below (no safetensors package).
"""
import argparse
import gzip
import json
import math
import os
import struct
import sys
import types
import warnings
from functools import partial

import numpy as np

REF_COMMIT = "d01303c"


# ---------------------------------------------------------------------------------------------
# Environment


OPTIONAL_IMPORTS = [
    "tqdm", "torchvision", "torchvision.transforms", "torchvision.utils", "torchvision.datasets",
    "h5py", "pandas", "matplotlib", "matplotlib.pyplot", "matplotlib.gridspec",
]


def import_with_stand_ins(module_name):
    """Import `module_name` with an empty stand-in registered for each module of
    OPTIONAL_IMPORTS that is not installed; the stand-ins are removed again afterwards (torch
    itself probes for some of those names later)."""
    class _Anything:
        def __init__(self, *a, **k):
            pass

        def __call__(self, *a, **k):
            return _Anything()

        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return _Anything()

    def module_getattr(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Anything()

    added = []
    for name in OPTIONAL_IMPORTS:
        try:
            __import__(name)
        except ImportError:
            mod = types.ModuleType(name)
            mod.__getattr__ = module_getattr
            mod.__path__ = []
            sys.modules[name] = mod
            added.append(name)
            parent, _, child = name.rpartition(".")
            if parent in sys.modules:
                setattr(sys.modules[parent], child, mod)
    try:
        return __import__(module_name)
    finally:
        for name in added:
            sys.modules.pop(name, None)


def setup_reference(ref):
    sys.path.insert(0, os.path.abspath(ref))
    import torch

    def _symeig(m, eigenvectors=False, upper=True):
        return torch.linalg.eigh(m, UPLO="U" if upper else "L")

    torch.symeig = _symeig

    # lib/icnn.py:PosConv2d.forward calls self._conv_forward(x, weight): the PyTorch <= 1.7
    # signature, whose body used self.bias. Current PyTorch takes the bias as a third
    # argument; default it to self.bias, which is what their code ran with.
    conv_forward = torch.nn.Conv2d._conv_forward

    def _conv_forward(self, input, weight, bias=None, _orig=conv_forward):
        return _orig(self, input, weight, self.bias if bias is None else bias)

    torch.nn.Conv2d._conv_forward = _conv_forward
    torch.set_default_dtype(torch.float64)
    warnings.filterwarnings("ignore", message="brute force")
    return torch


# ---------------------------------------------------------------------------------------------
# safetensors writer (format: 8-byte little-endian header length, JSON header, raw data)


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": {k: str(v) for k, v in metadata.items()}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f8")
        b = a.tobytes()
        header[name] = {"dtype": "F64", "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def to_np(t):
    return t.detach().cpu().double().numpy()


def state_dict_arrays(module, prefix="model."):
    return {prefix + k: to_np(v) for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# Data


def gmm_data(d, n, seed):
    """A standardised 8-component Gaussian mixture (the bench's ref_tabular.py data)."""
    rng = np.random.RandomState(seed)
    k = 8
    mu = rng.randn(k, d) * 1.5
    ls = [np.linalg.cholesky((lambda a: a @ a.T * 0.3 + 0.05 * np.eye(d))(rng.randn(d, d) / math.sqrt(d)))
          for _ in range(k)]
    comp = rng.randint(0, k, size=n)
    x = mu[comp] + np.einsum("nij,nj->ni", np.stack(ls)[comp], rng.randn(n, d))
    return (x - x.mean(0)) / x.std(0)


def read_idx_images(path, n):
    with gzip.open(path, "rb") as f:
        magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 2051, path
        data = np.frombuffer(f.read(n * rows * cols), dtype=np.uint8)
    return data.reshape(n, 1, rows, cols)


# ---------------------------------------------------------------------------------------------
# Tabular flow (train_tabular.py)


def build_tabular(torch, arch, d, dimh, nhidden, nblocks, softplus_type, zero_softplus,
                  symm_act_first):
    from lib.flows import SequentialFlow, DeepConvexFlow, ActNorm
    from lib.icnn import ICNN2, ICNN3, DenseICNN2
    Arch = {"icnn2": ICNN2, "icnn3": ICNN3, "denseicnn2": DenseICNN2}[arch]
    # train_tabular.py:__main__ ("Define Models"), with its defaults atol=1e-3, rtol=0,
    # trainable_w0=True.
    icnns = [Arch(d, dimh, nhidden, softplus_type=softplus_type, zero_softplus=zero_softplus,
                  symm_act_first=symm_act_first) for _ in range(nblocks)]
    layers = [None] * (2 * nblocks + 1)
    layers[0::2] = [ActNorm(d) for _ in range(nblocks + 1)]
    layers[1::2] = [DeepConvexFlow(icnn, d, unbiased=False, atol=1e-3, rtol=0.0,
                                   trainable_w0=True) for _, icnn in zip(range(nblocks), icnns)]
    return SequentialFlow(layers)


def export_tabular(torch, out, name, arch, softplus_type="softplus", zero_softplus=False,
                   symm_act_first=False, seed=0):
    d, dimh, nhidden, nblocks = 6, 16, 3, 2
    steps, lr, n_train, n_eval = 20, 1e-2, 256, 16
    torch.manual_seed(seed)
    flow = build_tabular(torch, arch, d, dimh, nhidden, nblocks, softplus_type, zero_softplus,
                         symm_act_first)
    data = torch.from_numpy(gmm_data(d, n_train + n_eval, seed=100 + seed))
    x_train, x_eval = data[:n_train], data[n_train:]
    # train_tabular.py:train — loss = -logp(x).mean() in train mode (CG surrogate), Adam
    # betas (0.9, 0.99), weight decay 1e-6; a larger lr than the default 1e-3 so that a few
    # steps move the weights well away from their initial values.
    opt = torch.optim.Adam(flow.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=1e-6)
    flow.train()
    for _ in range(steps):
        loss = -flow.logp(x_train).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    # train_tabular.py test pass: eval_ctx(flow, bruteforce=True), i.e. the exact Hessian
    # log-det (forward_transform_bruteforce, torch.slogdet).
    flow.eval()
    for f in flow.flows[1::2]:
        f.no_bruteforce = False
    z, logdet = flow.forward_transform(x_eval.clone())
    logp = flow.logp(x_eval.clone())
    tensors = state_dict_arrays(flow)
    tensors.update({"in.x": to_np(x_eval), "out.z": to_np(z), "out.logdet": to_np(logdet),
                    "out.logp": to_np(logp)})
    meta = dict(model="tabular", arch=arch, dim=d, dimh=dimh, nhidden=nhidden, nblocks=nblocks,
                softplus_type=softplus_type, zero_softplus=int(zero_softplus),
                symm_act_first=int(symm_act_first), train_steps=steps, train_lr=lr)
    return write(out, name, tensors, meta, torch)


# ---------------------------------------------------------------------------------------------
# Image flow (train_img.py)


def exact_block_transform(torch, rows_per_pass=112):
    """DeepConvexFlow.forward_transform_bruteforce for image-shaped inputs: their computation
    (row i of every sample's Hessian = the gradient of sum_batch f_i, f = grad Phi) with the
    rows reshaped to (B, D, D) before torch.slogdet. The D backward passes run
    `rows_per_pass` at a time (autograd's is_grads_batched, i.e. vmap); the rows are the same
    as one pass each, only faster."""
    def bruteforce(self, x, logdet=0, context=None):
        bsz, input_shape = x.shape[0], x.shape[1:]
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            F = self.get_potential(x, context)
            f = torch.autograd.grad(F.sum(), x, create_graph=True)[0]
            D = f[0].numel()
            rows = []
            for start in range(0, D, rows_per_pass):
                k = min(rows_per_pass, D - start)
                e = torch.zeros(k, bsz, D, dtype=f.dtype)
                e[torch.arange(k), :, start + torch.arange(k)] = 1.0
                g = torch.autograd.grad(f, x, e.reshape(k, *f.shape), retain_graph=True,
                                        is_grads_batched=True)[0]
                rows.append(g.reshape(k, bsz, D).transpose(0, 1))
            H = torch.cat(rows, dim=1)                       # (B, D rows, D)
        ld = torch.slogdet(H).logabsdet
        # Guard against a broken LAPACK (see main): H is symmetric positive definite.
        chol = 2 * torch.linalg.cholesky(0.5 * (H + H.transpose(1, 2))).diagonal(
            dim1=1, dim2=2).log().sum(-1)
        assert torch.allclose(ld, chol, rtol=1e-10, atol=1e-9), (ld, chol)
        return f.detach(), logdet + ld
    return bruteforce


def export_image(torch, out, name, mnist_root, image, nblocks, icnn_version, factor_out=False,
                 fc_end=False, dimh=8, num_hidden_layers=2, seed=0):
    train_img = import_with_stand_ins("train_img")
    from lib.multiscale_flow import MultiscaleFlow
    from lib.flows import DeepConvexFlow
    import lib.flows as flows
    c, hw = image
    steps, lr, n_train, n_eval = 10, 1e-2, 4, 2
    torch.manual_seed(seed)
    np.random.seed(seed)
    if hw == 28:
        # MNIST (train_img.py --data mnist): train images 0..3, test images 0..1.
        train_u8 = read_idx_images(os.path.join(mnist_root, "train-images-idx3-ubyte.gz"), n_train)
        eval_u8 = read_idx_images(os.path.join(mnist_root, "t10k-images-idx3-ubyte.gz"), n_eval)
    else:
        # Random 8-bit images (their builder takes any input_size; MNIST needs torchvision's
        # Resize, which is not installed).
        rng = np.random.RandomState(seed)
        train_u8 = rng.randint(0, 256, size=(n_train, c, hw, hw)).astype(np.uint8)
        eval_u8 = rng.randint(0, 256, size=(n_eval, c, hw, hw)).astype(np.uint8)
    # ToTensor (k/255) then their add_noise: x = (255·x + u)/256, u ~ U[0, 1).
    x_train = train_img.add_noise(torch.from_numpy(train_u8.astype(np.float64) / 255.0))
    x_eval = train_img.add_noise(torch.from_numpy(eval_u8.astype(np.float64) / 255.0))
    # train_img.py:main — MultiscaleFlow with the mnist init layer LogitTransform(1e-6),
    # --actnorm True, --glow False, --block_type cvx.
    model = MultiscaleFlow(
        (n_train, c, hw, hw),
        block_fn=partial(train_img.cpflow_block_fn, block_type="cvx", dimh=dimh,
                         num_hidden_layers=num_hidden_layers, icnn_version=icnn_version,
                         num_pooling=0),
        n_blocks=nblocks,
        factor_out=factor_out,
        init_layer=flows.LogitTransform(1e-6),
        actnorm=True,
        fc_end=fc_end,
        glow=False,
    )
    # train_img.py:train — loss = compute_loss (bits/dim with the CG surrogate), Adam betas
    # (0.9, 0.99), weight decay 1e-6, clip_grad_norm_(1.0); lr raised from 1e-3 (see tabular).
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=1e-6)
    model.train()
    for _ in range(steps):
        loss = train_img.compute_loss(x_train, model)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    model.eval()
    blocks = [m for m in model.modules() if isinstance(m, DeepConvexFlow)]
    for b in blocks:
        b.no_bruteforce = False
        b.forward_transform_bruteforce = types.MethodType(exact_block_transform(torch), b)
    z, logdet = model(x_eval.clone(), 0)
    bpd = train_img.compute_loss(x_eval.clone(), model)
    d = c * hw * hw
    logpz = train_img.standard_normal_logprob(z).view(z.size(0), -1).sum(1)
    logp = logpz + logdet  # log p(x) on [0, 1)^D, before compute_loss's −D·log 256
    tensors = state_dict_arrays(model)
    tensors.update({"in.x": to_np(x_eval), "out.z": to_np(z), "out.logdet": to_np(logdet),
                    "out.logp": to_np(logp), "out.bpd": to_np(bpd).reshape(1)})
    meta = dict(model="image", channels=c, height=hw, width=hw,
                nblocks="-".join(map(str, nblocks)), icnn=icnn_version, dimh=dimh,
                num_hidden_layers=num_hidden_layers, factor_out=int(factor_out),
                fc_end=int(fc_end), logit_alpha=1e-6, actnorm=1, train_steps=steps,
                train_lr=lr, num_blocks=len(blocks))
    return write(out, name, tensors, meta, torch)


# ---------------------------------------------------------------------------------------------
# VAE posterior (train_vae.py -f cpflow)


def export_vae_posterior(torch, out, name, seed=0):
    saved_argv = sys.argv
    z_size, dimh, layers, nflows = 8, 16, 3, 2
    sys.argv = ["train_vae.py", "-f", "cpflow", "-nf", str(nflows), "-id", str(dimh),
                "-il", str(layers), "--z_size", str(z_size), "--manual_seed", str(seed),
                "--no_cuda"]
    try:
        train_vae = import_with_stand_ins("train_vae")
        args, _ = train_vae.get_args()
    finally:
        sys.argv = saved_argv
    from lib.sylvester.models.VAE import CPFVAE
    from lib.sylvester.utils.distributions import log_normal_diag, log_normal_standard
    from lib.flows import DeepConvexFlow
    # load_dataset sets these for static MNIST.
    args.input_size, args.input_type, args.dynamic_binarization = [1, 28, 28], "binary", False
    torch.manual_seed(seed)
    model = CPFVAE(args)
    flow, d, dc = model.flow, args.z_size, model.q_z_nn_output_dim
    gen = torch.Generator().manual_seed(seed + 7)

    def batch(n):
        h = torch.randn(n, dc, generator=gen)                # the encoder feature (context)
        mu = 0.5 * torch.randn(n, d, generator=gen)
        var = torch.exp(0.4 * torch.randn(n, d, generator=gen))
        eps = torch.randn(n, d, generator=gen)
        return h, mu, var, eps

    # Training: the KL part of lib/sylvester/optimization/loss.py:binary_loss_function (β = 1)
    # on a fixed random batch, in train mode (CG surrogate log-det, atol = rtol = 1e-5), with
    # their optimiser Adamax(eps=1e-7); lr raised from 5e-4 so that the zero-initialised gates
    # move.  The first forward pass is their data-dependent init.
    steps, lr = 15, 2e-2
    h_tr, mu_tr, var_tr, _ = batch(64)
    opt = torch.optim.Adamax(flow.parameters(), lr=lr, eps=1e-7)
    flow.train()
    for _ in range(steps):
        z0 = model.reparameterize(mu_tr, var_tr)
        zk, ldj = flow.forward_transform(z0, context=h_tr)
        kl = log_normal_diag(z0, mu_tr, var_tr.log(), dim=1) - log_normal_standard(zk, dim=1) - ldj
        loss = kl.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    # The test pass (training.py:evaluate, testing=True): no_bruteforce = False everywhere.
    flow.eval()
    for m in flow.modules():
        if isinstance(m, DeepConvexFlow):
            m.no_bruteforce = False
    h, mu, var, eps = batch(8)
    z0 = eps.mul(var.sqrt()).add(mu)                         # VAE.reparameterize with fixed eps
    zk, ldj = flow.forward_transform(z0.clone(), context=h)
    log_q0 = log_normal_diag(z0, mu, var.log(), dim=1)        # without −½ log 2π per dimension
    log_q = log_q0 - 0.5 * d * math.log(2 * math.pi) - ldj    # normalised log q(z_K | x)
    tensors = {("model.flow." + k): to_np(v) for k, v in flow.state_dict().items()}
    tensors.update({"in.context": to_np(h), "in.mu": to_np(mu), "in.var": to_np(var),
                    "in.eps": to_np(eps), "in.z0": to_np(z0), "out.z": to_np(zk),
                    "out.logdet": to_np(ldj), "out.log_q": to_np(log_q)})
    meta = dict(model="vae_posterior", z_size=d, context_dim=dc, num_flows=args.num_flows,
                icnn_type=args.icnn_type, icnn_dimh=args.icnn_dimh,
                num_icnn_layers=args.num_icnn_layers, symm_act_first=args.symm_act_first,
                softplus_type=args.softplus_type, zero_softplus=args.zero_softplus,
                actnorm=args.actnorm, train_steps=steps, train_lr=lr)
    return write(out, name, tensors, meta, torch)


# ---------------------------------------------------------------------------------------------


def write(out, name, tensors, meta, torch):
    meta = dict(meta, torch=torch.__version__, reference_commit=REF_COMMIT)
    path = os.path.join(out, name + ".safetensors")
    write_safetensors(path, tensors, meta)
    print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes", flush=True)
    return path


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ref", required=True, help="the authors' exported code (lib/, train_*.py)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--mnist", default="/work/shared/data/mnist", help="MNIST idx .gz files")
    p.add_argument("--only", default=None, help="comma-separated fixture names (default: all)")
    a = p.parse_args()
    torch = setup_reference(a.ref)
    # One thread: with more, this PyTorch build's batched LU (torch.slogdet, Intel oneMKL
    # 2024.2) returns wrong log-dets for n >= 160 on AMD EPYC CPUs and hangs at n = 784
    # ("oneMKL ERROR: Parameter 6 was incorrect on entry to DLASWP").
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)
    jobs = {
        "tabular_icnn2": lambda: export_tabular(torch, a.out, "tabular_icnn2", "icnn2", seed=0),
        "tabular_icnn3": lambda: export_tabular(
            torch, a.out, "tabular_icnn3", "icnn3", softplus_type="gaussian_softplus",
            zero_softplus=True, symm_act_first=True, seed=1),
        "tabular_denseicnn2": lambda: export_tabular(
            torch, a.out, "tabular_denseicnn2", "denseicnn2", seed=2),
        "image_convicnn": lambda: export_image(
            torch, a.out, "image_convicnn", a.mnist, (1, 28), [1, 1, 1], icnn_version=1, seed=3),
        "image_convicnn2_factor_out": lambda: export_image(
            torch, a.out, "image_convicnn2_factor_out", a.mnist, (1, 8), [2, 1], icnn_version=2,
            factor_out=True, seed=4),
        "image_convicnn3_fc_end": lambda: export_image(
            torch, a.out, "image_convicnn3_fc_end", a.mnist, (1, 8), [1, 1], icnn_version=3,
            fc_end=True, seed=5),
        "vae_posterior": lambda: export_vae_posterior(torch, a.out, "vae_posterior", seed=6),
    }
    names = a.only.split(",") if a.only else list(jobs)
    for n in names:
        jobs[n]()


if __name__ == "__main__":
    main()
