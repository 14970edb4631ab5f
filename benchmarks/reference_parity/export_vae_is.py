#!/usr/bin/env python3
"""Importance-sampled log-likelihood and Bernoulli-likelihood parity fixtures from the authors'
VAE code, on the formula weights of export_vae_full.py.

    ~/torch-venv/bin/python benchmarks/reference_parity/export_vae_is.py \
        --ref ~/cpflow-ref --out cpflow/tests/fixtures/reference

Writes (float64; `cpflow/tests/integration/reference_parity_vae_is.rs` compares cpflow):

* `vae_is_gaussian.safetensors`, `vae_is_cpflow.safetensors`: Frey Faces (`-f no_flow` /
  `-f cpflow`, the models and weights of export_vae_full.py), their importance-sampled
  log-likelihood `lib/sylvester/utils/log_likelihood.py:calculate_likelihood(X, model, args,
  S=16, MB=8)` (two chunks of 8 per image) on test images IS_INDICES.
* `vae_caltech_gaussian.safetensors`: Caltech 101 Silhouettes (`-d caltech -f no_flow`, the
  binary model: no variance clip, a 1x1 sigmoid head), the single-sample ELBO pieces with both
  of their Bernoulli likelihoods, and calculate_likelihood on the same images.

calculate_likelihood. It is imported by `training.py` but never called in this code base
(`docs/reference/images-vae.md` 3.7: the "NLL (TEST)" it logs is a single-sample -ELBO); the
Sylvester code it comes from calls it with S = 5000, MB = 500. Per image it evaluates
`model(x)` on R = S // MB chunks of MB copies of the image, takes `a = -calculate_loss_array`
per sample (the per-sample -ELBO, beta = 1), and returns `logsumexp(a) - log(R * MB)`
(scipy); the function returns `nll = -mean` over images and, for Frey, `bpd = nll / (560 ln
2)` (0 for binary data). It is run here unchanged, once per image (for the per-image value)
and once on all images (for `nll`, `bpd`). Its internal noise draw is replaced, as in
export_vae_full.py, by `model.reparameterize = eps.mul(var.sqrt()).add_(mu)` with eps taken
from the fixture's float64 noise `in.eps_is`, (B * S, z) row-major, rows j*S .. (j+1)*S for
image j in sampling order (chunk r = rows j*S + r*MB .. + MB): the order cpflow's
`split_importance_nll` draws its noise in. The per-sample values `a` are recorded by wrapping
their `calculate_loss_array` (`out.log_w`). Constants: `a` = -(CE or BCE) - (log q0 - log p(z_K)
- ldj) with their log_normal_* helpers, whose dropped -1/2 log 2pi per dimension cancel
between q0 and p, so `a` is log p(x|z) + log p(z) - log q(z|x) with every constant: no
correction is needed and none is applied. Eval mode; for CP-Flow `no_bruteforce = False`
(exact log-dets), as export_vae_full.py.

Bernoulli (Caltech). Their loader (`load_caltech101silhouettes`, fed a temporary
`Caltech101Silhouettes/caltech101_silhouettes_28_split1.mat` link to the shared file) gives
`x = 1 - data` in Fortran order; the test split is not shuffled, so test images
CALTECH_INDICES are rows of the file. Their decoder ends in `nn.Sigmoid()`; the logits before
it are read with a forward hook on `p_x_mean[0]` (`out.logits`). Three likelihoods:
  * `out.log_px_bce`: -`nn.BCELoss(reduction='none')` summed per image, the per-image form
    of the training / evaluate loss `binary_loss_function` (`BCELoss(reduction='sum')`,
    PyTorch clamps each log at -100), on the sigmoid output;
  * `out.log_px_clamp`: their `log_bernoulli`, which clamps the probability to [1e-5, 1 -
    1e-5] before the log: the likelihood of `binary_loss_array`, hence of calculate_likelihood;
  * `out.log_px_exact`: sum x*l - softplus(l) from their logits with PyTorch's own float64
    `F.logsigmoid` (no clamp) -- their decoder, the exact Bernoulli.
`out.kl`, `out.neg_elbo_bce` (BCE + KL, what `binary_loss_function` sums),
`out.neg_elbo_clamp` (`binary_loss_array`), `out.loss` (`calculate_loss`, batch mean).
The Caltech weights use export_vae_full.py's formula and gains, except where noted in
CALTECH_OVERRIDES: the variance bias is shifted so that 14 % of the variance pre-activations
exceed 20, where torch's `nn.Softplus` (threshold 20) returns its input (cpflow's softplus is
exact; the difference is log1p(e^-x) <= 2.1e-9); the output head's gain puts a few logits
beyond |l| = 11.5, where their log_bernoulli clamp acts.
"""
import argparse
import contextlib
import json
import math
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_fixtures import (  # noqa: E402
    REF_COMMIT, to_np, write_safetensors)
from export_vae_full import (  # noqa: E402
    FREYSEED, formula_model, load_frey, reference_train_vae, their_args)

IS_INDICES = (0, 61, 122)          # Frey test images (freyseed 123)
CALTECH_INDICES = (0, 500, 1000, 2306)
S, MB = 16, 8                      # importance samples per image, chunk (their MB)
EPS_SEED = 2025
CALTECH_MAT = "/work/shared/data/caltech101-silhouettes/caltech101_silhouettes_28_split1.mat"
# (scale, offset) replacing scale_offset's for the binary model (see the docstring).
CALTECH_OVERRIDES = {"q_z_var.0.bias": (6.0, 14.0), "p_x_mean.0.weight": (1.6, 0.0)}


def load_caltech(tv, flow, root):
    os.makedirs(os.path.join(root, "Caltech101Silhouettes"))
    os.symlink(CALTECH_MAT, os.path.join(root, "Caltech101Silhouettes",
                                         "caltech101_silhouettes_28_split1.mat"))
    args, kwargs = their_args(tv, flow, root, "caltech")
    with contextlib.redirect_stdout(sys.stderr):
        _, _, test_loader, args = tv.load_dataset(args, **kwargs)
    assert args.input_size == [1, 28, 28] and args.input_type == "binary"
    return args, test_loader.dataset.tensors[0]


class NoiseFeed:
    """Replaces model.reparameterize: the next rows of `eps` for every call."""

    def __init__(self, eps):
        self.eps, self.pos = eps, 0

    def __call__(self, mu, var):
        n = mu.shape[0]
        eps = self.eps[self.pos:self.pos + n]
        assert eps.shape == mu.shape, (eps.shape, mu.shape)
        self.pos += n
        return eps.mul(var.sqrt()).add_(mu)


def exact_log_bernoulli(torch, model):
    """A stand-in for their `log_bernoulli` (distributions.py, imported by loss.py) that
    returns the exact Bernoulli log-likelihood from the logits before the decoder's sigmoid
    (read by a forward hook on `p_x_mean[0]`), and the hook's handle."""
    import torch.nn.functional as F
    seen = []
    handle = model.p_x_mean[0].register_forward_hook(
        lambda m, i, o: seen.append(o.detach().clone()))

    def log_bernoulli(x, mean, average=False, reduce=True, dim=None):
        assert reduce and not average and dim == 1
        lg = seen[-1].view(x.shape)
        assert torch.equal(torch.sigmoid(lg), mean)
        return (x * F.logsigmoid(lg) + (1 - x) * F.logsigmoid(-lg)).sum(1)

    return log_bernoulli, handle


def their_importance(torch, model, args, x, eps_is, exact_bernoulli=False):
    """calculate_likelihood per image and on all images, with the fixture's noise; the
    per-sample `a` recorded. Returns (per-image log p(x), (B, S) a, nll, bpd). With
    `exact_bernoulli`, their `log_bernoulli` (probabilities clamped to [1e-5, 1 - 1e-5]) is
    replaced by the exact Bernoulli log-likelihood of their logits for the call."""
    import lib.sylvester.optimization.loss as loss_mod
    import lib.sylvester.utils.log_likelihood as ll_mod
    b = x.shape[0]
    recorded = []
    original = ll_mod.calculate_loss_array
    original_lb, handle = loss_mod.log_bernoulli, None
    if exact_bernoulli:
        loss_mod.log_bernoulli, handle = exact_log_bernoulli(torch, model)

    def recording(*a, **k):
        out = original(*a, **k)
        recorded.append(-to_np(out))
        return out

    ll_mod.calculate_loss_array = recording
    try:
        per_image = []
        for j in range(b):
            model.reparameterize = NoiseFeed(eps_is[j * S:(j + 1) * S])
            with contextlib.redirect_stdout(sys.stderr):
                nll_j, _ = ll_mod.calculate_likelihood(x[j:j + 1], model, args, S=S, MB=MB)
            assert model.reparameterize.pos == S
            per_image.append(-nll_j)
        log_w = np.concatenate(recorded).reshape(b, S)
        model.reparameterize = NoiseFeed(eps_is)
        with contextlib.redirect_stdout(sys.stderr):
            nll, bpd = ll_mod.calculate_likelihood(x, model, args, S=S, MB=MB)
        assert model.reparameterize.pos == b * S
    finally:
        ll_mod.calculate_loss_array = original
        loss_mod.log_bernoulli = original_lb
        if handle is not None:
            handle.remove()
    per_image = np.array(per_image)
    assert abs(nll + per_image.mean()) <= 1e-12 * abs(nll), (nll, per_image)
    from scipy.special import logsumexp
    assert np.allclose(per_image, logsumexp(log_w, axis=1) - math.log(S), rtol=1e-14, atol=0)
    return per_image, log_w, nll, bpd


def export_frey_is(torch, tv, out, name, flow):
    with tempfile.TemporaryDirectory() as root:
        args, x_all = load_frey(tv, flow, root)
    idx = list(IS_INDICES)
    x = x_all[idx].double().view(-1, *args.input_size)
    pixels = np.rint(x_all[idx].double().numpy() * 255.0)
    model, tensors, meta = formula_model(torch, tv, args, flow, {})
    d = args.z_size
    eps_is = torch.randn(len(idx) * S, d, generator=torch.Generator().manual_seed(EPS_SEED))
    per_image, log_w, nll, bpd = their_importance(torch, model, args, x, eps_is)
    tensors.update({
        "in.pixels": pixels, "in.x": to_np(x), "in.eps_is": to_np(eps_is),
        "in.test_index": np.array(idx, dtype=np.float64),
        "out.log_w": log_w, "out.log_px_is": per_image,
        "out.nll": np.array([nll]), "out.bpd": np.array([bpd]),
    })
    meta.update(model="vae_is", flow=flow, dataset="freyfaces", freyseed=FREYSEED,
                split="test", test_indices=",".join(map(str, idx)), input_size="1x28x20",
                samples=S, chunk=MB, eps_seed=EPS_SEED, torch=torch.__version__,
                reference_commit=REF_COMMIT)
    path = os.path.join(out, name + ".safetensors")
    write_safetensors(path, tensors, meta)
    spread = log_w.max(1) - log_w.min(1)
    print(f"{path}: {os.path.getsize(path)} bytes; IS log p(x) {per_image.round(3)}, "
          f"nll {nll:.4f}, bpd {bpd:.5f}, log-weight spread {spread.round(2)}", flush=True)


def export_caltech(torch, tv, out, name, flow):
    from lib.sylvester.optimization.loss import binary_loss_array, calculate_loss
    from lib.sylvester.utils.distributions import (
        log_bernoulli, log_normal_diag, log_normal_standard)
    import torch.nn.functional as F

    with tempfile.TemporaryDirectory() as root:
        args, x_all = load_caltech(tv, flow, root)
    idx = list(CALTECH_INDICES)
    x = x_all[idx].double().view(-1, *args.input_size)        # evaluate: data.double()
    pixels = x_all[idx].double().numpy()
    assert set(np.unique(pixels)) <= {0.0, 1.0}
    model, tensors, meta = formula_model(torch, tv, args, flow, CALTECH_OVERRIDES)
    b, d = x.shape[0], args.z_size

    logits_seen = []
    hook = model.p_x_mean[0].register_forward_hook(
        lambda m, i, o: logits_seen.append(o.detach().clone()))
    eps = torch.randn(b, d, generator=torch.Generator().manual_seed(EPS_SEED + 1))
    model.reparameterize = NoiseFeed(eps)
    x_mean, z_mu, z_var, ldj, z0, zk = model(x)
    hook.remove()
    logits = logits_seen[0].view(b, -1)
    pre_var = model.q_z_var[0](model.q_z_nn(x).view(b, -1))
    h = model.q_z_nn(x).view(b, -1)
    ldj = (ldj + torch.zeros(b)).detach()
    xf, pf = x.view(b, -1), x_mean.view(b, -1)
    assert torch.equal(pf, torch.sigmoid(logits))
    bce = F.binary_cross_entropy(pf, xf, reduction="none").sum(1)
    log_px_clamp = log_bernoulli(xf, pf, dim=1)
    log_px_exact = (xf * F.logsigmoid(logits) + (1 - xf) * F.logsigmoid(-logits)).sum(1)
    log_q_z0 = log_normal_diag(z0, mean=z_mu, log_var=z_var.log(), dim=1)
    log_p_zk = log_normal_standard(zk, dim=1)
    kl = log_q_z0 - log_p_zk - ldj
    neg_elbo_clamp = binary_loss_array(x_mean, x, z_mu, z_var, z0, zk, ldj)
    assert torch.allclose(neg_elbo_clamp, -log_px_clamp + kl, rtol=1e-13, atol=0)
    loss, rec, kl_mean, _ = calculate_loss(x_mean, x, z_mu, z_var, z0, zk, ldj, args)
    assert abs(loss.item() - (bce + kl).mean().item()) <= 1e-12 * abs(loss.item())

    eps_is = torch.randn(b * S, d, generator=torch.Generator().manual_seed(EPS_SEED))
    per_image, log_w, nll, _ = their_importance(torch, model, args, x, eps_is)
    per_image_ex, log_w_ex, nll_ex, _ = their_importance(torch, model, args, x, eps_is,
                                                         exact_bernoulli=True)
    c = 0.5 * d * math.log(2 * math.pi)
    tensors.update({
        "in.pixels": pixels, "in.x": to_np(x), "in.eps": to_np(eps),
        "in.eps_is": to_np(eps_is), "in.test_index": np.array(idx, dtype=np.float64),
        "out.mu": to_np(z_mu), "out.var": to_np(z_var), "out.var_pre": to_np(pre_var),
        "out.h": to_np(h), "out.z0": to_np(z0), "out.zk": to_np(zk),
        "out.logdet": to_np(ldj), "out.logits": to_np(logits),
        "out.log_px_bce": to_np(-bce), "out.log_px_clamp": to_np(log_px_clamp),
        "out.log_px_exact": to_np(log_px_exact),
        "out.log_q0": to_np(log_q_z0 - c), "out.log_pz": to_np(log_p_zk - c),
        "out.kl": to_np(kl), "out.neg_elbo_bce": to_np(bce + kl),
        "out.neg_elbo_clamp": to_np(neg_elbo_clamp),
        "out.loss": np.array([loss.item()]), "out.rec": np.array([rec.item()]),
        "out.kl_mean": np.array([kl_mean.item()]),
        "out.log_w": log_w, "out.log_px_is": per_image, "out.nll": np.array([nll]),
        "out.log_w_exact": log_w_ex, "out.log_px_is_exact": per_image_ex,
        "out.nll_exact": np.array([nll_ex]),
    })
    meta.update(model="vae_caltech", flow=flow, dataset="caltech", split="test",
                test_indices=",".join(map(str, idx)), input_size="1x28x28", samples=S,
                chunk=MB, eps_seed=EPS_SEED, eps_single_seed=EPS_SEED + 1,
                overrides=json.dumps(CALTECH_OVERRIDES), torch=torch.__version__,
                reference_commit=REF_COMMIT)
    path = os.path.join(out, name + ".safetensors")
    write_safetensors(path, tensors, meta)
    pv, lg = to_np(pre_var), to_np(logits)
    print(f"{path}: {os.path.getsize(path)} bytes; var pre-activation > 20: "
          f"{(pv > 20).mean():.1%} (range {pv.min():.1f}..{pv.max():.1f}); |logit| > 11.5: "
          f"{(np.abs(lg) > 11.5).sum()} of {lg.size} (max {np.abs(lg).max():.1f}); "
          f"log p(x|z) bce {to_np(-bce).round(4)}, clamp {to_np(log_px_clamp).round(4)}, "
          f"exact {to_np(log_px_exact).round(4)}; KL {to_np(kl).round(3)}; "
          f"IS log p(x) {per_image.round(3)}, with the exact Bernoulli "
          f"{per_image_ex.round(3)}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ref", required=True, help="the authors' exported code (lib/, train_*.py)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--only", default="gaussian,cpflow,caltech")
    a = p.parse_args()
    torch, tv = reference_train_vae(a.ref)
    os.makedirs(a.out, exist_ok=True)
    for n in a.only.split(","):
        if n == "caltech":
            export_caltech(torch, tv, a.out, "vae_caltech_gaussian", "no_flow")
        else:
            flag = {"gaussian": "no_flow", "cpflow": "cpflow"}[n]
            export_frey_is(torch, tv, a.out, "vae_is_" + n, flag)


if __name__ == "__main__":
    main()
