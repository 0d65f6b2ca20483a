"""Model + prompts -> per-layer states (batched prompts, sampled generation).

Pure steps: no SQL, no jobs. ``records`` (what a capture produces) is torch-free so the store
can take it without importing torch.
"""
