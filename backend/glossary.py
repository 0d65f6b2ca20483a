"""One short gloss per term a view shows (pages put them in tooltips: ``_ui.gloss``)."""

GLOSSARY = {
    "logit difference": "logit(answer) − logit(against) at the last position: above 0 the "
    "model prefers the answer token, below 0 the against token; a logit is the model's score "
    "for a next token before softmax.",
    "recovery": "(patched − corrupted) / (clean − corrupted) of the metric: 0 = patching that "
    "one vector brought nothing of the clean answer back, 1 = all of it (it can overshoot).",
    "tie": "'= tie' after a token: another token is within 0.1% of its probability at that "
    "layer, so the top guess there is a near tie (small differences, not a clear choice).",
    "margin": "The probe's out-of-fold score of the true class minus the best other class's "
    "(scores sum to 1): above 0 it is right at that layer, below 0 wrong, near 0 a coin toss. "
    "Out of fold: scored by a probe that never saw that prompt.",
    "commitment depth": "The first layer from which the model's final answer stays the top "
    "guess of the lens up to the last layer.",
    "flip rate": "The share of prompts whose first generated token changes from the unsteered "
    "model's. Any large enough push changes tokens: compare with the random control.",
    "random control": "A random direction of the same length: what steering does without a "
    "meaning. It can flip many first tokens (to anything) while making none of them the other "
    "label's answer: only the direction's excess over the control is specific.",
}
