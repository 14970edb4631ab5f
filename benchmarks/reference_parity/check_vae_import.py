#!/usr/bin/env python3
"""`cpflow import-reference --vae` on state_dicts written by the authors' train_vae.py model,
checked end to end through the CLI:

    ~/torch-venv/bin/python benchmarks/reference_parity/check_vae_import.py \
        --ref ~/cpflow-ref --cpflow target/release/cpflow

For each posterior (`-f no_flow`: VAE, `-f cpflow`: CPFVAE with the script's defaults on Frey
Faces) it builds their model with the formula weights of export_vae_full.py, saves its whole
state_dict (float64 safetensors, every key as their `state_dict()` names it), imports it with
configs/vae-frey.toml (posterior set to match), and compares `cpflow sample --temperature
1e-300 -n 1` (the decoder's pixel means at z = 0 up to 1e-300) with their `model.decode(0)`
turned into pixel means (softmax over the 256 levels, expected level / 255). A key, shape or
config mismatch fails the import; a decoder difference fails the comparison (tolerance 1e-12:
rounding of a softmax of 256 float64 logits). Writes only under a temporary directory.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_fixtures import write_safetensors  # noqa: E402
from export_vae_full import FREY_NPY, formula_model, load_frey, reference_train_vae  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ref", required=True, help="the authors' exported code (lib/, train_*.py)")
    p.add_argument("--cpflow", required=True, help="the cpflow binary")
    p.add_argument("--frey", default=FREY_NPY, help="frey_faces_uint8.npy")
    a = p.parse_args()
    torch, tv = reference_train_vae(a.ref)
    config = open(os.path.join(REPO, "configs", "vae-frey.toml")).read()
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for flag, posterior in [("no_flow", "gaussian"), ("cpflow", "cp-flow")]:
            args, _ = load_frey(tv, flag, os.path.join(tmp, flag), a.frey)
            model, _, meta = formula_model(torch, tv, args, flag)
            sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
            weights = os.path.join(tmp, f"{flag}.safetensors")
            write_safetensors(weights, sd, {})
            cfg = os.path.join(tmp, f"{flag}.toml")
            with open(cfg, "w") as f:
                f.write(config.replace('posterior = "cp-flow"', f'posterior = "{posterior}"')
                        .replace('root = "../shared/data"', f'root = "{os.path.dirname(os.path.dirname(a.frey))}"'))
            out = os.path.join(tmp, f"imported-{flag}")
            subprocess.run([a.cpflow, "import-reference", "--vae", "--state-dict", weights,
                            "--config", cfg, "--out", out], check=True)
            ours = os.path.join(tmp, f"{flag}-z0.npy")
            subprocess.run([a.cpflow, "sample", "--model", out, "-n", "1", "--temperature",
                            "1e-300", "-o", ours], check=True)
            with torch.no_grad():
                logits = model.decode(torch.zeros(1, args.z_size)).view(1, 256, 28, 20)
                probs = torch.softmax(logits, dim=1)
                theirs = (probs * torch.arange(256.0).view(1, 256, 1, 1)).sum(1) / 255.0
            diff = np.abs(np.load(ours) - theirs.view(1, 560).numpy()).max()
            print(f"{flag}: {len(sd)} keys, {meta['parameters']} parameters imported; decoder "
                  f"pixel means at z = 0 differ by at most {diff:.2e}", flush=True)
            worst = max(worst, diff)
    if not worst < 1e-12:
        sys.exit(f"decoder pixel means differ by {worst:.2e} (> 1e-12)")


if __name__ == "__main__":
    main()
