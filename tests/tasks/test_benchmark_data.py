"""The benchmark files shipped for the tests are the public files PROVENANCE.md describes, unchanged."""

import hashlib
import pathlib
from conftest import BENCHMARK_DATA

DATA = BENCHMARK_DATA


def _listed() -> dict[str, str]:
    entries = {}
    for line in (DATA / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        entries[name.strip()] = digest
    return entries


def test_every_data_file_matches_its_listed_sha256():
    listed = _listed()
    present = {str(p.relative_to(DATA)) for p in DATA.rglob("*.jsonl")}
    assert present == set(listed), f"unlisted: {sorted(present - set(listed))}, missing: {sorted(set(listed) - present)}"
    for name, digest in listed.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, name


def test_provenance_names_source_licence_and_hash_of_every_file():
    provenance = (DATA / "PROVENANCE.md").read_text()
    for name, digest in _listed().items():
        if name.startswith("mmlu_redux/"):  # one section for the 57 subject files, a row per file
            assert f"| {pathlib.Path(name).stem} | 100 |" in provenance and digest in provenance, name
        else:
            assert f"`{name}`" in provenance and digest in provenance, name
    assert provenance.count("- License:") >= 8 and provenance.count("- Source:") >= 8
