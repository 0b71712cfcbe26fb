"""File sources through the SDK: paged listing, whole and ranged reads, downloads with progress, against a live
keyrelay serving a local directory; a cut-off download against a scripted peer."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from keyrelay_client import ConnectionFailed, FileInfo, Forbidden, NotFound, RangeNotSatisfiable, UsageError
from support.keyrelay import Admin, KeyrelayServer
from support.scripted import Reply, ScriptedServer

FILES = {"reports/q1.csv": b"a,b\n1,2\n", "reports/q2.csv": b"a,b\n3,4\n", "reports/2024/annual report.pdf":
         bytes(range(256)) * 400, "notes/ünïcode.txt": "grüße".encode(), "readme.md": b"# hi\n"}


@pytest.fixture
def local(raw: Admin, workspace: dict[str, str], files_root: Path) -> dict[str, Any]:
    root = files_root / uuid.uuid4().hex
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return raw.source(workspace["id"], upstream_url="", connector="local", slug="docs", config={"root": str(root)})


@pytest.fixture
def reader(connect: Any, server: KeyrelayServer, raw: Admin, workspace: dict[str, str]) -> Any:
    return connect(server.url, api_key=raw.api_key(workspace["id"], ["files"]))


def test_list_walks_every_page(reader: Any, local: dict[str, Any]) -> None:
    listing = reader.files.list(local["id"], page_size=2)
    found = list(listing)
    assert sorted(f.path for f in found) == sorted(FILES)
    assert all(isinstance(f, FileInfo) and f.size == len(FILES[f.path]) for f in found)
    assert len(list(listing.pages())) == 3


def test_list_under_a_prefix(reader: Any, local: dict[str, Any]) -> None:
    assert sorted(f.path for f in reader.files.list(local["id"], "reports/")) == sorted(
        p for p in FILES if p.startswith("reports/"))
    assert [f.path for f in reader.files.list(local["id"], "reports/2024/")] == ["reports/2024/annual report.pdf"]


def test_read_whole_and_by_range(reader: Any, local: dict[str, Any]) -> None:
    pdf = FILES["reports/2024/annual report.pdf"]
    assert reader.files.read(local["id"], "reports/2024/annual report.pdf") == pdf
    assert reader.files.read(local["id"], "reports/2024/annual report.pdf", range=(10, 19)) == pdf[10:20]
    assert reader.files.read(local["id"], "reports/2024/annual report.pdf", range=(len(pdf) - 5, None)) == pdf[-5:]
    assert reader.files.read(local["id"], "notes/ünïcode.txt") == "grüße".encode()
    with pytest.raises(RangeNotSatisfiable):
        reader.files.read(local["id"], "readme.md", range=(1000, 2000))
    with pytest.raises(UsageError):
        reader.files.read(local["id"], "readme.md", range=(5, 1))
    with pytest.raises(NotFound):
        reader.files.read(local["id"], "reports/missing.csv")


def test_download_streams_to_disk_with_progress(reader: Any, local: dict[str, Any], tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    target = reader.files.download(local["id"], "reports/2024/annual report.pdf", tmp_path / "out.pdf",
                                   progress=lambda done, total: seen.append((done, total)))
    data = FILES["reports/2024/annual report.pdf"]
    assert target == tmp_path / "out.pdf" and target.read_bytes() == data
    assert seen[-1] == (len(data), len(data))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    into_dir = reader.files.download(local["id"], "reports/q1.csv", tmp_path)
    assert into_dir == tmp_path / "q1.csv" and into_dir.read_bytes() == FILES["reports/q1.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pdf", "q1.csv"]  # no temporary file left


def test_a_failed_download_leaves_nothing(reader: Any, local: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        reader.files.download(local["id"], "reports/missing.csv", tmp_path / "x.csv")
    assert list(tmp_path.iterdir()) == []


def test_a_download_cut_short_leaves_nothing(connect: Any, scripted: ScriptedServer, tmp_path: Path) -> None:
    route = "/api/v1/sonar/files/src-1/get/big.bin"
    scripted.on("GET", route, Reply(200, body=b"z" * 50_000, cut=1000))
    with pytest.raises(ConnectionFailed):
        connect(scripted.url, token="krw_t").files.download("src-1", "big.bin", tmp_path / "big.bin")
    assert list(tmp_path.iterdir()) == []
    assert len(scripted.seen("GET", route)) == 1  # bytes had arrived: not repeated


def test_files_need_the_files_scope(connect: Any, server: KeyrelayServer, raw: Admin, workspace: dict[str, str],
                                    local: dict[str, Any]) -> None:
    proxy_only = connect(server.url, api_key=raw.api_key(workspace["id"], ["proxy"]))
    with pytest.raises(Forbidden):
        proxy_only.files.read(local["id"], "readme.md")
