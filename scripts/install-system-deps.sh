#!/usr/bin/env bash
# System packages grove's speech data needs: espeak-ng (the offline spoken_words and
# spoken_digit_sequences data sets) and libsndfile (audio files, when the soundfile wheel does
# not bundle it); and Debian's chromium, the browser the demo page's tests drive through
# playwright (tests/serve/test_demo.py). Installs only what is missing; safe to run again.
#   bash scripts/install-system-deps.sh
set -euo pipefail

missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# soundfile's wheels bundle libsndfile on x86_64/arm64 Linux, macOS and Windows; elsewhere it
# loads the system library.
repo="$(cd "$(dirname "$0")/.." && pwd)"
python_bin="$repo/.venv/bin/python"
[ -x "$python_bin" ] || python_bin="$(command -v python3 || command -v python || true)"
if [ -z "$python_bin" ] || ! "$python_bin" -c "import soundfile" >/dev/null 2>&1; then
    libs="$(ldconfig -p 2>/dev/null || true)"  # captured first: grep -q would cut the pipe short
    case "$libs" in
        *libsndfile.so*) ;;
        *) missing+=(libsndfile1) ;;
    esac
fi

if [ "${#missing[@]}" -eq 0 ]; then
    echo "system dependencies present: espeak-ng, libsndfile"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "skipped: no apt-get here; install ${missing[*]} with your package manager" >&2
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "skipped: installing ${missing[*]} needs root; run: sudo bash $0" >&2
    exit 0
fi

echo "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed ${missing[*]}"
