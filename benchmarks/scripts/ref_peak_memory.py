#!/usr/bin/env python3
"""Runs the reference timing script (ref_tabular.py, which imports the authors' CP-Flow code
from --ref; nothing of theirs is copied here) unchanged, and adds to each JSON row it writes
the peak resident memory of its train steps on CPU, where it reports none:

    peak_train_rss_mib = VmHWM at the first model.eval() (end of training)
                         - VmRSS right after the Adam optimiser is built,
with the high-water mark reset (`echo 5 > /proc/self/clear_refs`) when Adam is built.

Usage: python ref_peak_memory.py ref_tabular.py <ref_tabular arguments, with --out FILE>
"""
import json
import runpy
import sys


def _kib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return None


def main():
    script, args = sys.argv[1], sys.argv[2:]
    if "--out" not in args:
        sys.exit("ref_peak_memory.py: pass --out FILE (the rows are extended there)")
    out = args[args.index("--out") + 1]
    import torch

    state = {"base": None, "peaks": []}
    adam_init = torch.optim.Adam.__init__

    def init(self, *a, **k):
        adam_init(self, *a, **k)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        state["base"] = _kib("VmRSS:")

    module_eval = torch.nn.Module.eval

    def evaluate(self):
        if state["base"] is not None:
            state["peaks"].append((_kib("VmHWM:") - state["base"]) / 1024.0)
            state["base"] = None
        return module_eval(self)

    torch.optim.Adam.__init__ = init
    torch.nn.Module.eval = evaluate
    sys.argv = [script] + args
    runpy.run_path(script, run_name="__main__")
    with open(out) as f:
        rows = json.load(f)
    for row, peak in zip(rows, state["peaks"]):
        row["peak_train_rss_mib"] = peak
        row["torch_threads"] = torch.get_num_threads()
    with open(out, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
