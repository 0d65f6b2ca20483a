"""Guided stories on the bundled models: narration + what to compute + which view to open.

Pure data (no streamlit): pages/tour.py draws them, tests check each one reaches its view.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: the demo's training checkpoints (backend/demo/train.py CHECKPOINT_STEPS; a test checks both
#: agree): written out so that importing the Tour never imports the training script
CHECKPOINT_STEPS = (0, 200, 500, 600, 700, 750, 800, 1500, 3000)

#: the Lens story's prompt, "the friends near the robots often", on the demo model (fp32 runs)
LENS_RUN = "bbdfeed9cb33af881c7e460f"


@dataclass(frozen=True)
class Story:
    key: str
    title: str
    narration: str  #: three or four sentences a teacher can read aloud
    notice: str  #: the one thing to notice
    page: str  #: pages/<page>.py
    params: dict = field(default_factory=dict)  #: query params that configure the view
    needs: tuple[tuple[str, str], ...] = ()  #: (model, prompt set) pairs that must be cached


STORIES: tuple[Story, ...] = (
    Story(
        key="number",
        title="Watch subject number emerge, layer by layer",
        narration=(
            "Each dot is one prompt like 'the dog near the cats', read by the demo model. "
            "At layer 0 a prompt's last-token vector only knows its own word, so singular and "
            "plural subjects are mixed. Move the layer slider (or press play): as the layers "
            "go by, the model carries the subject's number forward to where the verb will go."
        ),
        notice="The two colours (singular, plural) separate in later layers — and the "
        "silhouette line under the plot rises with depth.",
        page="trajectories",
        params={
            "model": "demo",
            "set": "agreement",
            "method": "pca",
            "unit": "prompt",
            "color": "label",
        },
        needs=(("demo", "agreement"),),
    ),
    Story(
        key="probe",
        title="At which layer does the model know the subject's number?",
        narration=(
            "A linear probe is a tiny classifier trained on one layer's vectors. If it predicts "
            "the label well on prompts it never saw, the information is linearly readable "
            "there. A probe can also find patterns in noise, so the chart shows two controls: "
            "the same probe on shuffled labels, and on the untrained twin of the model."
        ),
        notice="The trained model reaches 1.00 from layer 2 on; the shuffled-label control stays "
        "at chance (0.5) and the untrained twin well below (about 0.65): the words "
        "alone do not give the number away.",
        page="probes",
        params={"model": "demo", "set": "agreement", "label": "label", "unit": "prompt"},
        needs=(("demo", "agreement"), ("demo-untrained", "agreement")),
    ),
    Story(
        key="twins",
        title="Do two networks learn the same thing?",
        narration=(
            "The same architecture was trained twice from different random seeds. Their "
            "neurons are not comparable one by one, but CKA compares whole representations "
            "and ignores rotations. The heatmap compares every layer of one model with every "
            "layer of the other on the same prompts."
        ),
        notice="Layer k of one seed stays close to layer k of the other at every depth "
        "(CKA about 0.7 to 0.9 on the diagonal), while the untrained model falls to about 0.4 "
        "after the embedding. Neighbouring layers are alike too (the residual stream changes "
        "gradually), so the diagonal is a bright ridge rather than a thin line.",
        page="similarity",
        params={"model": "demo", "set": "topic", "kind": "model-cka", "other": "demo-seed1"},
        needs=(("demo", "topic"), ("demo-seed1", "topic"), ("demo-untrained", "topic")),
    ),
    Story(
        key="lens",
        title="When does the model commit to an answer?",
        narration=(
            "The logit lens asks every layer 'what would you say if you had to answer now?' "
            "by applying the model's final norm and unembedding to that layer's hidden state. "
            "Early layers guess badly; at some depth the final answer takes over."
        ),
        notice="The last column: after 'the friends near the robots often' the model "
        "predicts the plural verb 'fall', and it is on top from layer 2 of 4 on (the red bar, "
        "the commitment depth) — though the distractor 'robots' is closer to the verb.",
        page="lens",
        params={"model": "demo", "set": "agreement", "run": LENS_RUN},
        needs=(("demo", "agreement"),),
    ),
    Story(
        key="cause",
        title="Cause, not just correlation",
        narration=(
            "A probe says where the subject's number can be read; patching says where the model "
            "uses it. Take two prompts that differ only in number ('the cat near the dogs "
            "often' / 'the cats near the dog often'), run the plural one, and copy a single "
            "vector from the singular run into it: if the singular verb comes back, that vector "
            "carried the number. The heatmap is the mean over the agreement set's pairs of the "
            "same shape."
        ),
        notice="Averaged over 25 pairs, copying the subject's vector ('cat', position 2) alone "
        "brings the answer back at layers 0 and 1 (recovery 1.00 and 0.99) but hardly at layer "
        "2 (0.05), where the last position takes over (0.96; 1.00 from layer 3 on). Switch "
        "Patch to 'attention out': block 2's attention output at the last position recovers "
        "0.95 by itself — the number is moved by attention, while no MLP output recovers "
        "more than 0.15.",
        page="patching",
        params={
            "model": "demo",
            "clean": "the cat near the dogs often",
            "corrupted": "the cats near the dog often",
            "pairs": "agreement",
        },
    ),
    Story(
        key="who",
        title="Who wrote this answer?",
        narration=(
            "After 'the teacher above the boys always' the demo model prefers 'helps' to "
            "'help' by 3.33 logits. With the final norm's scale frozen, that number splits "
            "exactly into what the embeddings, each layer's attention and MLP, and each head "
            "wrote into the last position's stream: the bars add up to the model's own value. "
            "The graph below traces where the information came from, token by token."
        ),
        notice="Layer 2's heads 0 and 1 put all of their attention from 'always' on the "
        "subject 'teacher', and they are the two largest heads (+0.34 and +0.27); the red route "
        "runs from 'teacher' to 'always' through layer 2's attention. Yet the largest single "
        "term is the last MLP (+1.05): it writes the verb form once the number has arrived.",
        page="attribution",
        params={
            "model": "demo",
            "prompt": "the teacher above the boys always",
            "answer": "helps",
            "against": "help",
        },
    ),
    Story(
        key="errors",
        title="Which prompts does the model get wrong, and why?",
        narration=(
            "Error analysis starts with the examples behind the numbers. Here a probe reads "
            "the verdict of short reviews ('the film was not dull . verdict :'). 'not' flips "
            "an adjective and after 'but' the second clause decides, so the words alone do not "
            "give the answer. The page lists the reviews the best layer's probe gets wrong; "
            "each opens on the Prompt page with its tokens and every layer's norms."
        ),
        notice="Accuracy by group under the chart: plain reviews 0.95 and negated 0.94, "
        "'contrast' reviews ('… but …') 0.54 — near chance. 46 of the 57 misclassified are "
        "contrasts: negation is learnt, letting the second clause override the first is not "
        "(yet).",
        page="probes",
        params={"model": "demo", "set": "sentiment", "label": "label", "unit": "prompt"},
        needs=(("demo", "sentiment"),),
    ),
    Story(
        key="training",
        title="Watch grammar emerge during training",
        narration=(
            "The demo model was saved at nine points of its training, from its random start "
            "(step 0) to the end (step 3000). The same probe for the subject's number runs on "
            "every checkpoint, next to the model's behaviour: how often it gives the verb form "
            "that agrees with the subject. Does the model represent the number before it uses "
            "it?"
        ),
        notice="The number becomes decodable at step 600 and the probe passes 0.9 at step 700, "
        "when the model still picks the agreeing verb only 53% of the time; its behaviour "
        "jumps to 80% at step 750 and 100% at step 800 — the representation comes first. "
        "Meanwhile the last layer's largest activation grows from 0.2 to over 200 and its "
        "effective rank falls from about 60 to about 12.",
        page="training",
        params={"model": "demo", "set": "agreement"},
        needs=tuple((f"demo@step{n}", "agreement") for n in CHECKPOINT_STEPS),
    ),
    Story(
        key="features",
        title="Features the model learned",
        narration=(
            "A sparse autoencoder rewrites each token's hidden state at layer 2 as a sum of 8 "
            "directions out of 256 — the features — learnt from the cached states alone, "
            "without any label. Click Train (a few seconds). Then the latents are sorted by how "
            "well their activation on a prompt's last token separates singular from plural "
            "subjects; the first one is shown with the contexts where it fires most."
        ),
        notice="The first latent separates the subject's number at AUROC 1.00 although no "
        "label was used in training; its top contexts end on nouns of either number ('the young "
        "girl with the teachers'): it follows the subject, not the nearest noun. Its logit "
        "effects raise the singular verbs ('sings', 'falls', …).",
        page="features",
        params={
            "model": "demo",
            "set": "agreement",
            "layer": "2",
            "latents": "256",
            "k": "8",
            "sort": "auroc",
        },
        needs=(("demo", "agreement"),),
    ),
)


def story(key: str) -> Story:
    for s in STORIES:
        if s.key == key:
            return s
    raise KeyError(key)
