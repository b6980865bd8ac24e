"""exp_005's table and figure from outputs/exp_005/eval_*/results.csv: python notes/experiments/exp_005/tables.py"""

from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt

rows = []
for f in sorted(Path("outputs/exp_005").glob("eval_*/results.csv")):
    d = pd.read_csv(f)
    d["grid"] = f.parent.name
    rows.append(d)
d = pd.concat(rows, ignore_index=True)

for c in ("interval", "guide", "ema"):
    if c not in d:
        d[c] = None
d["guide"] = d["guide"].map(lambda g: "step " + str(int(g.split("step=")[1][:7])) if isinstance(g, str) else "")


def arm(r):
    if not pd.isna(r["ema"]):
        return f"post-hoc EMA {r['ema']}"
    if r["guide"]:
        return f"autoguidance ({r['guide']}), w={r['guidance']}"
    if isinstance(r["interval"], str):
        return f"CFG w={r['guidance']}, interval {r['interval']}"
    if r["guidance"] != 1.0:
        return f"CFG w={r['guidance']}"
    return "conditional (w=1)" + (", checkpoint EMA" if r["grid"] == "eval_4" else "")


d["arm"] = d.apply(arm, axis=1)
print("| arm | steps | NFE | classifier FD | accuracy | seconds |")
print("| --- | --- | --- | --- | --- | --- |")
for _, r in d.iterrows():
    print(
        f"| {r['arm']} | {r['steps']} | {r['nfe']} | {r['classifier_fd']:.2f} ± {r['classifier_fd_std']:.2f} | "
        f"{r['classifier_accuracy']:.3f} ± {r['classifier_accuracy_std']:.3f} | {r['seconds']:.0f} |"
    )
print(f"floor: FD {d['classifier_fd_floor'].iloc[0]:.2f}, accuracy on real {d['classifier_accuracy_real'].iloc[0]:.3f}")
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
for ax, m in zip(axes, ("classifier_fd", "classifier_accuracy"), strict=True):
    for _, r in d.iterrows():
        ax.errorbar(r["nfe"], r[m], yerr=r[f"{m}_std"], marker="o", capsize=3, label=r["arm"])
    floor = d["classifier_fd_floor"].iloc[0] if m == "classifier_fd" else d["classifier_accuracy_real"].iloc[0]
    ax.axhline(floor, ls="--", c="k", lw=1)
    ax.set_xlabel("NFE per sample")
    ax.set_ylabel(m)
axes[1].legend(fontsize=6, loc="lower right")
fig.suptitle("exp_005: MNIST-5k EDM, EDM-DPM-Solver++ (250 samples x 3 seeds; dashed: real-vs-real)")
fig.savefig("notes/experiments/exp_005/quality_vs_nfe.png", dpi=110)
