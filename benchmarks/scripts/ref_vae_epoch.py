#!/usr/bin/env python3
"""Times the authors' VAE training step (train_vae.py + lib/sylvester, imported from --ref, not
copied) on Frey Faces on the CPU, for the Gaussian posterior (`-f no_flow`) and the CP-Flow
posterior (`-f cpflow`, train_vae.py defaults: 4 x [LayerActnorm, DeepConvexFlow(PICNN h=64,
L=5)] + LayerActnorm, CG atol = rtol = 1e-5, float64).

What runs is theirs: `train_vae.get_args()` (called with a patched argv, so every default is
theirs), `load_data.load_dataset` (fed a temporary `Freyfaces/freyfaces.pkl` written from
/work/shared/data/frey-faces/frey_faces_uint8.npy: x = pixel/255, seeded shuffle, 1565/200/200),
`VAE.VAE` / `VAE.CPFVAE`, their data-dependent init pass on the first training batch, and the
body of `training.train` per batch: zero_grad, forward, `calculate_loss(..., beta)`, backward,
Adamax(lr 5e-4, eps 1e-7) step, then their `gc.collect()`. beta = their epoch-1 value (0.01).

Per posterior it reports: seconds per step (mean, std; the step excludes the per-batch
`gc.collect()` of their loop, reported apart as gc_s), CG iterations per block call from
their CG_ITERS_TRACER, the projected epoch = 16 steps (ceil(1565/100)) x (step + gc), and
the validation forward + loss in eval mode (SLQ log-det, 1 probe, 10 Lanczos steps) per
100 images; with --exact-eval also their test-time exact (brute-force Hessian) pass.

Workarounds (no code of theirs is changed):
  * `torch.symeig` (removed from PyTorch) is installed as a wrapper around torch.linalg.eigh,
    as ref_tabular.py does;
  * matplotlib, imported at module level by their plotting helpers but unused here, is replaced
    by an empty stub module when it is not installed;
  * their `evaluate()` is not called (it plots reconstructions into a snapshot folder); its
    per-batch body (eval-mode forward + calculate_loss with beta = 1) is timed instead;
  * their stdout chatter is sent to stderr so that stdout carries only the JSON.

Usage:
  ~/torch-venv/bin/python ref_vae_epoch.py --ref ~/cpflow-ref [--posterior gaussian|cpflow|both]
      [--steps 10] [--warmup 2] [--threads 2] [--dtype float64|float32] [--out file.json]
"""
import argparse
import contextlib
import gc
import json
import math
import os
import pickle
import statistics
import sys
import tempfile
import time
import types

FREY_NPY = "/work/shared/data/frey-faces/frey_faces_uint8.npy"


def stub_matplotlib():
    """Their plotting modules import matplotlib at load time; they are never called here."""
    try:
        import matplotlib  # noqa: F401
        return False
    except ImportError:
        pass
    mpl = types.ModuleType("matplotlib")
    mpl.use = lambda *a, **k: None
    sys.modules["matplotlib"] = mpl
    for sub in ("pyplot", "gridspec"):
        m = types.ModuleType("matplotlib." + sub)
        setattr(mpl, sub, m)
        sys.modules["matplotlib." + sub] = m
    return True


def mean_std(xs):
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def count(mods):
    return sum(p.numel() for m in mods for p in m.parameters())


def run_posterior(name, a, torch, tv, cg_tracer, data_root, dtype):
    flow = {"gaussian": "no_flow", "cpflow": "cpflow"}[name]
    argv = sys.argv
    sys.argv = ["train_vae.py", "-d", "freyfaces", "-f", flow, "-nc",
                "--manual_seed", str(a.seed), "-dr", data_root]
    try:
        args, kwargs = tv.get_args()  # their parser: all other flags keep their defaults
    finally:
        sys.argv = argv
    torch.set_default_dtype(dtype)

    train_loader, val_loader, _, args = tv.load_dataset(args, **kwargs)
    model = tv.VAE.CPFVAE(args) if flow == "cpflow" else tv.VAE.VAE(args)
    optimizer = torch.optim.Adamax(model.parameters(), lr=args.learning_rate, eps=1.e-7)

    enc = [model.q_z_nn, model.q_z_mean, model.q_z_var]
    dec = [model.p_x_nn, model.p_x_mean]
    params = {"encoder": count(enc), "decoder": count(dec),
              "flow": count([model.flow]) if hasattr(model, "flow") else 0,
              "total": count([model])}

    # data-dependent init, as train_vae.run: one forward pass on the first training batch
    n0 = len(cg_tracer)
    t0 = time.perf_counter()
    for (data, _) in train_loader:
        data = data.to(dtype).view(-1, *args.input_size)
        _ = model(data)
        break
    init_s = time.perf_counter() - t0
    init_cg = cg_tracer[n0:]
    del data, _
    gc.collect()

    # training steps: the body of lib/sylvester/optimization/training.py:train
    from lib.sylvester.optimization.loss import calculate_loss
    model.train()
    steps_per_epoch = len(train_loader)
    total = a.warmup + a.steps
    step_s, gc_s, cg_iters, cg_calls, losses, betas = [], [], [], [], [], []
    it, epoch = None, 0
    for i in range(total):
        if i % steps_per_epoch == 0:
            epoch += 1
            it = iter(train_loader)
        beta = min([(epoch * 1.) / max([args.warmup, 1.]), args.max_beta])
        data, _ = next(it)
        data = data.to(dtype).view(-1, *args.input_size)
        n0 = len(cg_tracer)
        t0 = time.perf_counter()
        optimizer.zero_grad()
        x_mean, z_mu, z_var, ldj, z0, zk = model(data)
        loss, rec, kl, bpd = calculate_loss(x_mean, data, z_mu, z_var, z0, zk, ldj, args, beta=beta)
        loss.backward()
        loss_value = loss.item()
        optimizer.step()
        rec.item(), kl.item()
        t1 = time.perf_counter()
        del data, x_mean, z_mu, z_var, ldj, z0, zk, loss, rec, kl
        gc.collect()
        t2 = time.perf_counter()
        if i >= a.warmup:
            step_s.append(t1 - t0)
            gc_s.append(t2 - t1)
            new = cg_tracer[n0:]
            cg_iters.extend(new)
            cg_calls.append(len(new))
            losses.append(loss_value)
            betas.append(beta)

    # validation: eval mode (SLQ log-det for CP-Flow), beta = 1, as training.evaluate per batch
    def eval_batches(nb):
        times, vals = [], []
        model.eval()
        for j, (data, _) in enumerate(val_loader):
            if j >= nb:
                break
            data = data.to(dtype).view(-1, *args.input_size)
            t0 = time.perf_counter()
            x_mean, z_mu, z_var, ldj, z0, zk = model(data)
            batch_loss, rec, kl, batch_bpd = calculate_loss(x_mean, data, z_mu, z_var, z0, zk, ldj, args)
            vals.append(batch_loss.item())
            times.append((time.perf_counter() - t0) * 100.0 / data.shape[0])
            del x_mean, z_mu, z_var, ldj, z0, zk, batch_loss
            gc.collect()
        return times, vals

    val_t, val_l = eval_batches(a.val_batches) if a.val_batches > 0 else ([], [])
    exact_t, exact_l = [], []
    if a.exact_eval and flow == "cpflow":
        for f in model.flow.flows:  # what training.evaluate(testing=True) does
            f.no_bruteforce = False
        exact_t, exact_l = eval_batches(a.val_batches)

    sm, ss = mean_std(step_s)
    gm, _ = mean_std(gc_s)
    out = {
        "flow_flag": flow,
        "params": params,
        "steps_timed": len(step_s),
        "step_s_mean": sm, "step_s_std": ss, "step_s_all": step_s,
        "gc_s_mean": gm,
        "beta": betas[0] if betas else None,
        "loss_per_step": losses,
        "init_pass_s": init_s,
        "steps_per_epoch": steps_per_epoch,
        "epoch_s_projected": steps_per_epoch * (sm + gm) if sm is not None else None,
        "val_slq_s_per_100": mean_std(val_t)[0], "val_loss_slq": val_l,
    }
    if flow == "cpflow":
        out.update({
            "cg_iters_mean": statistics.fmean(cg_iters) if cg_iters else None,
            "cg_iters_max": max(cg_iters) if cg_iters else None,
            "cg_calls_per_step": statistics.fmean(cg_calls) if cg_calls else None,
            "cg_iters_init_pass": list(init_cg),
            "cg_iters_all": list(cg_iters),
        })
        if exact_t:
            out.update({"val_exact_s_per_100": mean_std(exact_t)[0], "val_loss_exact": exact_l})
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ref", default=os.path.expanduser("~/cpflow-ref"))
    p.add_argument("--posterior", choices=["gaussian", "cpflow", "both"], default="both")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--seed", type=int, default=1, help="their --manual_seed")
    p.add_argument("--val-batches", type=int, default=2,
                   help="validation batches of 100 to time in eval mode (0: skip)")
    p.add_argument("--exact-eval", action="store_true",
                   help="also time their exact (brute-force Hessian) eval on the same batches")
    p.add_argument("--frey", default=FREY_NPY)
    p.add_argument("--out", default=None)
    a = p.parse_args()

    real_stdout = sys.stdout
    load_before = os.getloadavg()
    stubbed = stub_matplotlib()
    sys.path.insert(0, os.path.abspath(a.ref))
    import numpy as np
    import torch

    def _symeig(m, eigenvectors=False, upper=True):
        return torch.linalg.eigh(m, UPLO="U" if upper else "L")
    torch.symeig = _symeig
    torch.set_num_threads(a.threads)
    dtype = {"float64": torch.float64, "float32": torch.float32}[a.dtype]

    with contextlib.redirect_stdout(sys.stderr):
        import train_vae as tv  # sets float64 as default dtype, as their script does
        from lib.logdet_estimators import CG_ITERS_TRACER
        frey = np.load(a.frey)
        assert frey.shape == (1965, 560) and frey.dtype == np.uint8, frey.shape
        result = {
            "script": "ref_vae_epoch.py", "dataset": "freyfaces", "torch": torch.__version__,
            "threads": torch.get_num_threads(), "dtype": a.dtype, "seed": a.seed,
            "batch": 100, "warmup_steps": a.warmup, "steps": a.steps,
            "matplotlib_stubbed": stubbed, "nproc": os.cpu_count(),
            "loadavg_before": list(load_before), "posteriors": {},
        }
        names = ["gaussian", "cpflow"] if a.posterior == "both" else [a.posterior]
        with tempfile.TemporaryDirectory() as root:
            os.makedirs(os.path.join(root, "Freyfaces"))
            with open(os.path.join(root, "Freyfaces", "freyfaces.pkl"), "wb") as f:
                pickle.dump([frey], f)
            for name in names:
                result["posteriors"][name] = run_posterior(
                    name, a, torch, tv, CG_ITERS_TRACER, root, dtype)
        result["loadavg_after"] = list(os.getloadavg())
        result["epoch_steps_note"] = "epoch = %d steps = ceil(1565/100)" % math.ceil(1565 / 100)

    text = json.dumps(result, indent=1)
    real_stdout.write(text + "\n")
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
