"""Direct tests of the training layer's small pieces: the per-sample batch randomness, the non-finite policy and
the decoupled cross-attention the face path installs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dancelcm.lit.common import BatchRandom, NonFinite


def test_batch_randomness_depends_on_seed_batch_and_global_position_only():
    a = BatchRandom(seed=3, batch_number=7, batch_size=4)
    b = BatchRandom(seed=3, batch_number=7, batch_size=4)
    torch.testing.assert_close(a.randn((4, 2, 3)), b.randn((4, 2, 3)), rtol=0, atol=0)  # a resumed run draws the same
    assert not torch.equal(BatchRandom(3, 8, 4).rand(), BatchRandom(3, 7, 4).rand())
    assert not torch.equal(BatchRandom(4, 7, 4).rand(), BatchRandom(3, 7, 4).rand())
    # two DDP ranks (interleaved positions) draw what one process with the global batch draws
    whole = BatchRandom(3, 7, 4).randint(1000)
    rank0, rank1 = BatchRandom(3, 7, 2, rank=0, world_size=2), BatchRandom(3, 7, 2, rank=1, world_size=2)
    torch.testing.assert_close(torch.stack([rank0.randint(1000), rank1.randint(1000)], 1).flatten(), whole)
    assert a.rand().shape == (4,) and a.randn((4, 5)).shape == (4, 5)


class _Module(SimpleNamespace):
    def __init__(self):
        super().__init__(global_step=12, logged={})

    def log(self, name, value):
        self.logged[name] = value


def test_nonfinite_raise_stops_with_a_diagnostic_and_skip_counts_then_stops():
    m = _Module()
    assert NonFinite("raise").check(m, torch.tensor(1.0), "loss")
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 12.*method.nonfinite=skip"):
        NonFinite("raise").check(m, torch.tensor(float("nan")), "loss", lambda: " (videos ['v1'])")
    skip = NonFinite("skip", max_consecutive=2)
    assert not skip.check(m, torch.tensor(float("inf")), "loss") and m.logged["train/nonfinite_skipped"] == 1.0
    assert skip.check(m, torch.tensor(0.5), "loss") and skip.consecutive == 0  # a good batch resets the run of bad
    assert not skip.check(m, torch.tensor(float("nan")), "loss")
    assert not skip.check(m, torch.tensor(float("nan")), "loss")
    with pytest.raises(FloatingPointError, match="3 batches in a row"):
        skip.check(m, torch.tensor(float("nan")), "loss")
    with pytest.raises(ValueError, match="method.nonfinite='ignore'"):
        NonFinite("ignore")


def test_nonfinite_gradients_are_dropped_so_the_step_changes_nothing():
    lin = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(lin.parameters(), lr=0.1)
    before = [p.detach().clone() for p in lin.parameters()]
    lin(torch.tensor([[float("nan"), 1.0]])).sum().backward()
    assert NonFinite("skip").check_gradients(_Module(), lin.parameters(), opt) is None
    assert all(p.grad is None for p in lin.parameters())
    opt.step()
    for p, q in zip(lin.parameters(), before):
        assert torch.equal(p, q)
    lin(torch.ones(1, 2)).sum().backward()
    norm = NonFinite("skip").check_gradients(_Module(), lin.parameters(), opt)
    assert norm is not None and torch.isfinite(norm) and norm > 0


def test_decoupled_cross_attention_starts_at_zero_reads_only_the_last_tokens_and_learns():
    from diffusers import UNet3DConditionModel

    from dancelcm.models.face import install_decoupled_cross_attention

    torch.manual_seed(0)
    from tests.models.test_animator import TINY_BACKBONE

    kw = dict(**TINY_BACKBONE, in_channels=4, out_channels=4, cross_attention_dim=16)
    plain = UNet3DConditionModel(**kw).eval()
    face = UNet3DConditionModel(**kw).eval()
    face.load_state_dict(plain.state_dict())
    n = install_decoupled_cross_attention(face, cross_attention_dim=16, num_tokens=3)
    decoupled = [k for k, p in face.attn_processors.items() if type(p).__name__.startswith("IPAdapter")]
    assert n == len(decoupled) > 0 and all(".temp_attentions." not in k for k in decoupled)  # spatial cross-attn only
    x, t = torch.randn(1, 4, 2, 8, 8), torch.tensor([10])
    ctx, face_tokens = torch.randn(1, 5, 16), torch.randn(1, 3, 16)
    with torch.no_grad():
        out_plain = plain(x, t, encoder_hidden_states=ctx).sample
        out_face = face(x, t, encoder_hidden_states=torch.cat([ctx, face_tokens], 1)).sample
    torch.testing.assert_close(out_face, out_plain, rtol=1e-5, atol=1e-5)  # zero-initialised value path
    face.train()
    face(x, t, encoder_hidden_states=torch.cat([ctx, face_tokens], 1)).sample.square().mean().backward()
    grads = [p.grad for name, p in face.named_parameters() if "to_v_ip" in name]
    assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)  # the face path learns
