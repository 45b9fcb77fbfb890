"""``metaembed index stats|verify|compact`` on a small index."""

from __future__ import annotations

import json

import numpy as np

from metaembed.index.multivector import MultiVectorIndex
from metaembed_cli.main import main


def test_stats_verify_compact(tmp_path, corpus, capsys):
    candidates, _ = corpus
    folder = tmp_path / "idx"
    with MultiVectorIndex.create(folder, dim=16, num_vectors=8) as index:
        index.add(np.arange(20), candidates[:20])
        index.add(np.arange(20, 25), candidates[20:25])
        index.delete([3])
    assert main(["index", "stats", str(folder)]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["num_candidates"] == 24 and stats["dtype"] == "float16"
    assert main(["index", "verify", str(folder)]) == 0
    assert "checksums match" in capsys.readouterr().out
    assert main(["index", "compact", str(folder)]) == 0
    assert "into 1" in capsys.readouterr().out
    tier = next(p for p in folder.iterdir() if p.name.endswith(".t1"))
    data = bytearray(tier.read_bytes())
    data[5] ^= 1
    tier.write_bytes(bytes(data))
    assert main(["index", "verify", str(folder)]) == 1
    assert "CRC-32" in capsys.readouterr().err
