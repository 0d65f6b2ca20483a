"""`lens`: logit lens of one prompt."""

from __future__ import annotations

from backend import extract, models, readouts
from backend.commands._common import add_model_args

HELP = "logit lens for one prompt: top tokens, KL to final, entropy, rank per layer"


def register(p) -> None:
    add_model_args(p, need_set=False)
    p.add_argument("--prompt", required=True)
    p.add_argument("--top", type=int, default=5)


def run(args, store) -> dict:
    lm = models.get_model(args.model, args.dtype, args.device, args.trust_remote_code)
    tk = extract.tokenize(lm.tokenizer, [args.prompt])[0]
    settings = extract.CaptureSettings(dtype=str(lm.dtype).removeprefix("torch."))
    run = next(iter(extract.capture(lm, [("lens", tk)], settings)))[0]
    res = readouts.lens_for_hidden(lm, run.hidden.float().numpy(), args.top)
    vocab = readouts.vocab(lm)
    return {"tokens": run.tokens, "layers": list(res.layers),
            "top_tokens": [[[vocab[i] for i in cell] for cell in row] for row in res.top_ids],
            "top_probs": res.top_probs.round(4).tolist(),
            "kl_to_final": res.kl_to_final.round(4).tolist(),
            "entropy": res.entropy.round(4).tolist(), "final_rank": res.final_rank.tolist(),
            "commitment_depth": res.commitment.tolist()}


def prose(r: dict) -> str:
    lines = ["next-token guess at the last position, per layer:"]
    for li, layer in enumerate(r["layers"]):
        tops = ", ".join(f"{t!r} {p:.2f}" for t, p in zip(r["top_tokens"][li][-1],
                                                         r["top_probs"][li][-1]))
        lines.append(f"layer {layer:>2}: {tops}   KL {r['kl_to_final'][li][-1]:.3f}  "
                     f"rank {r['final_rank'][li][-1]}")
    lines.append(f"commitment depth (last position): layer {r['commitment_depth'][-1]}")
    return "\n".join(lines)
