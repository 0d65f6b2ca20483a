"""The bundled demo: a synthetic language (corpus.py), three small GPT-2 models trained on it
(train.py -> models/), and labelled prompt sets (sets.py -> sets/). See README.md."""

from pathlib import Path

MODELS_DIR = Path(__file__).parent / "models"
BUNDLED_MODELS = {name: MODELS_DIR / name for name in ("demo", "demo-seed1", "demo-untrained")}
