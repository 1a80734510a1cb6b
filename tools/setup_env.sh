#!/usr/bin/env bash
# Create the virtual environment with the verified stack (docs/install.md). Usage: tools/setup_env.sh [VENV]
#
# CPU machine: torch 2.13.0 (CPU build) + fbgemm-gpu-cpu 1.8.0 + torchrec 1.8.0.
# CUDA machine: the CUDA build of fbgemm-gpu matched to the torch already installed there (reused through
# --system-site-packages), or torch 2.13.0 + fbgemm-gpu 1.8.0 when there is none.
# torchrec always goes in with --no-deps: its metadata pulls the 465 MB CUDA fbgemm-gpu even on CPU.
set -euo pipefail
VENV=${1:-.venv}
PY=${PYTHON:-python3}

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then cuda=1; else cuda=0; fi

if [ "$cuda" = 1 ] && "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m venv --system-site-packages "$VENV"
else
  "$PY" -m venv "$VENV"
fi
pip="$VENV/bin/python -m pip"
$pip install -q --upgrade pip

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  $pip install -q torch==2.13.0
fi
tv=$("$VENV/bin/python" -c "import torch; print(torch.__version__.split('+')[0])")
case "$tv" in
  2.11.*) fbgemm=1.6.0; torchrec=1.6.1 ;;
  2.12.*) fbgemm=1.7.0; torchrec=1.7.0 ;;
  2.13.*) fbgemm=1.8.0; torchrec=1.8.0 ;;
  *) echo "setup_env: torch $tv has no verified fbgemm-gpu/torchrec pair (see docs/install.md)" >&2; exit 1 ;;
esac
if [ "$cuda" = 1 ]; then fb_pkg=fbgemm-gpu; else fb_pkg=fbgemm-gpu-cpu; fi
echo "setup_env: torch $tv, $fb_pkg $fbgemm, torchrec $torchrec (cuda=$cuda)"
$pip install -q "$fb_pkg==$fbgemm"
$pip install -q --no-deps "torchrec==$torchrec"
$pip install -q -e ".[test]"
"$VENV/bin/python" -c "import torchrec, fbgemm_gpu, tinrec.modules; print('setup_env: ok')"
