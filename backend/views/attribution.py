"""The Attribution view: who wrote this answer. The next-token logit difference
logit(answer) - logit(against) (or logit(answer) alone) at one position of one prompt, split
exactly into the embeddings', each block's attention and MLP outputs' and the bias terms'
contributions (the final norm's scale frozen at this run), each attention term split by head,
and the contribution graph of information flow routes (token × layer, Ferrando & Voita 2024).

Runs its own eager-attention instance of the model (the graph needs the attention weights).
Shared by the Attribution page and the `attribution` CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

from backend.analysis.attribution import Graph, flow_graph, step_shares
from backend.errors import LayerScopeError
from backend.store import Store

#: parts of one block's attention step held at once (target chunk × T × d floats)
PART_ELEMENTS = 2**24
LENS_TOP = 3  #: the logit lens's top tokens kept for each node of the pruned graph


@dataclass(frozen=True, kw_only=True)
class Request:
    model: str
    prompt: str
    answer: str | None = None  #: default: the model's top-1 next token at the position
    against: str | None = None  #: default: none, the answer's logit alone
    position: int | None = None  #: default: the last token; negative counts from the end
    threshold: float = 0.04  #: graph edges carrying less of their update are pruned
    dtype: str = "auto"
    device: str = "cpu"

    def __post_init__(self):
        if not self.prompt.strip():
            raise LayerScopeError("Type a prompt.")
        if not 0 <= self.threshold < 1:
            raise LayerScopeError("The graph threshold is a share of an update: 0 to below 1.")
        for name in ("answer", "against"):
            v = getattr(self, name)
            if v is not None and not v.strip():
                object.__setattr__(self, name, None)


@dataclass(frozen=True)
class Result:
    request: Request
    tokens: list[str]
    position: int  #: the position whose next token is read (0-based)
    answer: str
    against: str | None
    logit_diff: float  #: the model's own logit difference (a plain forward pass)
    embed: float
    attn: np.ndarray  #: (n_layers,) layer l = block l's attention output (1..n_layers)
    mlp: np.ndarray  #: (n_layers,)
    bias: dict  #: name -> value (the final norm's bias, the unembedding's bias)
    heads: np.ndarray  #: (n_layers, n_heads)
    head_bias: np.ndarray  #: (n_layers,) the attention output projection's bias
    graph: Graph
    #: (layer, position) -> [(token, p)]: the logit lens's top tokens of the residual stream
    #: at each node of the pruned graph (final norm and unembedding, like the Logit lens view)
    node_lens: dict = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return list(range(1, len(self.attn) + 1))

    @property
    def total(self) -> float:
        """The components' sum: the logit difference again, up to float rounding."""
        return float(self.embed + self.attn.sum() + self.mlp.sum() + sum(self.bias.values()))

    @property
    def components(self) -> list[dict]:
        rows = [{"layer": 0, "kind": "embed", "value": self.embed}]
        for layer, a, m in zip(self.layers, self.attn, self.mlp):
            rows += [{"layer": layer, "kind": "attn", "value": float(a)},
                     {"layer": layer, "kind": "mlp", "value": float(m)}]  # fmt: skip
        rows += [{"layer": None, "kind": "bias", "name": k, "value": float(v)}
                 for k, v in self.bias.items()]  # fmt: skip
        return rows

    @property
    def target_label(self) -> str:
        if self.against is None:
            return f"logit({self.answer!r})"
        return f"logit({self.answer!r}) - logit({self.against!r})"

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.components)

    def graph_dict(self) -> dict:
        g = self.graph
        nodes = [{"layer": la, "position": p, "token": self.tokens[p],
                  "route": (la, p) in g.route}
                 for la in range(g.n_layers + 1) for p in range(g.n_positions)]  # fmt: skip
        edges = [{"source": list(e.source), "target": list(e.target),
                  "weight": round(e.weight, 6), "kind": e.kind, "route": e.route}
                 for e in g.edges]  # fmt: skip
        lens = [{"layer": la, "position": p, "tokens": [t for t, _ in top],
                 "probs": [round(float(q), 6) for _, q in top]}
                for (la, p), top in sorted(self.node_lens.items())]  # fmt: skip
        return {"threshold": g.threshold, "answer_node": [g.n_layers, g.position],
                "nodes": nodes, "edges": edges, "lens": lens}  # fmt: skip

    def to_dict(self) -> dict:
        r6 = lambda x: round(float(x), 6)  # noqa: E731
        target = {"answer": self.answer, "against": self.against, "logit_diff": r6(self.logit_diff)}
        heads = [
            {"layer": layer, "head": h, "value": r6(v)}
            for layer, row in zip(self.layers, self.heads)
            for h, v in enumerate(row)
        ]
        head_bias = [{"layer": la, "value": r6(v)} for la, v in zip(self.layers, self.head_bias)]
        return {
            "tokens": list(self.tokens),
            "position": self.position,
            "target": target,
            "sum": r6(self.total),
            "sum_error": float(abs(self.total - self.logit_diff)),
            "components": [{**c, "value": r6(c["value"])} for c in self.components],
            "heads": heads,
            "head_bias": head_bias,
            "graph": self.graph_dict(),
        }


@lru_cache(maxsize=2)
def _eager(ref: str, model_id: str, dtype: str, device: str):
    """An instance of its own with eager attention (the graph needs the weights)."""
    from backend import models

    lm = models.load_model(ref, dtype, device)
    lm.model.set_attn_implementation("eager")
    return lm


def _model(req: Request, lm):
    from backend import models

    if lm is None or lm.model.config._attn_implementation != "eager":
        lm = _eager(req.model, models.resolve(req.model).model_id, req.dtype, req.device)
    if lm.unembed is None or lm.final_norm is None:
        raise LayerScopeError(
            f"Attribution reads the next-token logits through the final norm; {req.model} has "
            "no language-model head or no final norm."
        )
    return lm


def _position(req: Request, n: int) -> int:
    p = n - 1 if req.position is None else req.position
    p = n + p if p < 0 else p
    if not 0 <= p < n:
        raise LayerScopeError(
            f"Position {req.position} does not exist: the prompt has {n} tokens (0..{n - 1})."
        )
    return p


def contribution_graph(lm, tr, position: int, threshold: float) -> Graph:
    """Every block's attention step split by source position, as graph shares."""
    import torch

    from backend.capture.attribution import source_parts

    T, d = tr.embed.shape
    L = len(tr.attn)
    resid, attn = np.zeros((L, T)), np.zeros((L, T, T))
    step = max(1, PART_ELEMENTS // (T * d))
    with torch.inference_mode():
        for la in range(L):
            for s in range(0, T, step):
                rows = list(range(s, min(T, s + step)))
                parts = source_parts(lm, tr, la, rows).numpy()
                sh = step_shares(tr.inputs[la][rows].numpy(), parts, tr.attn[la][rows].numpy())
                resid[la, rows], attn[la, rows] = sh.resid, sh.attn
    return flow_graph(resid, attn, position, threshold)


def graph_nodes(g: Graph) -> list[tuple[int, int]]:
    """The nodes of the pruned graph: every edge's ends, and the answer's node."""
    ends = {n for e in g.edges for n in (e.source, e.target)} | {(g.n_layers, g.position)}
    return sorted((int(la), int(p)) for la, p in ends)


def node_lens(lm, tr, nodes, k: int = LENS_TOP) -> dict:
    """(layer, position) -> [(token, p)]: the logit lens (``views.lens.lens_for_hidden``) of
    the residual stream at each node: layer 0 the embeddings, layer l block l's output."""
    import torch

    from backend.views.lens import decode, lens_for_hidden

    if not nodes:
        return {}
    hidden = torch.stack([*tr.inputs, tr.final]).numpy()  # (n_layers + 1, T, d)
    lens = lens_for_hidden(lm, hidden, k)
    names = decode(lm, lens.top_ids[tuple(np.array(nodes).T)])
    return {(la, p): [(names[int(i)], float(q))
                      for i, q in zip(lens.top_ids[la, p], lens.top_probs[la, p])]
            for la, p in nodes}  # fmt: skip


def compute(store: Store | None, req: Request, lm=None) -> Result:
    from backend.capture import attribution as A
    from backend.capture import extract
    from backend.models import max_positions
    from backend.views.lens import decode
    from backend.views.patching import token_id

    lm = _model(req, lm)
    tk = extract.tokenize(lm.tokenizer, [req.prompt], max_positions(lm.model.config.to_dict()))[0]
    ids = list(tk.ids)
    pos = _position(req, len(ids))
    answer = token_id(lm.tokenizer, req.answer) if req.answer else None
    against = token_id(lm.tokenizer, req.against) if req.against else None
    tr = A.trace(lm, ids)
    if answer is None:
        answer = int(tr.logits[pos].argmax())
    if answer == against:
        raise LayerScopeError("The answer and the against token are the same; name two tokens.")
    att = A.attribute(lm, tr, pos, answer, against)
    names = decode(lm, [answer] + ([against] if against is not None else []))
    graph = contribution_graph(lm, tr, pos, req.threshold)
    return Result(
        request=req,
        tokens=extract.decode_tokens(lm.tokenizer, ids),
        position=pos,
        answer=names[answer],
        against=names[against] if against is not None else None,
        logit_diff=att.logit_diff,
        embed=att.embed,
        attn=att.attn,
        mlp=att.mlp,
        bias=att.bias,
        heads=att.heads,
        head_bias=att.head_bias,
        graph=graph,
        node_lens=node_lens(lm, tr, graph_nodes(graph)),
    )


def minimal_pair(prompt: str) -> str | None:
    """The other half of a bundled set's minimal pair that contains ``prompt``, or None."""
    from backend.demo.sets import DEMO_SETS, load_pairs

    for name in DEMO_SETS:
        for clean, corrupted in load_pairs(name):
            if prompt.strip() == clean.strip():
                return corrupted
            if prompt.strip() == corrupted.strip():
                return clean
    return None


def patch_links(res: Result, n: int = 3) -> list[dict]:
    """Query parameters of the Patching page that patch the source node of each of the ``n``
    strongest cross-position edges (the answer's route first) exactly: the residual stream at
    (layer, position) of the edge's source, this prompt as the clean one, its bundled minimal
    pair (if any) as the corrupted one, the same answer and against tokens. [] when the
    position read is not the last (Patching reads the last position's next token)."""
    if res.position != len(res.tokens) - 1:
        return []
    edges = [e for e in res.graph.edges if e.source[1] != e.target[1]] or list(res.graph.edges)
    edges = sorted(edges, key=lambda e: (not e.route, -e.weight))[:n]
    base = {"clean": res.request.prompt, "answer": res.answer.strip(), "component": "resid",
            "method": "exact", "model": res.request.model}  # fmt: skip
    pair = minimal_pair(res.request.prompt)
    if pair is not None:
        base["corrupted"] = pair
    if res.against is not None:
        base["against"] = res.against.strip()
    out = []
    for e in edges:
        (sl, sp), (tl, tp) = e.source, e.target
        out.append({
            "label": f"layer {sl} {res.tokens[sp]!r} → layer {tl} {res.tokens[tp]!r} "
                     f"(share {e.weight:.2f})",
            "query_params": {**base, "cell": f"{sl},{sp}"},
        })  # fmt: skip
    return out
