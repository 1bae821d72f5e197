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


def _release_state(dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A synthetic relation state dict in the InfoSAM release's layout (its names, its shapes)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name in ("query_proj", "key_proj"):
        state[f"{name}.weight"] = torch.randn(dim, dim, generator=g) / dim**0.5
        state[f"{name}.bias"] = 0.1 * torch.randn(dim, generator=g)
    for name in ("layer_norm_feat", "layer_norm_mask"):
        state[f"{name}.weight"] = 1 + 0.2 * torch.randn(dim, generator=g)
        state[f"{name}.bias"] = 0.2 * torch.randn(dim, generator=g)
    return state


def _release_semantics(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """What each release tensor does, in the reference's terms: layer_norm_feat normalises the image embeddings,
    layer_norm_mask the mask token; query_proj projects the token, key_proj the image positions."""
    to_ours = {"layer_norm_feat": "norm_image", "layer_norm_mask": "norm_token", "query_proj": "query"}
    to_ours["key_proj"] = "key"
    return {f"{to_ours[k.split('.')[0]]}.{k.split('.')[1]}": v.double().numpy() for k, v in state.items()}


def test_release_weights_load_by_name_for_the_frozen_relation(tmp_path):
    from infosam.distill.relation import remap_release_state

    state = _release_state(16)
    remapped = remap_release_state(state)
    assert sorted(remapped) == sorted(RelationModule(16).state_dict())
    # The release writes {"relation_model": state, "relation_optimizer": ..., ...} with torch.save.
    path = tmp_path / "10.pth"
    torch.save(
        {
            "relation_model": state,
            "relation_optimizer": {"state": {}, "param_groups": []},
            "relation_epoch": 9,
        },
        path,
    )
    module = RelationModule.load(path)  # what infosam.frozen_relation=<path> does
    assert module.dim == 16 and not module.training and not any(p.requires_grad for p in module.parameters())
    g = torch.Generator().manual_seed(1)
    emb, tok = torch.randn(2, 16, 3, 4, generator=g), torch.randn(2, 1, 16, generator=g)
    expected = relation_rows(_release_semantics(state), emb.double().numpy(), tok.double().numpy())
    np.testing.assert_allclose(module(emb, tok).double().numpy(), expected, atol=1e-5)
    bare = tmp_path / "bare.pth"
    torch.save(state, bare)  # a bare state dict in the release's names works too
    assert torch.equal(RelationModule.load(bare)(emb, tok), module(emb, tok))


def test_release_weights_wrong_shape_or_keys_are_refused_by_name(tmp_path):
    from infosam.distill.relation import remap_release_state

    state = _release_state(16)
    bad = {**state, "layer_norm_mask.bias": torch.zeros(8)}
    with pytest.raises(ValueError, match=r"layer_norm_mask\.bias has shape \(8,\), expected \(16,\)"):
        remap_release_state(bad)
    with pytest.raises(ValueError, match=r"key_proj\.weight has shape \(16, 8\), expected \(16, 16\)"):
        remap_release_state({**state, "key_proj.weight": torch.zeros(16, 8)})
    with pytest.raises(ValueError, match=r"missing keys \['key_proj\.bias'\].*unexpected keys \['scale'\]"):
        remap_release_state(
            {**{k: v for k, v in state.items() if k != "key_proj.bias"}, "scale": torch.ones(1)}
        )
    path = tmp_path / "bad.pth"
    torch.save({"relation_model": bad}, path)
    with pytest.raises(ValueError, match=r"bad\.pth: layer_norm_mask\.bias has shape"):
        RelationModule.load(path)
    torch.save({"relation_model": state}, path)
    with pytest.raises(ValueError, match=r"dim=16, but dim=8"):
        RelationModule.load(path, dim=8)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"bad\.pth is truncated or corrupt"):
        RelationModule.load(path)


def test_weights_files_are_read_by_content_not_name(tmp_path):
    """Issue 22, item 1: torch.load hands any *.safetensors path to safetensors; the frozen relation module is
    read by what the file holds, and a file that is neither format is one line naming it and what it holds."""
    module = RelationModule(8)
    torch_named_safetensors = tmp_path / "relation.safetensors"
    torch.save(module.state_dict(), torch_named_safetensors)
    loaded = RelationModule.load(torch_named_safetensors)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in module.state_dict().items())
    safetensors_named_pth = tmp_path / "relation.pth"
    module.save(safetensors_named_pth)
    assert RelationModule.load(safetensors_named_pth).dim == 8
    png = tmp_path / "picture.safetensors"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(ValueError) as err:
        RelationModule.load(png)
    assert str(err.value).count("\n") == 0 and str(png) in str(err.value) and "a PNG image" in str(err.value)


def test_frozen_relation_of_the_wrong_format_is_one_line(tmp_path, capsys):
    from infosam.cli import main
    from infosam.data.synthetic import write_synthetic_dataset

    data = tmp_path / "data"
    write_synthetic_dataset(data / "train", 4, domain="target")
    write_synthetic_dataset(data / "test", 2, domain="target", start=100)
    bad = tmp_path / "relation.safetensors"
    torch.save({"something": torch.ones(2)}, bad)  # a torch file that holds no relation module
    args = ["train", "--no-progress"]
    for item in [
        "model.name=tiny",
        f"data.path={data}",
        "train.epochs=1",
        "train.cpu=true",
        "eval.last_epochs=0",
    ]:
        args += ["--set", item]
    args += ["--set", f"infosam.frozen_relation={bad}", "--set", f"output={tmp_path / 'run'}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "Traceback" not in err[0], err
    assert not (tmp_path / "run").exists()


def test_two_saves_of_the_same_module_are_byte_identical(tmp_path):
    """safetensors keeps the metadata in a hash map whose order changes from save to save: the relation file's
    two metadata keys came out in either order (two digests for one module). The header's metadata is sorted, the
    file otherwise as safetensors writes it."""
    import json
    import struct

    from safetensors import safe_open

    module = _randomised(8, seed=3)
    paths = [tmp_path / f"relation-{i}.safetensors" for i in range(16)]
    for path in paths:
        module.save(path)
    first = paths[0].read_bytes()
    assert all(p.read_bytes() == first for p in paths[1:])
    (n,) = struct.unpack("<Q", first[:8])
    header = json.loads(first[8 : 8 + n])
    assert list(header) == ["__metadata__", *sorted(module.state_dict())]
    assert list(header["__metadata__"]) == ["dim", "format"] and n % 8 == 0
    with safe_open(str(paths[0]), "pt") as f:
        assert f.metadata()["dim"] == "8"
    for name, value in RelationModule.load(paths[0]).state_dict().items():
        assert torch.equal(value, module.state_dict()[name]), name
