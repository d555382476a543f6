"""Reference values for losses/builtin_losses_test.cc, from torch.nn.functional.

Usage: torch_reference.py OUT.json

Writes the inputs (student and teacher logits [4, 10], labels, T = 3) and, for
each built-in loss, its value and its gradient w.r.t. the student logits, all
in float64. Each reference is written independently of the C++ code, with the
library's own functions where one exists.
"""
import json
import sys

import torch
import torch.nn.functional as F

TEMPERATURE = 3.0
LABEL_SMOOTHING = 0.1
PROB_FLOOR = 1e-12  # the floor the C++ losses put under p inside a log


def main():
    torch.manual_seed(20240611)
    student = torch.randn(4, 10, dtype=torch.float64) * 2.0
    teacher = torch.randn(4, 10, dtype=torch.float64) * 2.0
    labels = torch.randint(0, 10, (4,))
    t = TEMPERATURE
    p = F.softmax(teacher / t, dim=-1)
    teacher_logits = t * torch.log(p.clamp_min(PROB_FLOOR))

    def js(x):
        q = F.softmax(x / t, dim=-1)
        log_m = torch.log(0.5 * (p + q))
        return (0.5 * F.kl_div(log_m, p, reduction="batchmean") +
                0.5 * F.kl_div(log_m, q, reduction="batchmean")) * t * t

    losses = {
        "kd_kl": lambda x: F.kl_div(F.log_softmax(x / t, dim=-1), p,
                                    reduction="batchmean") * t * t,
        "soft_ce": lambda x: F.cross_entropy(x / t, p) * t * t,
        # KL(q || p): kl_div(input=log p, target=q) = sum q (log q - log p).
        "reverse_kl": lambda x: F.kl_div(
            torch.log(p.clamp_min(PROB_FLOOR)), F.log_softmax(x / t, dim=-1),
            reduction="batchmean", log_target=True) * t * t,
        "js": js,
        "hard_ce": lambda x: F.cross_entropy(x, labels,
                                             label_smoothing=LABEL_SMOOTHING),
        "mse_logits": lambda x: F.mse_loss(
            x - x.mean(dim=-1, keepdim=True),
            teacher_logits - teacher_logits.mean(dim=-1, keepdim=True)),
    }

    results = {}
    for name, fn in losses.items():
        x = student.clone().requires_grad_(True)
        value = fn(x)
        value.backward()
        results[name] = {"value": value.item(), "grad": x.grad.tolist()}

    out = {
        "temperature": TEMPERATURE,
        "label_smoothing": LABEL_SMOOTHING,
        "student": student.tolist(),
        "teacher": teacher.tolist(),
        "labels": labels.tolist(),
        "losses": results,
    }
    with open(sys.argv[1], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
