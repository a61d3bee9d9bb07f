#!/usr/bin/env bash
# Installs grove into .venv (created if missing) with the tested versions in constraints.txt.
#   bash scripts/install.sh              grove and its runtime dependencies
#   bash scripts/install.sh deploy,serve plus those optional extras (deploy: export and the ONNX runtime;
#                                        serve: the HTTP server; explain: explanations;
#                                        privacy: differentially private training and audits)
#   bash scripts/install.sh test         plus the test tools, every optional extra and the test resources
# Torch: a torch already in .venv is kept (on a GPU machine, install a CUDA build there first, see
# README); otherwise the pinned version is installed first, so no dependency can pull another
# build. GROVE_TORCH_INDEX=<index url> picks the index it comes from (e.g. PyTorch's CPU index).
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
py=.venv/bin/python
pip_install() { "$py" -m pip install --quiet --disable-pip-version-check "$@"; }

if ! "$py" -c "import torch" 2>/dev/null; then
  torch_version=$(grep -E '^torch==' constraints.txt | cut -d= -f3)
  pip_install "torch==${torch_version}" ${GROVE_TORCH_INDEX:+--index-url "$GROVE_TORCH_INDEX"}
fi

if [ "$extra" = "test" ]; then
  pip_install -c constraints.txt -e ".[test,deploy,serve,explain,privacy]"
  [ -f scripts/install-system-deps.sh ] && bash scripts/install-system-deps.sh
elif [ -n "$extra" ]; then
  pip_install -c constraints.txt -e ".[$extra]"
else
  pip_install -c constraints.txt -e .
fi
"$py" -c "import grove, torch; print(f'grove {grove.__version__} with torch {torch.__version__} ready in .venv')"
