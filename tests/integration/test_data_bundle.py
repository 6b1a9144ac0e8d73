"""The bundled data is the real UCI file, byte for byte, with its licence."""

import hashlib

from conftest import BUNDLED


def test_bundled_files_are_byte_identical_to_uci():
    md5 = {p: hashlib.md5((BUNDLED / p).read_bytes()).hexdigest() for p in ("adult.data", "adult.names")}
    assert md5 == {"adult.data": "5d7c39d7b8804f071cdd1f2a7c460872", "adult.names": "1a7cdb3ff7a1b709968b1c7a11def63e"}


def test_the_tutorials_csv_is_bundled_as_it_was_published():
    data = (BUNDLED / "adult.csv").read_bytes()
    assert hashlib.sha256(data).hexdigest() == "250e154ed75714ae57a564926d66c6319cd6aac1bcd32774cc76841a88d74e53"
    assert data.count(b"\n") == 32562 and "adult.csv" in (BUNDLED / "README.md").read_text()


def test_licence_and_citation_are_bundled():
    text = (BUNDLED / "README.md").read_text()
    assert "CC BY 4.0" in text and "10.24432/C5XW20" in text and "Becker" in text and "Kohavi" in text
