"""The extract job's pipelined ingest holds a bounded number of batches (issue 16: peak memory
must not grow with the set), whatever the relative speed of the model and the writer."""

import threading

from backend.jobs import extract as jx


class SlowStore:
    """A store whose writer blocks on the first batch until released."""

    def __init__(self):
        self.release = threading.Event()
        self.writing = threading.Event()
        self.written = []
        self.checkpoints = 0

    def cursor(self):
        return self

    def ingest(self, model_id, batch):
        self.writing.set()
        self.release.wait(10)
        self.written.append(batch)

    def checkpoint(self):
        self.checkpoints += 1


def test_the_producer_stops_three_batches_ahead_of_a_stalled_writer():
    store, produced, alive = SlowStore(), [], []

    def batches():
        for k in range(50):
            produced.append(k)
            yield [k]

    t = threading.Thread(target=jx.pipelined_ingest, args=(store, "m", batches(), alive.append))
    t.start()
    assert store.writing.wait(10)
    # the writer holds batch 0; batch 1 waits in the queue; batch 2 is the producer's, blocked
    # in put(); the generator is not asked for batch 3. Poll until the producer blocks.
    for _ in range(200):
        if len(produced) >= 3 + jx.QUEUE_BATCHES - 1:
            break
        threading.Event().wait(0.01)
    threading.Event().wait(0.2)  # a producer that did not block would have run far ahead
    assert len(produced) == 2 + jx.QUEUE_BATCHES <= 3, produced
    store.release.set()
    t.join(10)
    assert [b[0] for b in store.written] == list(range(50)) and len(alive) == 50
    assert store.checkpoints == 1


def test_capture_does_not_keep_a_batch_it_yielded():
    """The generator releases its reference (and the float32 layer states) once the writer owns
    the batch: only the consumer keeps a yielded batch alive."""
    import gc
    import weakref

    import numpy as np

    from backend.capture import extract as cx

    class Tok:
        pad_token_id = 0

        def batch_decode(self, ids, skip_special_tokens=False):
            return ["t" for _ in ids]

    class Block:
        def __init__(self):
            self.pre, self.post = [], []

        def register_forward_pre_hook(self, f, with_kwargs=False):
            self.pre.append(f)
            return Handle(self.pre, f)

        def register_forward_hook(self, f):
            self.post.append(f)
            return Handle(self.post, f)

    class Handle:
        def __init__(self, lst, f):
            self.lst, self.f = lst, f

        def remove(self):
            self.lst.remove(self.f)

    import torch

    blocks = [Block(), Block()]
    refs, alive_in_forward = [], []

    def base(input_ids, attention_mask, use_cache):
        gc.collect()
        alive_in_forward.append([r() is not None for r in refs])
        h = torch.ones(*input_ids.shape, 4)
        for f in blocks[0].pre:
            f(None, (h,), {})
        for b in blocks:
            for f in b.post:
                f(None, None, (h,))

    class LM:
        tokenizer, device = Tok(), "cpu"
        info = type("Info", (), {"n_layers": 2, "d_model": 4})()

    lm = LM()
    lm.blocks, lm.base = blocks, base
    items = [
        (
            f"r{i}",
            cx.Tokenized(
                f"p{i}", [1] * (4 + i), [(0, 1)] * (4 + i), [False] * (4 + i), False, 4 + i
            ),
        )
        for i in range(6)
    ]
    n = 0
    for batch in cx.capture(lm, items, cx.CaptureSettings(), batch_tokens=16):
        assert all(isinstance(r.hidden, np.ndarray) and r.hidden.shape[0] == 3 for r in batch)
        refs.append(weakref.ref(batch[0].hidden))
        n += 1
        del batch  # the writer is done with it before the next forward
    assert n >= 3 and len(alive_in_forward) == n
    assert not any(any(a) for a in alive_in_forward), "capture() kept a batch it had yielded"
