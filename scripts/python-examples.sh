#!/usr/bin/env bash
# Runs the Python gRPC examples (examples/python/) against a running Keel broker and checks them:
# producer.py writes COUNT records to TOPIC, consumer.py reads TOPIC from the beginning, and the
# consumer must print exactly the records (partition, offset, key, value) the producer had
# acknowledged. TOPIC must exist and be empty. The integration test t14_python calls this.
#
# Usage: scripts/python-examples.sh BOOTSTRAP TOPIC [COUNT]
#
# Sets up a virtualenv with examples/python/requirements.txt first (once: again only when the
# requirements change), at $KEEL_PYENV or ${CARGO_TARGET_DIR:-target}/pyenv, installing
# python3-venv with apt-get when `python3 -m venv` cannot work (a fresh Debian 12), and
# regenerates the stubs from proto/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [ $# -lt 2 ]; then
  echo "usage: $0 BOOTSTRAP TOPIC [COUNT]" >&2
  exit 2
fi
bootstrap=$1 topic=$2 count=${3:-200}
ex=examples/python
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$root/$target ;; esac
venv=${KEEL_PYENV:-$target/pyenv}

# Runs that share the venv (parallel tests, say) take turns: one sets it up, the others reuse it.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9

setup_venv() {
  local stamp=$venv/keel-requirements.txt
  if [ -x "$venv/bin/python" ] && cmp -s "$ex/requirements.txt" "$stamp"; then
    return
  fi
  # Debian's python3 lacks ensurepip (so venv cannot install pip) until python3-venv is there.
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    echo "python-examples: installing python3 and python3-venv" >&2
    local sudo_cmd=()
    [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  echo "python-examples: creating $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$ex/requirements.txt"
  # Written last: an interrupted set-up is redone next time.
  cp "$ex/requirements.txt" "$stamp"
}

setup_venv
py=$venv/bin/python
"$py" "$ex/gen.py"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "python-examples: producing $count records to $topic at $bootstrap" >&2
"$py" "$ex/producer.py" --bootstrap "$bootstrap" --topic "$topic" --count "$count" >"$out/produced"
echo "python-examples: consuming them back" >&2
"$py" "$ex/consumer.py" --bootstrap "$bootstrap" --topic "$topic" --count "$count" --timeout 30 >"$out/consumed"

# The consumer prints partitions interleaved and the producer in acknowledgement order; within
# a partition both are in offset order. Compare as sorted sets, and check the counts.
sort "$out/produced" >"$out/produced.sorted"
sort "$out/consumed" >"$out/consumed.sorted"
produced=$(wc -l <"$out/produced")
if [ "$produced" -ne "$count" ]; then
  echo "python-examples: FAILED: the producer acknowledged $produced records, not $count" >&2
  exit 1
fi
if ! diff -u --label produced --label consumed "$out/produced.sorted" "$out/consumed.sorted" >"$out/diff"; then
  echo "python-examples: FAILED: the consumer did not read back what the producer wrote:" >&2
  head -n 40 "$out/diff" >&2
  exit 1
fi
partitions=$(cut -f1 "$out/consumed" | sort -u | wc -l)
echo "python-examples: ok: $count records over $partitions partitions read back exactly" >&2
