"""``flagstaff node`` refuses inconsistent TLS flags at start, naming the flag (exit 2).

The command line is run in-process (``consensus.cli.main``): it refuses before
starting anything, so no process is needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.cli import main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen-client-urls", "https://127.0.0.1:1"],
         "--listen-client-urls https://127.0.0.1:1 is https: --cert-file and --key-file are required"),
        (["--listen-metrics-urls", "https://127.0.0.1:1"],
         "--listen-metrics-urls https://127.0.0.1:1 is https: --cert-file and --key-file are required"),
        (["--listen-peer-urls", "https://127.0.0.1:1", "--initial-advertise-peer-urls",
          "https://127.0.0.1:1"],
         "--listen-peer-urls https://127.0.0.1:1 is https: --peer-cert-file and --peer-key-file are required"),
        (["--cert-file", "{cert}"], "--cert-file and --key-file go together"),
        (["--client-cert-auth"], "--client-cert-auth needs --trusted-ca-file"),
        (["--peer-client-cert-auth"], "--peer-client-cert-auth needs --peer-trusted-ca-file"),
        (["--peer-cert-file", "{missing}", "--peer-key-file", "{cert}"],
         "--peer-cert-file: no such file"),
        (["--client-cert-auth=maybe"], "invalid boolean 'maybe' for --client-cert-auth"),
    ],
)
def test_bad_tls_flags_exit_2_naming_the_flag(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("")
    argv = [a.format(cert=cert, missing=tmp_path / "missing.pem") for a in args]
    try:
        code = main(["node", "--name", "m1", "--data-dir", str(tmp_path / "data"), *argv])
    except SystemExit as exc:  # argparse's own refusals
        code = int(str(exc.code))
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # refused before touching the data dir
