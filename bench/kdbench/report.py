"""The two tables, the targets, the profile, the plots and docs/BENCHMARKS.md.

Everything here reads the RunResults the runs produced; nothing trains.
"""
import gzip
import math
import os
import re
import statistics

README = "/usr/share/doc/dataset-fashion-mnist/README.md.gz"
# The rows of the Fashion-MNIST README's benchmark table set beside ours, and
# the accuracies it lists, used when the README is not installed.
PUBLISHED = {
    "teacher": [("2 Conv+pooling+BN", 0.934), ("2 Conv+3 FC ~1.8M parameters", 0.932)],
    "student": [("2 Conv <100K parameters", 0.925), ("2 Conv ~113K parameters", 0.922)],
    "mlp": [("MLP 256-128-100", 0.8833)],
}
PHASES = ["data", "teacher", "forward", "backward", "sync", "optimizer", "other"]


def published(group):
    """[(row name, accuracy)] from the installed README, else the constants."""
    rows = PUBLISHED[group]
    try:
        with gzip.open(README, "rt", encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return rows
    found = []
    for name, fallback in rows:
        m = re.search(r"^\|\s*" + re.escape(name) + r"\s*\|[^|]*\|\s*([0-9.]+)\s*\|",
                      text, re.M)
        found.append((name, float(m.group(1)) if m else fallback))
    return found


def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], None
    return statistics.mean(values), statistics.stdev(values)


def pct(mean, std=None, n=None):
    if mean is None:
        return "n/a"
    text = f"{100 * mean:.2f}%"
    if std is not None:
        text = f"{100 * mean:.2f} ± {100 * std:.2f}%"
    if n is not None:
        text += f" (n={n})"
    return text


def seconds(value):
    return "n/a" if value is None else (f"{value:.1f} s" if value >= 10 else f"{value:.2f} s")


def human_bytes(n):
    for unit, size in (("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def ratio(a, b):
    return None if a is None or b is None or b <= 0 else a / b


def median_epoch(runs):
    times = [t for r in runs for t in r.epoch_seconds]
    return statistics.median(times) if times else None


def accuracy_tolerance(runs_a, runs_b, test_samples):
    """How far two mean accuracies may differ by noise alone: twice the
    larger of the seeds' standard error of the difference and the binomial
    error of two independent test-set estimates."""
    accs_a = [r.accuracy for r in runs_a]
    accs_b = [r.accuracy for r in runs_b]
    se = 0.0
    if len(accs_a) > 1 and len(accs_b) > 1:
        se = math.sqrt(statistics.variance(accs_a) / len(accs_a) +
                       statistics.variance(accs_b) / len(accs_b))
    p = statistics.mean(accs_a + accs_b)
    binomial = math.sqrt(2 * p * (1 - p) / max(test_samples, 1))
    return 2 * max(se, binomial)


# ---------------------------------------------------------------- analysis

def analyze(ctx):
    """Numbers for both tables from the runs in ctx (a dict)."""
    hard, distill, ref = ctx["hard"], ctx["distill"], ctx["reference"]
    teacher = ctx["teacher"]
    threshold = ctx["threshold"]
    out = {}
    params_student = distill[0].summary["params"]
    out["quality"] = []
    t_params = teacher.summary["params"]
    out["quality"].append({
        "row": f"teacher {ctx['teacher_label']}", "accuracy": teacher.accuracy, "std": None,
        "n": 1, "params": t_params, "fp32_bytes": 4 * t_params,
        "wall_seconds": teacher.summary.get("train_seconds"),
        "published": published("teacher")})
    for label, runs in ((f"student {ctx['student_label']}, hard labels only", hard),
                        (f"student, distilled (T = {ctx['temperature']:g}, "
                         f"{ctx['alpha']:g} KL + {1 - ctx['alpha']:.2g} CE)", distill)):
        m, s = mean_std([r.accuracy for r in runs])
        w, _ = mean_std([r.summary.get("train_seconds") for r in runs])
        out["quality"].append({"row": label, "accuracy": m, "std": s, "n": len(runs),
                               "params": params_student, "fp32_bytes": 4 * params_student,
                               "wall_seconds": w, "published": published("student")})
    for label, kind in (("student, PTQ INT8", "ptq"),
                        ("student, teacher-guided QAT INT8 (1 epoch)", "qat")):
        qs = ctx[kind]
        m, s = mean_std([q.int8_accuracy for q in qs])
        w, _ = mean_std([q.wall_seconds for q in qs])
        out["quality"].append({"row": label, "accuracy": m, "std": s, "n": len(qs),
                               "params": params_student,
                               "int8_onnx_bytes": qs[0].int8_onnx_bytes,
                               "fp32_onnx_bytes": qs[0].fp32_onnx_bytes,
                               "wall_seconds": w, "published": published("student")})

    d_mean, _ = mean_std([r.accuracy for r in distill])
    h_mean, _ = mean_std([r.accuracy for r in hard])
    r_mean, _ = mean_std([r.accuracy for r in ref])
    targets = [
        {"target": "distilled student < 100K parameters reaches >= 92.5%",
         "measured": pct(d_mean) + f" at {params_student:,} parameters",
         "met": d_mean is not None and d_mean >= 0.925 and params_student < 100_000,
         "gap": f"{100 * (d_mean - 0.925):+.2f} points"},
        {"target": "distilled beats hard-label-only by >= 0.5 points (mean over seeds)",
         "measured": f"{100 * (d_mean - h_mean):+.2f} points",
         "met": d_mean - h_mean >= 0.005,
         "gap": f"{100 * (d_mean - h_mean - 0.005):+.2f} points"},
        qat_target(ctx["qat"]),
    ]

    speed = {}
    fw_epoch, ref_epoch, hard_epoch = median_epoch(distill), median_epoch(ref), median_epoch(hard)
    speed["epoch_inprocess"] = {"framework": fw_epoch, "reference": ref_epoch,
                                "ratio": ratio(fw_epoch, ref_epoch), "target": 0.8}
    speed["epoch_no_teacher"] = {"framework": hard_epoch,
                                 "ratio_inprocess_over_none": ratio(fw_epoch, hard_epoch)}
    speed["epoch_cached"] = ctx["cached"]
    speed["epoch_server"] = ctx["server"]
    fw_tt = [r.time_to(threshold) for r in distill]
    ref_tt = [r.time_to(threshold) for r in ref]
    reached = lambda xs: [x for x in xs if x is not None]  # noqa: E731
    fw_t, _ = mean_std(reached(fw_tt))
    ref_t, _ = mean_std(reached(ref_tt))
    speed["time_to_threshold"] = {
        "threshold": threshold, "framework": fw_t, "reference": ref_t,
        "framework_reached": len(reached(fw_tt)), "reference_reached": len(reached(ref_tt)),
        "runs": len(distill), "ratio": ratio(fw_t, ref_t)}
    tol = accuracy_tolerance(distill, ref, ctx["test_samples"])
    speed["final_accuracy"] = {
        "framework": mean_std([r.accuracy for r in distill]),
        "reference": mean_std([r.accuracy for r in ref]),
        "difference": d_mean - r_mean, "tolerance": tol,
        "agree": abs(d_mean - r_mean) <= tol}
    targets += [
        {"target": "in-process distillation epoch time <= 0.8 x the PyTorch reference",
         "measured": "n/a" if speed["epoch_inprocess"]["ratio"] is None
         else f"{speed['epoch_inprocess']['ratio']:.3f}",
         "met": speed["epoch_inprocess"]["ratio"] is not None and
         speed["epoch_inprocess"]["ratio"] <= 0.8,
         "gap": "n/a" if speed["epoch_inprocess"]["ratio"] is None
         else f"{speed['epoch_inprocess']['ratio'] - 0.8:+.3f}"},
        {"target": "epoch time with cached targets <= 1.1 x no teacher at all",
         "measured": "n/a" if "ratio" not in speed["epoch_cached"]
         else f"{speed['epoch_cached']['ratio']:.3f}",
         "met": None if "ratio" not in speed["epoch_cached"]
         else speed["epoch_cached"]["ratio"] <= 1.1,
         "gap": ""},
    ]
    out["targets"] = targets
    out["speed"] = speed
    out["profile"] = {"framework": per_epoch_profile(distill),
                      "reference": per_epoch_profile(ref),
                      "framework_hard": per_epoch_profile(hard)}
    return out


def qat_target(qats):
    """QAT INT8 against the FP32 model it started from, per seed (the same
    weights evaluated on the same test set), and the INT8/FP32 file sizes."""
    change, _ = mean_std([q.int8_accuracy - q.fp32_accuracy for q in qats])
    size = qats[0].int8_onnx_bytes / qats[0].fp32_onnx_bytes
    return {"target": "QAT INT8 within 0.3 points of the FP32 student at ~4x smaller weights",
            "measured": f"{100 * change:+.2f} points (mean over seeds), INT8 ONNX file "
                        f"{size:.3f} x the FP32 one",
            "met": change >= -0.003 and size <= 0.3,
            "gap": f"{100 * (change + 0.003):+.2f} points from the limit"}


def per_epoch_profile(runs):
    total, epochs = {}, 0
    for r in runs:
        for k, v in r.profile().items():
            total[k] = total.get(k, 0.0) + v
        epochs += len(r.epochs)
    return {k: total.get(k, 0.0) / max(epochs, 1) for k in PHASES}


# ---------------------------------------------------------------- text

def markdown(ctx, res):
    lines = []
    mode = ctx["mode_name"]
    m = ctx["machine"]
    lines.append(f"Command: `{ctx['command']}` · date {ctx['date']} · "
                 f"mode **{mode}** · machine: {m['cpu']}, {m['cores']} cores, {m['os']}, "
                 f"{m['torch']}, {ctx['threads']} threads per run, "
                 f"load average {m['load_at_start']} at the start (other work on the "
                 f"machine inflates every time below, both sides alike since the runs "
                 f"alternate).")
    lines.append("")
    lines.append(f"Budget: {ctx['budget']}.")
    lines.append("")
    lines.append("### Quality (Fashion-MNIST test set)")
    lines.append("")
    lines.append("| model | test accuracy | parameters | weight bytes | training wall time "
                 "| published (Fashion-MNIST README) |")
    lines.append("|---|---|---|---|---|---|")
    for row in res["quality"]:
        acc = pct(row["accuracy"], row["std"], row["n"] if row["n"] > 1 else None)
        if "int8_onnx_bytes" in row:
            size = (f"{human_bytes(row['params'])} INT8 (ONNX file "
                    f"{human_bytes(row['int8_onnx_bytes'])} vs "
                    f"{human_bytes(row['fp32_onnx_bytes'])} FP32)")
        else:
            size = f"{human_bytes(row['fp32_bytes'])} FP32"
        pub = "; ".join(f"{name}: {100 * a:.2f}%" for name, a in row["published"])
        lines.append(f"| {row['row']} | {acc} | {row['params']:,} | {size} | "
                     f"{seconds(row['wall_seconds'])} | {pub} |")
    lines.append("")
    lines.append("Wall time is training only (test evaluations excluded), mean over seeds; "
                 "the hard-label and distilled students share architecture, data, "
                 "schedule and number of steps. The INT8 rows quantize each seed's "
                 "distilled student (calibration, then for QAT one epoch of fake-quant "
                 "fine-tuning with the distillation's loss and teacher); their wall time is "
                 "the whole `distill` QUANTIZE run, evaluations and ONNX export included.")
    lines.append("")
    lines.append("### Speed (framework vs PyTorch reference, same job, alternating runs)")
    lines.append("")
    sp = res["speed"]
    lines.append("| measure | framework | PyTorch reference | ratio | target |")
    lines.append("|---|---|---|---|---|")
    e = sp["epoch_inprocess"]
    lines.append(f"| distillation epoch, in-process teacher (median) | {seconds(e['framework'])} "
                 f"| {seconds(e['reference'])} | {fmt_ratio(e['ratio'])} | <= 0.8 |")
    nt = sp["epoch_no_teacher"]
    lines.append(f"| epoch with no teacher (hard labels) | {seconds(nt['framework'])} | — | "
                 f"in-process / none: {fmt_ratio(nt['ratio_inprocess_over_none'])} | — |")
    c = sp["epoch_cached"]
    lines.append("| epoch with cached teacher targets vs no teacher (no augmentation) | "
                 f"{seconds(c['cached'])} vs {seconds(c['none'])} | — | "
                 f"{fmt_ratio(c['ratio'])} | <= 1.1 |")
    s = sp["epoch_server"]
    lines.append("| epoch through one teacher server vs in-process | "
                 f"{seconds(s['server'])} vs {seconds(s['inprocess'])} | — | "
                 f"{fmt_ratio(s['ratio'])} | — |")
    lines.append(f"| test accuracy through the server vs in-process (seed "
                 f"{ctx['distill'][0].spec['seed']}) | {pct(s['accuracy'])} vs "
                 f"{pct(s['inprocess_accuracy'])} | — | Δ "
                 f"{100 * (s['accuracy'] - s['inprocess_accuracy']):+.2f} points | "
                 f"same within noise |")
    t = sp["time_to_threshold"]
    lines.append(f"| time to {100 * t['threshold']:.0f}% test accuracy | "
                 f"{reach(t['framework'], t['framework_reached'], t['runs'])} | "
                 f"{reach(t['reference'], t['reference_reached'], t['runs'])} | "
                 f"{fmt_ratio(t['ratio'])} | — |")
    fa = sp["final_accuracy"]
    lines.append(f"| final test accuracy | {pct(*fa['framework'])} | {pct(*fa['reference'])} "
                 f"| Δ {100 * fa['difference']:+.2f} points, "
                 f"{'agree' if fa['agree'] else 'DISAGREE'} within noise "
                 f"(± {100 * fa['tolerance']:.2f}) | must agree |")
    lines.append("")
    lines.append("Where a distillation step's time goes (seconds per epoch, share of the epoch):")
    lines.append("")
    lines.append("| phase | framework (distill) | PyTorch reference | framework (no teacher) |")
    lines.append("|---|---|---|---|")
    prof = res["profile"]
    sums = {k: sum(v.values()) for k, v in prof.items()}
    for phase in PHASES:
        cells = []
        for key in ("framework", "reference", "framework_hard"):
            v = prof[key][phase]
            cells.append(f"{v:.2f} s ({100 * v / max(sums[key], 1e-9):.0f}%)")
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("`data` is waiting for the next batch (the framework prepares batches on a "
                 "loader thread; the reference builds them inline), `teacher` the teacher's "
                 "forward pass, `sync` gradient all-reduce (0 with one rank), `other` the "
                 "rest of the loop (loss read-back, logging).")
    lines.append("")
    lines.append("### Checks and targets")
    lines.append("")
    dc = ctx["data_check"]
    lines.append(f"- Data order and augmentation: the framework's first {dc['batches']} batches "
                 f"of epoch {dc['epoch']} ({dc['samples']} samples, {dc['augmented_samples']} of "
                 f"them cropped off-centre or flipped) against the reference's: ids "
                 f"{'identical' if dc['ids_equal'] else 'DIFFERENT'}, pixels "
                 f"{'bit-identical' if dc['pixels_equal'] else 'DIFFERENT'}.")
    lc = ctx["loss_check"]
    lines.append(f"- Same job on both sides: training loss logged at step {lc['step']}, "
                 f"framework {lc['framework']:.6f}, "
                 f"reference {lc['reference']:.6f} (relative difference "
                 f"{lc['relative_difference']:.1e}); over the first {lc['steps']} logged steps "
                 f"the largest relative difference is {lc['max_relative_difference']:.1e}.")
    for tgt in res["targets"]:
        state = {True: "met", False: "MISSED", None: "not measured"}[tgt["met"]]
        lines.append(f"- {tgt['target']}: **{state}** — measured {tgt['measured']}"
                     + (f" ({tgt['gap']})" if tgt["gap"] else "") + ".")
    if mode != "full":
        lines.append(f"- These are {mode}-mode numbers (a small budget that checks the "
                     f"harness); the targets are judged on the full mode "
                     f"(`bash bench/compare.sh`).")
    lines.append("")
    for name, path in ctx.get("plots", {}).items():
        lines.append(f"![{name}]({path})")
    if not ctx.get("plots"):
        lines.append(f"(No plots: {ctx.get('plot_error', 'matplotlib missing')}.)")
    return "\n".join(lines) + "\n"


def fmt_ratio(r):
    return "n/a" if r is None else f"**{r:.3f}**"


def reach(value, reached, runs):
    if not reached:
        return f"not reached ({runs} runs)"
    return seconds(value) + (f" ({reached}/{runs} runs)" if reached < runs else "")


def write_docs(path, mode, body, tool="compare.sh", title=None):
    """Replaces this tool's and mode's generated section of
    docs/BENCHMARKS.md (or appends it), leaving the hand-written text around
    it alone."""
    begin = f"<!-- generated by bench/{tool}: {mode} (begin) -->"
    end = f"<!-- generated by bench/{tool}: {mode} (end) -->"
    title = title or {"full": "Framework vs PyTorch (`bash bench/compare.sh`)",
                      "quick": "Framework vs PyTorch, quick mode (`bash bench/compare.sh --quick`)",
                      "smoke": "Framework vs PyTorch, smoke mode"}[mode]
    section = f"{begin}\n## {title}\n\n{body}{end}"
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def plot(ctx, img_dir, prefix):
    """Accuracy against training time for both sides, and the distilled and
    hard-label students' loss curves. Returns {title: path} or raises
    ImportError when matplotlib is missing."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(img_dir, exist_ok=True)
    paths = {}

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for runs, color, label in ((ctx["distill"], "tab:blue", "framework (distill)"),
                               (ctx["reference"], "tab:orange", "PyTorch reference"),
                               (ctx["hard"], "tab:gray", "framework, hard labels")):
        for i, r in enumerate(runs):
            xs, ys, t = [], [], 0.0
            for e in r.epochs:
                t += e["epoch_seconds"]
                xs.append(t)
                ys.append(100 * e["test_accuracy"])
            ax.plot(xs, ys, "o-", color=color, alpha=0.8, label=label if i == 0 else None)
    ax.axhline(100 * ctx["threshold"], color="k", ls=":", lw=1,
               label=f"{100 * ctx['threshold']:.0f}%")
    ax.set_xlabel("training wall time (s, evaluation excluded)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Fashion-MNIST student, {ctx['mode_name']} mode")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = os.path.join(img_dir, f"{prefix}-accuracy-vs-time.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths["test accuracy against wall time"] = path

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.6, 3.8))
    for runs, color, label in ((ctx["distill"], "tab:blue", "distilled"),
                               (ctx["hard"], "tab:gray", "hard labels")):
        for i, r in enumerate(runs):
            # Cross entropy on the labels is a term of both objectives, so
            # it is the curve the two students share.
            steps = [s["step"] for s in r.steps]
            a1.plot(steps, [s["terms"]["hard_ce"] for s in r.steps], color=color,
                    alpha=0.7, lw=1, label=f"{label}: hard_ce term" if i == 0 else None)
            if "kd_kl" in r.steps[0]["terms"]:
                a1.plot(steps, [s["loss"] for s in r.steps], color=color, ls="--",
                        alpha=0.5, lw=1, label=f"{label}: total objective" if i == 0 else None)
            a2.plot([e["epoch"] for e in r.epochs], [e["test_loss"] for e in r.epochs], "o-",
                    color=color, alpha=0.8, label=label if i == 0 else None)
    a1.set_xlabel("step")
    a1.set_ylabel("training loss")
    a1.set_title("training loss (logged steps)")
    a2.set_xlabel("epoch")
    a2.set_ylabel("test cross entropy")
    a2.set_title("test loss")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()
    path = os.path.join(img_dir, f"{prefix}-loss-curves.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths["loss curves, distilled vs hard-label students"] = path
    return paths
