"""An unusable TLS file stops the uplink with an error that names the file and the fix
(a newcomer running an example config met "[Errno 2] No such file or directory" alone)."""

from __future__ import annotations

from pathlib import Path

import pytest
from liftwatch.agent.settings import UplinkSettings
from liftwatch.agent.tls import UplinkError, make_tls_context


def test_a_missing_ca_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "tls" / "ca.pem"
    with pytest.raises(UplinkError) as ei:
        make_tls_context(UplinkSettings(broker="x", ca_file=str(missing)))
    text = str(ei.value)
    assert f"uplink.ca_file '{missing}'" in text
    assert "INSTALL.md" in text and "point the config at it" in text


def test_an_unusable_client_certificate_names_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "client.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(UplinkError) as ei:
        make_tls_context(UplinkSettings(broker="x", cert_file=str(bad), key_file=str(bad)))
    assert "INSTALL.md" in str(ei.value) and "not a certificate" not in str(ei.value)
