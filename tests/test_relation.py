"""The relation module: the formula of method.md section 2, parameter count, save/load of a frozen one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infosam.distill.relation import RelationModule
from numpy_reference import relation_rows


def reference_relation(
    module: RelationModule, image_embeddings: np.ndarray, mask_tokens: np.ndarray
) -> np.ndarray:
    """NumPy float64 relation rows of ``module``'s parameters."""
    params = {k: v.detach().double().numpy() for k, v in module.state_dict().items()}
    return relation_rows(params, image_embeddings, mask_tokens)


def _randomised(dim: int, seed: int = 0) -> RelationModule:
    torch.manual_seed(seed)
    module = RelationModule(dim)
    with torch.no_grad():
        for p in module.parameters():  # non-trivial LayerNorm affine parameters too
            p.add_(0.1 * torch.randn_like(p))
    return module


def test_parameter_count():
    # Two Linear(C, C) with bias (131,584 for C = 256) plus two LayerNorms with weight and bias (4C = 1,024).
    assert (
        sum(p.numel() for p in RelationModule(256).parameters()) == 2 * (256 * 256 + 256) + 4 * 256 == 132_608
    )
    assert sum(p.numel() for p in RelationModule(32).parameters()) == 2 * (32 * 32 + 32) + 4 * 32


def test_forward_matches_numpy_formula_and_rows_are_unit():
    module = _randomised(16)
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(3, 16, 4, 5, generator=g)
    tok = torch.randn(3, 1, 16, generator=g)
    r = module(emb, tok)
    assert r.shape == (3, 20)
    assert torch.allclose(r.norm(dim=1), torch.ones(3), atol=1e-6)
    expected = reference_relation(module, emb.double().numpy(), tok.double().numpy())
    np.testing.assert_allclose(r.detach().double().numpy(), expected, atol=1e-5)
    assert torch.allclose(module(emb, tok[:, 0]), r)  # (B, C) tokens accepted


def test_no_softmax_rows_can_be_negative():
    module = _randomised(8)
    r = module(torch.randn(2, 8, 3, 3), torch.randn(2, 1, 8))
    assert (r < 0).any()


def test_shape_errors_name_the_expected_shape():
    module = RelationModule(8)
    with pytest.raises(ValueError, match=r"\(B, 8, h, w\)"):
        module(torch.randn(2, 4, 3, 3), torch.randn(2, 1, 8))
    with pytest.raises(ValueError, match=r"mask_tokens must be \(2, 1, 8\)"):
        module(torch.randn(2, 8, 3, 3), torch.randn(3, 1, 8))


def test_save_load_frozen_roundtrip(tmp_path):
    module = _randomised(8, seed=3)
    path = tmp_path / "relation.safetensors"
    module.save(path)
    loaded = RelationModule.load(path)
    assert loaded.dim == 8 and not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    emb, tok = torch.randn(2, 8, 3, 3), torch.randn(2, 1, 8)
    assert torch.equal(loaded(emb, tok), module(emb, tok))
    trainable = RelationModule.load(path, frozen=False, dim=8)
    assert all(p.requires_grad for p in trainable.parameters())


def test_load_errors_name_the_file(tmp_path):
    path = tmp_path / "relation.safetensors"
    RelationModule(8).save(path)
    with pytest.raises(ValueError, match=r"relation\.safetensors.*dim=8.*dim=16"):
        RelationModule.load(path, dim=16)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        RelationModule.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="junk.safetensors"):
        RelationModule.load(junk)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(other))
    with pytest.raises(ValueError, match="other.safetensors is not a RelationModule file"):
        RelationModule.load(other)
    partial = tmp_path / "partial.safetensors"
    save_file({"query.weight": torch.zeros(4, 4)}, str(partial))
    with pytest.raises(ValueError, match="partial.safetensors does not match"):
        RelationModule.load(partial)
