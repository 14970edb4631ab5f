#!/usr/bin/env python3
"""Whole-VAE parity fixtures from the authors' code: encoder, posterior, decoder and ELBO on
Frey Faces, for both posteriors.

    ~/torch-venv/bin/python benchmarks/reference_parity/export_vae_full.py \
        --ref ~/cpflow-ref --out cpflow/tests/fixtures/reference

Writes `vae_full_gaussian.safetensors` (train_vae.py -d freyfaces -f no_flow: VAE.VAE) and
`vae_full_cpflow.safetensors` (-f cpflow: VAE.CPFVAE with the script's defaults: z = 64,
4 x [LayerActnorm, DeepConvexFlow(PICNN 64 x 5)] + LayerActnorm), both float64, about 50 KB
each; `cpflow/tests/integration/reference_parity_vae.rs` compares cpflow against them.

Weights. The full model has 2.8 M (Gaussian) / 3.2 M (CP-Flow) parameters, so the fixture
does not hold its state_dict. Every tensor of their state_dict is instead filled by a
formula that the Rust test evaluates too, bit for bit: for the i-th key (state_dict order,
listed in the metadata `keys` with the shapes) and its k-th element in row-major order,

    w = offset_i + scale_i * (2 u - 1),   u = (splitmix64((i << 32) + k) >> 11) * 2^-53,

with splitmix64 the usual 64-bit finaliser (wrapping arithmetic) and `scale_i`, `offset_i`
stored as `formula.scale`, `formula.offset`. Their checksums (`formula.sum`, `formula.sumsq`
per key) let the test tell "the weights differ" from "the model differs". (A smooth formula
such as sin(1.7 k + 0.3 i) is nearly periodic in k, so a convolution over a smooth image
patch cancels it: the encoder's signal was then 30x below its biases. The hash is as
cheap and behaves like random weights.)  The scales are chosen so that every path is
active: gated layers keep an O(1) signal with gate pre-activations of spread ~1; the
variance head's pre-activation reaches below softplus^-1(0.01), so ~10 % of the variances
are clipped by their Hardtanh(0.01, 7); logits spread ~1.7 per pixel; the PICNN gates
(zero-initialised in their code) are non-zero, every ActNorm has b != 0 and logs != 0 and is
marked initialised (their `initialized` attribute, which a state_dict does not hold), and
softplus(w1) ~ 2-5 against softplus(w0) ~ 0.4-0.6, so each block's Hessian is far from a
multiple of the identity (|z_K - z_0| ~ 12).

Inputs. Their own loader (`train_vae.load_dataset`, `-freys 123`) reads the Frey Faces from
a temporary `Freyfaces/freyfaces.pkl` written from /work/shared/data/frey-faces, and the
test split's images TEST_INDICES feed the model as their `evaluate` does: `x =
float32(pixel / 255).double()`. The reparameterisation noise `eps` (float64, seeded) is fixed
by replacing `model.reparameterize` with their own formula `eps.mul(var.sqrt()).add_(mu)`.

Evaluation: `model.eval()`, and for CP-Flow `no_bruteforce = False` on every flow layer, as
`training.evaluate(testing=True)` does before its second pass: exact log-dets (their
`forward_transform_bruteforce`, 64 backward passes and torch.slogdet per block). Their
`model(x)` gives `x_mean` (logits), `z_mu`, `z_var`, `ldj`, `z0`, `zk`; the loss pieces come
from their `lib/sylvester/optimization/loss.py` (`multinomial_loss_array` per image,
`calculate_loss` for the batch mean and bits/dim, which `training.evaluate` calls).

Constants: their `log_normal_diag` and `log_normal_standard` leave out -1/2 log 2pi per
dimension; the two cancel in their KL and -ELBO, which are stored as they come. The
normalised densities (`out.log_q0`, `out.log_q`, `out.log_pz`) add -(d/2) log 2pi to their
values explicitly (what cpflow's `AmortizedPosterior` returns).

Environment: as export_fixtures.py (its helpers are imported): torch.symeig shim, stand-in
modules for their plotting/data imports, float64, one thread.
"""
import argparse
import contextlib
import json
import math
import os
import pickle
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_fixtures import (  # noqa: E402
    REF_COMMIT, import_with_stand_ins, setup_reference, to_np, write_safetensors)

FREY_NPY = "/work/shared/data/frey-faces/frey_faces_uint8.npy"
TEST_INDICES = (0, 61, 122, 199)   # images of their test split (freyseed 123)
EPS_SEED = 2024
FREYSEED = 123

# Gains of the formula weights (see the module docstring): scale = gain / sqrt(fan_in), so a
# layer's pre-activation is ~gain/sqrt(3) times its input's RMS (2u - 1 has variance 1/3).
GAIN = {"conv_h": 3.5, "conv_g": 3.0, "head": 6.0, "var": 8.0, "mean": 1.0}


# ---------------------------------------------------------------------------------------------
# Formula weights


def unit_values(i, n):
    """2u - 1 in [-1, 1) for elements k = 0..n-1 of key i (splitmix64 of (i << 32) + k)."""
    x = (np.uint64(i) << np.uint64(32)) + np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return 2.0 * u - 1.0


def formula_values(i, shape, scale, offset):
    n = int(np.prod(shape)) if len(shape) else 1
    return (offset + scale * unit_values(i, n)).reshape(shape)


def scale_offset(key, shape):
    """(scale, offset) of the formula for one reference key."""
    last = key.rsplit(".", 1)[-1]
    fan = lambda f: 1.0 / math.sqrt(f)  # noqa: E731
    if key.startswith("flow."):
        if last == "w0":
            return 0.3, -0.5                  # softplus(w0) in [0.40, 0.60]
        if last == "w1":
            return 0.5, 2.0                   # softplus(w1) in [1.7, 2.7]
        if last == "b":
            return 0.3, 0.0                   # ActNorm shifts
        if last == "logs":
            if ".icnn.actnorms." in key and tuple(shape) == (1, 1, 1):
                return 0.2, 1.5               # the PICNN's output ActNorm(1): scale ~ e^1.5
            return 0.2, 0.0
        if last == "bias":
            return 0.2, 0.0
        f = shape[1]
        if ".Wczs." in key or ".Wcxs." in key:
            return 0.5 * fan(f), 0.0          # the gates: zero at their init, not here
        if ".Wzs." in key and not key.endswith("Wzs.0.weight"):
            return 1.0, 0.0                   # PosLinear: softplus(W) / fan_in
        return fan(f), 0.0
    if last == "bias":
        return 0.1, 0.0
    if key.startswith("q_z_nn."):             # GatedConv2d (out, in, kh, kw)
        f = shape[1] * shape[2] * shape[3]
        return GAIN["conv_g" if ".g." in key else "conv_h"] * fan(f), 0.0
    if key.startswith("p_x_nn."):             # GatedConvTranspose2d (in, out, kh, kw)
        stride = 2 if key.split(".")[1] in ("2", "4") else 1
        f = shape[0] * shape[2] * shape[3] / stride ** 2
        return GAIN["conv_g" if ".g." in key else "conv_h"] * fan(f), 0.0
    if key.startswith("q_z_mean."):
        return GAIN["mean"] * fan(shape[1]), 0.0
    if key.startswith("q_z_var."):
        return GAIN["var"] * fan(shape[1]), 0.0
    if key.startswith("p_x_mean."):
        return GAIN["head"] * fan(shape[1] * shape[2] * shape[3]), 0.0
    raise KeyError(f"no formula rule for {key}")


# ---------------------------------------------------------------------------------------------


def reference_train_vae(ref):
    """(torch, their train_vae module) set up as every VAE exporter runs them: the environment
    of export_fixtures.py (torch.symeig shim, stand-in modules), one thread, float64."""
    torch = setup_reference(ref)
    torch.set_num_threads(1)   # see export_fixtures.py: batched LU with several threads
    with contextlib.redirect_stdout(sys.stderr):
        tv = import_with_stand_ins("train_vae")
    torch.set_default_dtype(torch.float64)
    return torch, tv


def their_args(tv, flow, data_root, dataset="freyfaces"):
    saved = sys.argv
    sys.argv = ["train_vae.py", "-d", dataset, "-f", flow, "-nc", "--manual_seed", "0",
                "-freys", str(FREYSEED), "-dr", data_root]
    try:
        return tv.get_args()
    finally:
        sys.argv = saved


def load_frey(tv, flow, root, frey_npy=FREY_NPY):
    """Their args and Frey Faces test split (`float32(pixel / 255)`, (200, 560)), read by
    their own loader (`-freys 123`) from a `Freyfaces/freyfaces.pkl` written under `root`."""
    frey = np.load(frey_npy)
    assert frey.shape == (1965, 560) and frey.dtype == np.uint8, frey.shape
    os.makedirs(os.path.join(root, "Freyfaces"))
    with open(os.path.join(root, "Freyfaces", "freyfaces.pkl"), "wb") as f:
        pickle.dump([frey], f)
    args, kwargs = their_args(tv, flow, root)
    with contextlib.redirect_stdout(sys.stderr):
        _, _, test_loader, args = tv.load_dataset(args, **kwargs)
    assert args.input_size == [1, 28, 20] and args.input_type == "multinomial"
    return args, test_loader.dataset.tensors[0]


def formula_model(torch, tv, args, flow, overrides=None):
    """Their model with every state_dict tensor set by the formula (in eval mode, ActNorms
    marked initialised, exact log-dets), its `formula.*` tensors and metadata. `overrides`:
    (scale, offset) by key, replacing scale_offset's."""
    from lib.flows import ActNorm
    torch.manual_seed(0)
    model = tv.VAE.CPFVAE(args) if flow == "cpflow" else tv.VAE.VAE(args)
    sd = model.state_dict()
    keys = list(sd)
    scales, offsets, sums, sumsqs, new = [], [], [], [], {}
    for i, k in enumerate(keys):
        shape = tuple(sd[k].shape)
        s, o = (overrides or {}).get(k) or scale_offset(k, shape)
        v = formula_values(i, shape, s, o)
        scales.append(s)
        offsets.append(o)
        sums.append(v.sum())
        sumsqs.append((v * v).sum())
        new[k] = torch.from_numpy(v)
    model.load_state_dict(new, strict=True)
    for m in model.modules():
        if isinstance(m, ActNorm):
            m.initialized = True
    model.eval()
    if flow == "cpflow":
        for f in model.flow.flows:                # training.evaluate(testing=True)
            f.no_bruteforce = False
    tensors = {"formula.scale": np.array(scales), "formula.offset": np.array(offsets),
               "formula.sum": np.array(sums), "formula.sumsq": np.array(sumsqs)}
    meta = dict(keys=json.dumps([[k, list(sd[k].shape)] for k in keys], separators=(",", ":")),
                formula="w = offset_i + scale_i*(2u-1), u = (splitmix64((i<<32)+k) >> 11) * 2^-53",
                parameters=sum(int(v.numel()) for v in sd.values()),
                context_dim=model.q_z_nn_output_dim, z_size=args.z_size)
    if flow == "cpflow":
        meta.update(num_flows=args.num_flows, icnn_type=args.icnn_type,
                    icnn_dimh=args.icnn_dimh, num_icnn_layers=args.num_icnn_layers,
                    symm_act_first=args.symm_act_first, softplus_type=args.softplus_type,
                    zero_softplus=args.zero_softplus, actnorm=args.actnorm)
    return model, tensors, meta


def export_vae_full(torch, tv, out, name, flow, frey_npy):
    from lib.sylvester.optimization.loss import calculate_loss, multinomial_loss_array
    from lib.sylvester.utils.distributions import log_normal_diag, log_normal_standard
    import torch.nn.functional as F

    with tempfile.TemporaryDirectory() as root:
        args, x_all = load_frey(tv, flow, root, frey_npy)      # float32(pixel / 255), (200, 560)
    idx = list(TEST_INDICES)
    # training.evaluate: data.double().view(-1, *input_size)
    x = x_all[idx].double().view(-1, *args.input_size)
    pixels = np.rint(x_all[idx].double().numpy() * 255.0)
    assert np.array_equal((x.view(len(idx), -1) * 255).long().double().numpy(), pixels)

    model, formula_tensors, formula_meta = formula_model(torch, tv, args, flow)

    b, d = x.shape[0], args.z_size
    eps = torch.randn(b, d, generator=torch.Generator().manual_seed(EPS_SEED))

    def reparameterize(mu, var):                             # VAE.reparameterize, eps fixed
        std = var.sqrt()
        return eps.mul(std).add_(mu)

    model.reparameterize = reparameterize
    x_mean, z_mu, z_var, ldj, z0, zk = model(x)
    h = model.q_z_nn(x).view(b, -1)                          # the encoder feature (context)
    ldj = (ldj + torch.zeros(b)).detach()                    # VAE.VAE: log_det_j = zeros(1)

    # Their loss pieces (loss.py), beta = 1.
    neg_elbo = multinomial_loss_array(x_mean, x, z_mu, z_var, z0, zk, ldj, args)
    loss, rec, kl_mean, bpd = calculate_loss(x_mean, x, z_mu, z_var, z0, zk, ldj, args)
    # multinomial_loss_array's reconstruction term per image: -log p(x | z_K).
    target = (x * 255).long()
    ce = F.cross_entropy(x_mean.view(b, 256, *args.input_size), target,
                         reduction="none").view(b, -1).sum(1)
    log_q_z0 = log_normal_diag(z0, mean=z_mu, log_var=z_var.log(), dim=1)  # no -1/2 log 2pi
    log_p_zk = log_normal_standard(zk, dim=1)                              # no -1/2 log 2pi
    kl = log_q_z0 - log_p_zk - ldj
    assert torch.allclose(neg_elbo, ce + kl, rtol=1e-13, atol=0)
    assert abs(loss.item() - neg_elbo.mean().item()) <= 1e-12 * abs(loss.item())
    c = 0.5 * d * math.log(2 * math.pi)

    tensors = {
        **formula_tensors,
        "in.pixels": pixels, "in.x": to_np(x), "in.eps": to_np(eps),
        "in.test_index": np.array(idx, dtype=np.float64),
        "out.mu": to_np(z_mu), "out.var": to_np(z_var), "out.h": to_np(h),
        "out.z0": to_np(z0), "out.zk": to_np(zk), "out.logdet": to_np(ldj),
        "out.log_px": to_np(-ce),
        "out.log_q0": to_np(log_q_z0 - c), "out.log_q": to_np(log_q_z0 - c - ldj),
        "out.log_pz": to_np(log_p_zk - c), "out.kl": to_np(kl),
        "out.neg_elbo": to_np(neg_elbo),
        "out.loss": np.array([loss.item()]), "out.rec": np.array([rec.item()]),
        "out.kl_mean": np.array([kl_mean.item()]), "out.bpd": np.array([bpd]),
    }
    meta = dict(
        model="vae_full", flow=flow, dataset="freyfaces", freyseed=FREYSEED, split="test",
        test_indices=",".join(map(str, idx)), input_size="1x28x20", z_size=d,
        context_dim=formula_meta["context_dim"], eps_seed=EPS_SEED,
        **{k: formula_meta[k] for k in ("keys", "formula", "parameters")},
        torch=torch.__version__, reference_commit=REF_COMMIT,
    )
    meta.update({k: v for k, v in formula_meta.items() if k not in meta})  # CP-Flow's settings
    path = os.path.join(out, name + ".safetensors")
    write_safetensors(path, tensors, meta)
    clipped = (z_var <= 0.01).double().mean().item()
    print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes; "
          f"{meta['parameters']} formula parameters; -ELBO {to_np(neg_elbo).round(3)}, "
          f"log-det {to_np(ldj).round(3)}, var clipped {clipped:.1%}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ref", required=True, help="the authors' exported code (lib/, train_*.py)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--frey", default=FREY_NPY, help="frey_faces_uint8.npy")
    p.add_argument("--only", default="gaussian,cpflow", help="gaussian, cpflow or both")
    a = p.parse_args()
    torch, tv = reference_train_vae(a.ref)
    os.makedirs(a.out, exist_ok=True)
    flags = {"gaussian": "no_flow", "cpflow": "cpflow"}
    for n in a.only.split(","):
        export_vae_full(torch, tv, a.out, "vae_full_" + n, flags[n], a.frey)


if __name__ == "__main__":
    main()
