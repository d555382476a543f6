"""The language-model benchmarks, one command: bash bench/lm_bench.sh.

Measures, on the King James Bible prepared by distill_prepare_text:

1. quality: the quickstart's teacher (launch/configs/lm_teacher.pbtxt), then
   the 1.5M-parameter student on hard labels and distilled from it
   (lm_student_hard / lm_student_distill) at the same token budget, for
   --seeds seeds; test and validation perplexity, next-token accuracy;
2. speed: tokens/s of `distill` against bench/reference/lm_reference.py (the
   same job written in PyTorch) over the same steps, for the hard-label and
   the distillation step, with the reference's teacher plain and optimized
   and its C allocator as glibc ships it and tuned as `distill` tunes it;
3. MFU: this CPU's FP32 peak measured with a 2048^3 matmul (oneDNN, and the
   system BLAS LibTorch's matmul uses), and the FLOP/s of the student step
   and the teacher forward from the quality runs' step profiles;
4. memory: the whole process's peak RSS of training steps at V = 32,000,
   batch 16 x 256, with the head's loss in chunks of 256, 512 (the default)
   and 1,024 tokens and in one chunk of all 4,096 (unchunked).

It writes its section of docs/BENCHMARKS.md (--no_docs: print only). Run
folders go under --out (default runs/bench_lm); a run whose summary.json is
there already is reused (--fresh starts over).
"""
import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "bench"))
from kdbench import report  # noqa: E402

BIN = os.path.join(REPO, "build", "bin")
PY = "/usr/bin/python3"
REFERENCE = os.path.join(REPO, "bench", "reference", "lm_reference.py")
DATA = os.path.join(REPO, "runs", "lm", "data")
# (temperature, kd_kl weight, hard_ce weight) tried besides the config's
# own (1, 0.5, 0.5), on seed 1.
VARIANTS = ((2, 0.5, 0.5), (1, 0.9, 0.1))
# What common/malloc_tuning.cc does, as glibc's environment variables.
TUNED_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
                "MALLOC_TOP_PAD_": str(64 << 20)}


def log(msg):
    print(f"[lm_bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd, env=None, quiet=True):
    """Runs cmd; returns (stdout, peak RSS in kB of that process alone)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"lm_bench: {' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    if not quiet:
        print(out, end="")
    return out, usage.ru_maxrss


def config_text(name, run_dir, seed=None, teacher_weights=None, extra="", variant=None):
    text = open(os.path.join(REPO, "launch", "configs", name + ".pbtxt")).read()
    text = re.sub(r'run_dir: "[^"]*"', f'run_dir: "{run_dir}"', text)
    if seed is not None:
        text = re.sub(r"\nseed: \d+", f"\nseed: {seed}", text)
    if teacher_weights is not None:
        text = re.sub(r'weights: "[^"]*"', f'weights: "{teacher_weights}"', text)
    if variant is not None:
        temperature, kd, hard = variant
        text = re.sub(r"\ntemperature: [0-9.]+", f"\ntemperature: {temperature}", text)
        text = re.sub(r'name: "kd_kl" weight: [0-9.]+', f'name: "kd_kl" weight: {kd}', text)
        text = re.sub(r'name: "hard_ce" weight: [0-9.]+', f'name: "hard_ce" weight: {hard}', text)
    return text + extra


def write_config(out, filename, text):
    path = os.path.join(out, "configs", filename)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def train(out, name, config, fresh):
    run_dir = os.path.join(out, name)
    summary = os.path.join(run_dir, "summary.json")
    if os.path.exists(summary) and not fresh:
        log(f"{name}: reusing {summary}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        log(f"{name}: training")
        run([os.path.join(BIN, "distill"), "--config", config])
    s = json.load(open(summary))
    epochs = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
    s["profile_seconds"] = [r for r in epochs if r.get("type") == "epoch"][-1]["profile_seconds"]
    return s


# ------------------------------------------------------------------ peak

PEAK_SCRIPT = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
n = 2048
x, w = torch.randn(n, n), torch.randn(n, n)
def best(f):
    f(); times = []
    for _ in range(5):
        t = time.perf_counter(); f(); times.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(times) / 1e9
xm = x.to_mkldnn()
print(json.dumps({"onednn": best(lambda: torch._C._nn.mkldnn_linear(xm, w, None).to_dense()),
                  "blas": best(lambda: torch.matmul(x, w.t()))}))
"""


def peak(threads):
    out, _ = run([PY, "-c", PEAK_SCRIPT, str(threads)])
    return json.loads(out.strip().splitlines()[-1])


# ------------------------------------------------------------------ FLOPs

def matmul_params(layers, d, d_ff, vocab):
    """Parameters that take part in a matmul per token (embedding lookups
    do not): the blocks' linear layers and the output head."""
    return layers * (4 * d * d + 2 * d * d_ff) + vocab * d


def flops_per_token(layers, d, d_ff, vocab, seq_len, training):
    """6N (2N forward) plus attention's QK^T and AV: 12 L d S per token for
    training, 4 L d S for a forward (full S x S products, as computed)."""
    n = matmul_params(layers, d, d_ff, vocab)
    return (6 * n + 12 * layers * d * seq_len) if training else (2 * n + 4 * layers * d * seq_len)


def step_shape(config_name):
    """(batch_size, seq_len) of a launch config."""
    text = open(os.path.join(REPO, "launch", "configs", config_name + ".pbtxt")).read()
    return (int(re.search(r"\nbatch_size: (\d+)", text).group(1)),
            int(re.search(r"seq_len: (\d+)", text).group(1)))


def gpt_dims(config_name, block="student"):
    text = open(os.path.join(REPO, "launch", "configs", config_name + ".pbtxt")).read()
    if block == "teacher":
        text = text[text.index("teacher {"):]
    else:
        text = text[text.index("student {"):]
    dims = {}
    for key in ("layers", "heads", "d_model", "d_ff"):
        dims[key] = int(re.search(r'key: "%s" value: (\d+)' % key, text).group(1))
    return dims


def base_variant():
    """(temperature, kd_kl weight, hard_ce weight) of lm_student_distill."""
    text = open(os.path.join(REPO, "launch", "configs", "lm_student_distill.pbtxt")).read()
    return (re.search(r"\ntemperature: ([0-9.]+)", text).group(1),
            re.search(r'name: "kd_kl" weight: ([0-9.]+)', text).group(1),
            re.search(r'name: "hard_ce" weight: ([0-9.]+)', text).group(1))


# ------------------------------------------------------------------ speed

def framework_rate(out, name, config_name, steps, skip, teacher_weights=None):
    run_dir = os.path.join(out, name)
    shutil.rmtree(run_dir, ignore_errors=True)
    text = config_text(config_name, run_dir, teacher_weights=teacher_weights)
    text = re.sub(r"log_every_steps: \d+", f"log_every_steps: {skip}", text)
    config = write_config(out, name + ".pbtxt", text)
    run([os.path.join(BIN, "distill"), "--config", config,
         "--stop_after_steps", str(steps)])
    records = {r["step"]: r for r in map(json.loads, open(os.path.join(run_dir, "metrics.jsonl")))
               if r.get("type") == "train"}
    # Each record's rate is the epoch's so far: the rate over steps
    # skip+1..steps follows from the two records' elapsed times.
    batch, seq = step_shape(config_name)
    tokens_per_step = batch * seq
    elapsed = {s: s * tokens_per_step / records[s]["tokens_per_sec"] for s in (skip, steps)}
    return (steps - skip) * tokens_per_step / (elapsed[steps] - elapsed[skip])


def reference_rate(steps, skip, teacher="none", teacher_weights="", malloc=False):
    s, t = gpt_dims("lm_student_distill"), gpt_dims("lm_student_distill", "teacher")
    cmd = [PY, REFERENCE, "--data", DATA, "--steps", str(steps), "--warmup_steps", str(skip),
           "--layers", str(s["layers"]), "--heads", str(s["heads"]),
           "--d_model", str(s["d_model"]), "--d_ff", str(s["d_ff"]), "--teacher", teacher,
           "--teacher_layers", str(t["layers"]), "--teacher_heads", str(t["heads"]),
           "--teacher_d_model", str(t["d_model"]), "--teacher_d_ff", str(t["d_ff"])]
    if teacher_weights:
        cmd += ["--teacher_weights", teacher_weights]
    out, _ = run(cmd, env=TUNED_MALLOC if malloc else None)
    return json.loads(out.strip().splitlines()[-1])["tokens_per_sec"]


# ------------------------------------------------------------------ memory

def memory(out, chunks):
    data32k = os.path.join(out, "kjv32k")
    if not os.path.exists(os.path.join(data32k, "corpus.json")):
        log("preparing the corpus with V = 32,000")
        run([os.path.join(BIN, "distill_prepare_text"), "--out_dir", data32k,
             "--vocab_size", "32000"])
    rss = {}
    for chunk in chunks:
        run_dir = os.path.join(out, f"mem_{chunk}")
        shutil.rmtree(run_dir, ignore_errors=True)
        text = f"""name: "mem-{chunk}"
mode: TRAIN
run_dir: "{run_dir}"
data {{ dataset: "tokens" dir: "{data32k}" seq_len: 256 }}
student {{
  arch: "gpt"
  options {{ key: "layers" value: 2 }}
  options {{ key: "heads" value: 4 }}
  options {{ key: "d_model" value: 128 }}
  options {{ key: "d_ff" value: 512 }}
  options {{ key: "context" value: 256 }}
}}
epochs: 1
batch_size: 16
loss_chunk_tokens: {chunk}
optimizer {{ type: ADAMW lr: 0.002 weight_decay: 0.01 }}
seed: 1
"""
        config = write_config(out, f"mem_{chunk}.pbtxt", text)
        _, rss[chunk] = run([os.path.join(BIN, "distill"), "--config", config,
                             "--stop_after_steps", "3"])
        log(f"loss_chunk_tokens {chunk}: peak RSS {rss[chunk]:,} kB")
    return rss


# ------------------------------------------------------------------ main

def mean_sd(values):
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join(REPO, "runs", "bench_lm"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--speed_steps", type=int, default=60)
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--no_docs", action="store_true")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    a = p.parse_args()
    if a.speed_steps <= 20 or a.speed_steps % 20:
        p.error(f"--speed_steps must be a multiple of 20 above 20 (the rate is taken over the "
                f"steps after the first 20 from records every 20 steps); got {a.speed_steps}")
    os.makedirs(a.out, exist_ok=True)
    if not os.path.exists(os.path.join(DATA, "corpus.json")):
        log("preparing the corpus into runs/lm/data")
        run([os.path.join(BIN, "distill_prepare_text"), "--out_dir", DATA])
    corpus = json.load(open(os.path.join(DATA, "corpus.json")))
    vocab = corpus["vocab_size"]

    log("FP32 peak: 2048^3 matmul")
    pk = peak(a.threads)

    teacher = train(a.out, "teacher", write_config(
        a.out, "teacher.pbtxt", config_text("lm_teacher", os.path.join(a.out, "teacher"))), a.fresh)
    weights = os.path.join(a.out, "teacher", "model.pt")
    hard, distilled = [], []
    for seed in range(1, a.seeds + 1):
        hard.append(train(a.out, f"hard_s{seed}", write_config(
            a.out, f"hard_s{seed}.pbtxt",
            config_text("lm_student_hard", os.path.join(a.out, f"hard_s{seed}"), seed)), a.fresh))
        distilled.append(train(a.out, f"distill_s{seed}", write_config(
            a.out, f"distill_s{seed}.pbtxt",
            config_text("lm_student_distill", os.path.join(a.out, f"distill_s{seed}"),
                        seed, weights)), a.fresh))

    # Other temperatures and weights, seed 1 only.
    variants = {}
    for variant in VARIANTS:
        name = "distill_s1_T{}_kd{}_ce{}".format(*variant)
        variants[variant] = train(a.out, name, write_config(
            a.out, name + ".pbtxt",
            config_text("lm_student_distill", os.path.join(a.out, name), 1, weights,
                        variant=variant)), a.fresh)

    steps, skip = a.speed_steps, 20
    log(f"speed: {steps} steps each, the rate over steps {skip + 1}..{steps}")
    speed = {
        "fw_hard": framework_rate(a.out, "speed_hard", "lm_student_hard", steps, skip),
        "ref_hard": reference_rate(steps, skip),
        "ref_hard_malloc": reference_rate(steps, skip, malloc=True),
        "fw_distill": framework_rate(a.out, "speed_distill", "lm_student_distill", steps, skip,
                                     teacher_weights=weights),
        "ref_distill_plain": reference_rate(steps, skip, "plain", weights),
        "ref_distill_opt": reference_rate(steps, skip, "optimized", weights),
        "ref_distill_opt_malloc": reference_rate(steps, skip, "optimized", weights, malloc=True),
    }
    for k, v in speed.items():
        log(f"  {k}: {v:,.0f} tokens/s")
    rss = memory(a.out, (4096, 1024, 512, 256))

    # ---------------------------------------------------------- report
    s_dims = gpt_dims("lm_student_hard")
    t_dims = gpt_dims("lm_student_distill", "teacher")
    batch, seq = step_shape("lm_student_hard")
    f_train = flops_per_token(s_dims["layers"], s_dims["d_model"], s_dims["d_ff"], vocab, seq, True)
    f_teacher = flops_per_token(t_dims["layers"], t_dims["d_model"], t_dims["d_ff"], vocab, seq, False)
    prof_h = hard[0]["profile_seconds"]
    prof_d = distilled[0]["profile_seconds"]
    step_seconds = prof_h["forward"] + prof_h["backward"] + prof_h["optimizer"]
    lines = []
    w = lines.append
    w(f"Generated by `bash bench/lm_bench.sh` on {time.strftime('%Y-%m-%d')}, "
      f"{a.threads} threads, King James Bible, V = {vocab:,}, S = {seq}, batch {batch}, "
      f"one epoch ({corpus['splits']['train']['tokens']:,} training tokens).\n")
    w("### Quality: hard labels vs distilled, same token budget\n")
    w(f"Teacher: {teacher['params']:,} parameters, test perplexity "
      f"{teacher['test_perplexity']:.2f}, next-token accuracy "
      f"{100 * teacher['test_accuracy']:.2f}%. Students: {hard[0]['params']:,} parameters; "
      "distilled with {1} kd_kl + {2} hard_ce at T = {0} from the teacher in the same process "
      "(dense targets), as launch/configs/lm_student_distill.pbtxt says.\n".format(*base_variant()))
    w("| seed | hard: test ppl | distilled: test ppl | change | hard: valid ppl | distilled: valid ppl | hard: acc | distilled: acc |")
    w("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, (h, d) in enumerate(zip(hard, distilled)):
        change = 100 * (d["test_perplexity"] / h["test_perplexity"] - 1)
        w(f"| {i + 1} | {h['test_perplexity']:.2f} | {d['test_perplexity']:.2f} | {change:+.1f}% "
          f"| {h['validation_perplexity']:.2f} | {d['validation_perplexity']:.2f} "
          f"| {100 * h['test_accuracy']:.2f}% | {100 * d['test_accuracy']:.2f}% |")
    hm, hs = mean_sd([h["test_perplexity"] for h in hard])
    dm, ds = mean_sd([d["test_perplexity"] for d in distilled])
    goal = "met" if dm <= 0.9 * hm else "not met"
    w(f"| mean ± sd | {hm:.2f} ± {hs:.2f} | {dm:.2f} ± {ds:.2f} | {100 * (dm / hm - 1):+.1f}% | | | | |\n")
    w(f"Goal (distilled test perplexity ≥ 10% below hard labels): **{goal}**.\n")
    w("Other temperatures and weights, seed 1:\n")
    w("| T | kd_kl weight | hard_ce weight | test ppl | change vs hard labels |")
    w("|---:|---:|---:|---:|---:|")
    w("| {} | {} | {} | ".format(*base_variant()) + f"{distilled[0]['test_perplexity']:.2f} "
      f"| {100 * (distilled[0]['test_perplexity'] / hard[0]['test_perplexity'] - 1):+.1f}% |")
    for (temperature, kd, ce), v in variants.items():
        w(f"| {temperature} | {kd} | {ce} | {v['test_perplexity']:.2f} "
          f"| {100 * (v['test_perplexity'] / hard[0]['test_perplexity'] - 1):+.1f}% |")
    w("")

    w("### Speed: framework vs the same job in PyTorch\n")
    w(f"Mean tokens/s over steps {skip + 1}..{steps} of one run each "
      "(bench/reference/lm_reference.py: same model, windows, order, batch, threads; "
      "whole-batch logits and cross entropy as nanoGPT writes them). \"tuned malloc\": "
      "the reference run with `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824 "
      "MALLOC_TOP_PAD_=67108864`, the settings `distill` applies to itself "
      "(common/malloc_tuning.h).\n")
    w("| step | framework | PyTorch, glibc malloc | PyTorch, tuned malloc | framework step time / best reference's |")
    w("|---|---:|---:|---:|---:|")
    best = max(speed["ref_hard"], speed["ref_hard_malloc"])
    w(f"| student, hard labels | {speed['fw_hard']:,.0f} | {speed['ref_hard']:,.0f} "
      f"| {speed['ref_hard_malloc']:,.0f} | {best / speed['fw_hard']:.2f}x |")
    w(f"| distilled, teacher plain (`inference_mode`) | {speed['fw_distill']:,.0f} "
      f"| {speed['ref_distill_plain']:,.0f} | | {speed['ref_distill_plain'] / speed['fw_distill']:.2f}x |")
    best = max(speed["ref_distill_opt"], speed["ref_distill_opt_malloc"])
    w(f"| distilled, teacher traced + `jit.freeze` + `optimize_for_inference` | {speed['fw_distill']:,.0f} "
      f"| {speed['ref_distill_opt']:,.0f} | {speed['ref_distill_opt_malloc']:,.0f} "
      f"| {best / speed['fw_distill']:.2f}x |\n")
    w("Goal: framework step time ≤ 0.8x the reference's (last column ≤ 0.80).\n")

    w("### MFU\n")
    w(f"FP32 peak, measured as the best of 5 2048³ matmuls with {a.threads} threads: "
      f"**{pk['onednn']:.0f} GFLOP/s on oneDNN** (`mkldnn_linear`), {pk['blas']:.0f} GFLOP/s "
      "through LibTorch's `matmul` (the system BLAS). FLOPs per token: 6 x matmul parameters "
      "(blocks' linear layers and the head; embedding lookups are free) + 12 x layers x "
      "d_model x S for attention when training, 2 x and 4 x for a forward.\n")
    tok_h = hard[0]["tokens_per_sec"]
    n_tokens = corpus["splits"]["train"]["tokens"]
    step_rate = n_tokens / step_seconds
    teacher_rate = n_tokens / prof_d["teacher"]
    w("| what (seed 1's epoch) | tokens/s | GFLOP/token | GFLOP/s | of oneDNN peak |")
    w("|---|---:|---:|---:|---:|")
    w(f"| student step, whole epoch wall time | {tok_h:,.0f} | {f_train / 1e9:.4f} "
      f"| {tok_h * f_train / 1e9:.0f} | {100 * tok_h * f_train / 1e9 / pk['onednn']:.0f}% |")
    w(f"| student step, forward + backward + optimizer only | {step_rate:,.0f} | {f_train / 1e9:.4f} "
      f"| {step_rate * f_train / 1e9:.0f} | {100 * step_rate * f_train / 1e9 / pk['onednn']:.0f}% |")
    w(f"| teacher forward (in the distillation run) | {teacher_rate:,.0f} | {f_teacher / 1e9:.4f} "
      f"| {teacher_rate * f_teacher / 1e9:.0f} | {100 * teacher_rate * f_teacher / 1e9 / pk['onednn']:.0f}% |\n")
    w("The step profile's `forward` holds the output head's forward and backward too: the "
      "chunked head loss computes its gradients chunk by chunk while the loss is computed.\n")
    w("Seed 1's epoch profile (seconds): hard labels " +
      ", ".join(f"{k} {v:.1f}" for k, v in prof_h.items()) + "; distilled " +
      ", ".join(f"{k} {v:.1f}" for k, v in prof_d.items()) + ".\n")

    w("### Peak memory of the chunked head loss (V = 32,000)\n")
    w("Whole-process peak RSS (`wait4`'s ru_maxrss: libraries, model, optimizer and data "
      "included) of 3 training steps of a 2-layer d128 gpt, batch 16 x 256 = 4,096 tokens, "
      "tokenizer trained with `distill_prepare_text --vocab_size 32000`:\n")
    w("| loss_chunk_tokens | peak RSS | vs one chunk |")
    w("|---:|---:|---:|")
    for chunk in sorted(rss, reverse=True):
        label = f"{chunk:,}" + (" (unchunked)" if chunk >= 4096 else
                                " (the default)" if chunk == 512 else "")
        w(f"| {label} | {rss[chunk] / 1024:,.0f} MiB | {rss[chunk] / rss[4096]:.2f}x |")
    w("")
    body = "\n".join(lines) + "\n"
    print(body)
    if not a.no_docs:
        report.write_docs(os.path.join(REPO, "docs", "BENCHMARKS.md"), "lm", body,
                          tool="lm_bench.sh",
                          title="Language models (`bash bench/lm_bench.sh`)")
        log("wrote docs/BENCHMARKS.md")


if __name__ == "__main__":
    main()
