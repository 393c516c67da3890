"""devstack formats the broker's storage with a random cluster id; one that starts with '-' is
read by StorageTool as an option and the broker never starts (seen in bench and test runs)."""

from __future__ import annotations

import uuid

import pytest

from devstack import kafka


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xfb... encodes to "-..." in URL-safe base64; the second draw does not
    draws = iter([uuid.UUID(bytes=b"\xfb" + b"\x00" * 15), uuid.UUID(int=1)])
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: next(draws))
    cluster_id = kafka._cluster_id()
    assert not cluster_id.startswith("-")
    assert cluster_id == "AAAAAAAAAAAAAAAAAAAAAQ"
