"""exp_004's table and curve from outputs/exp_004/eval_*/results.csv: python notes/experiments/exp_004/tables.py"""

from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt

BATCH = 64
GFLOPS_PER_IMAGE = {"unet": 1.120, "dit": 1.093, "dit_lr2e-4": 1.093}  # notes/experiments/exp_004/flops.py
LABEL = {"unet": "UNet [32, 64, 64]", "dit": "DiT 6 x 96, patch 2", "dit_lr2e-4": "DiT, lr 2e-4 (4 epochs)"}

d = pd.concat([pd.read_csv(f) for f in sorted(Path("outputs/exp_004").glob("eval_*/results.csv"))], ignore_index=True)
d["arm"] = d["run"].map(lambda r: str(r).split("/")[0].removeprefix("exp_004_"))
d["tflops"] = d["step"] * BATCH * d["arm"].map(GFLOPS_PER_IMAGE) / 1e3
d = d.drop_duplicates(["arm", "step"], keep="last").sort_values(["arm", "step"])

print("| arm | step | images seen | training TFLOPs | classifier FD | classifier KID | accuracy |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for _, r in d.iterrows():
    print(
        f"| {LABEL[r['arm']]} | {r['step']} | {r['step'] * BATCH:,} | {r['tflops']:.1f} | "
        f"{r['classifier_fd']:.2f} ± {r['classifier_fd_std']:.2f} | "
        f"{r['classifier_kid']:.4f} ± {r['classifier_kid_std']:.4f} | "
        f"{r['classifier_accuracy']:.3f} ± {r['classifier_accuracy_std']:.3f} |"
    )
fd_floor, acc_real = d["classifier_fd_floor"].iloc[0], d["classifier_accuracy_real"].iloc[0]
print(f"floor: FD {fd_floor:.2f}, accuracy on real {acc_real:.3f}")

fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
for ax, m, floor in zip(axes, ("classifier_fd", "classifier_accuracy"), (fd_floor, acc_real), strict=True):
    for arm, g in d.groupby("arm"):
        ax.errorbar(g["tflops"], g[m], yerr=g[f"{m}_std"], marker="o", capsize=3, label=LABEL[arm])
    ax.axhline(floor, ls="--", c="k", lw=1, label="real vs real")
    ax.set_xlabel("training TFLOPs (counted, forward + backward)")
    ax.set_ylabel(m)
axes[0].set_yscale("log")
axes[1].legend(loc="lower right")
fig.suptitle("exp_004: MNIST-5k, flow matching, Euler 10 steps, w = 1 (mean ± std over 3 seeds)")
fig.savefig("notes/experiments/exp_004/quality_vs_flops.png", dpi=110)
