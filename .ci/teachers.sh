#!/usr/bin/env bash
# CI: the timm/torchvision extras for real, in a second virtual environment created fresh (.venv-tv): torch 2.14.1,
# the torchvision release made for it (0.29.1) and timm, then onebit with its test extra, then every test marked
# `external` (teachers by spec in a BNext recipe step: timm:NAME, torchvision:NAME, NAME@FILE; onebit's float
# ResNet-18/34 against torchvision's; torchvision-based preprocessing checks). The default environment (.venv: torch
# 2.13.0, neither timm nor torchvision) skips these tests, so this job is where they run.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-tv
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q torch==2.14.1 torchvision==0.29.1 timm
"$venv/bin/pip" install -q -e ".[test]"
# both libraries must import here: otherwise every external test would be skipped and the job pass vacuously
"$venv/bin/python" -c "import timm, torchvision; print('timm', timm.__version__, 'torchvision', torchvision.__version__)"
"$venv/bin/python" -m pytest -q -m external tests
