#!/usr/bin/env python
"""Django's command-line utility for the Flagstaff platform.

`platform/` is a folder, not a package (a top-level `platform` package would
shadow the standard library's `platform` module), so it is put on sys.path
here and the project package inside it is `flagstaff_platform`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent / "platform"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flagstaff_platform.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
