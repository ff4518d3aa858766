#!/usr/bin/env bash
# Download, where pip can reach PyPI, the wheels the GPU machine lacks into .gpu-wheels/ (git-ignored), for
# its Python 3.12; benchmarks/gpu_check.sh installs them there into a scratch folder on PYTHONPATH.
#
#   bash benchmarks/gpu_wheels.sh            # then carry .gpu-wheels with the working tree
#
# The machine has torch (CUDA), numpy, scipy, matplotlib, pillow, tensorboard, tqdm, pyyaml, packaging,
# typing-extensions, einops and pytest, and no network. selfmedmae's runtime dependencies it lacks (pyproject.toml):
# monai, nibabel, omegaconf (and, for omegaconf releases that need it, antlr4-python3-runtime, which PyPI has
# only as an sdist: built here into a py3-none-any wheel); einops (the bench extra) is carried too, pinned,
# so that MONAI's blocks import the same version everywhere. selfmedmae itself runs from the working tree
# (PYTHONPATH=src). Versions: the ones pinned below, or PY_VERSION / WHEELS / *_VERSION from the environment.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
DEST=${WHEELS:-$REPO/.gpu-wheels}
PY_VERSION=${PY_VERSION:-3.12}
MONAI_VERSION=${MONAI_VERSION:-1.6.1}
NIBABEL_VERSION=${NIBABEL_VERSION:-5.4.2}
OMEGACONF_VERSION=${OMEGACONF_VERSION:-2.4.0}
EINOPS_VERSION=${EINOPS_VERSION:-0.8.2}
ANTLR_VERSION=${ANTLR_VERSION:-4.9.3}

mkdir -p "$DEST"
rm -f "$DEST"/*.whl  # one version of each: two of one package would stop the install
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation py \
  --implementation cp --abi none --platform any -d "$DEST" \
  "monai==$MONAI_VERSION" "nibabel==$NIBABEL_VERSION" "omegaconf==$OMEGACONF_VERSION" "einops==$EINOPS_VERSION"

# omegaconf 2.3 and older need antlr4-python3-runtime 4.9.*; newer releases do not
if unzip -p "$DEST"/omegaconf-*.whl '*/METADATA' | grep -qi '^Requires-Dist: antlr4-python3-runtime'; then
  "$PY" -m pip wheel -q --no-deps "antlr4-python3-runtime==$ANTLR_VERSION" -w "$DEST"
fi

echo "wheels in $DEST:"
ls -l "$DEST"/*.whl | awk '{ printf "  %8.1f KiB  %s\n", $5 / 1024, $NF }'
for w in "$DEST"/*.whl; do
  needs=$(unzip -p "$w" '*/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' | sed 's/^Requires-Dist: //' | paste -sd ';' - || true)
  echo "  $(basename "$w") requires: ${needs:-nothing}"
done
echo "total: $(du -ck "$DEST"/*.whl | tail -1 | cut -f1) KiB (the working tree that travels is limited to 64 MiB)"
